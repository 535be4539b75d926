#!/usr/bin/env bash
# tests/packaging/unit-exec.sh UNIT_FILE: run a service's ExecStart= the way systemd would
# run it, on a machine where systemd is not PID 1 (a container, CI). Execs, so the caller's
# $! is the service's main process.
#
# What it applies from the unit's [Service] section, as systemd does:
#   ExecStart=                the exact command line (plain words, no prefixes)
#   User=, Group=             uid, gid and the user's groups; HOME, USER, LOGNAME, SHELL
#   CapabilityBoundingSet=    the bounding set (the process keeps no capability outside it)
#   NoNewPrivileges=yes       no_new_privs
#   ProtectSystem=strict      every mount read-only but /proc, /sys and /dev, in a mount
#                             namespace of the service's own
#   ReadWritePaths=           those paths writable again
#   ProtectHome=yes           /home, /root and /run/user empty and inaccessible
#   PrivateTmp=yes            a /tmp and /var/tmp of the service's own
#   UMask=                    the umask
# and a clean environment (PATH only), / as the working directory, stdin from /dev/null.
# Anything else the unit sets (seccomp filters, Protect* of the kernel, Delegate=, Restart=)
# is not emulated: it takes systemd. A setting this script does not know of is listed on
# stderr, so that a unit that grows one is seen.
set -euo pipefail

unit=$1
[ -r "$unit" ] || { echo "unit-exec: cannot read $unit" >&2; exit 1; }

exec_start= user= group= caps=all nnp=no protect_system=no protect_home=no private_tmp=no umask=0022
rw_paths=()
section=
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    case $line in '' | '#'* | ';'*) continue ;; '['*']') section=$line; continue ;; esac
    [ "$section" = "[Service]" ] || continue
    key=${line%%=*} value=${line#*=}
    case $key in
    ExecStart) exec_start=$value ;;
    User) user=$value ;;
    Group) group=$value ;;
    CapabilityBoundingSet)
        # Several lines add up; an empty one resets to nothing.
        if [ -z "$value" ]; then caps=; elif [ "$caps" = all ]; then caps=$value; else caps="$caps $value"; fi ;;
    NoNewPrivileges) nnp=$value ;;
    ProtectSystem) protect_system=$value ;;
    ReadWritePaths) read -ra more <<<"$value"; rw_paths+=("${more[@]}") ;;
    ProtectHome) protect_home=$value ;;
    PrivateTmp) private_tmp=$value ;;
    UMask) umask=$value ;;
    Type | Restart | RestartSec | TimeoutStopSec | KillMode | Delegate | LimitNOFILE) ;;
    *) echo "unit-exec: $key= is not emulated" >&2 ;;
    esac
done <"$unit"
[ -n "$exec_start" ] || { echo "unit-exec: $unit has no ExecStart=" >&2; exit 1; }
case $exec_start in [-@+!:]*) echo "unit-exec: ExecStart= prefixes are not emulated" >&2; exit 1 ;; esac
[ "$protect_system" = strict ] || [ "$protect_system" = no ] ||
    { echo "unit-exec: ProtectSystem=$protect_system is not emulated" >&2; exit 1; }

# setpriv's spelling of the bounding set: -all,+setuid,+chown...
bset=-all
if [ "$caps" = all ]; then
    bset=+all
else
    for c in $caps; do
        c=${c,,}
        bset="$bset,+${c#cap_}"
    done
fi
setpriv=(setpriv --bounding-set "$bset" --inh-caps -all)
[ "$nnp" = yes ] && setpriv+=(--no-new-privs)
env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
if [ -n "$user" ] && [ "$user" != root ]; then
    home=$(getent passwd "$user" | cut -d: -f6)
    shell=$(getent passwd "$user" | cut -d: -f7)
    setpriv+=(--reuid "$user" --regid "${group:-$user}" --init-groups)
    env+=(HOME="$home" USER="$user" LOGNAME="$user" SHELL="$shell")
fi
read -ra cmd <<<"$exec_start"

# The mounts, in a mount namespace that nothing propagates out of: read-only first, then
# what is writable or hidden on top.
setup='set -e
'
if [ "$protect_system" = strict ]; then
    setup+='awk '\''{print $5}'\'' /proc/self/mountinfo | sort -u | while read -r mp; do
    mp=$(printf "%b" "$mp")
    case $mp in /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;; esac
    mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
'
fi
for p in "${rw_paths[@]}"; do
    setup+="mount --bind '$p' '$p'; mount -o remount,bind,rw '$p'
"
done
if [ "$private_tmp" = yes ]; then
    setup+='for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
'
fi
if [ "$protect_home" = yes ]; then
    setup+='for d in /home /root /run/user; do [ -d "$d" ] && mount -t tmpfs -o ro,mode=000 tmpfs "$d"; done; true
'
fi
setup+='cd /
umask '"$umask"'
exec "$@"
'
exec unshare --mount --propagation private -- /bin/sh -c "$setup" unit-exec \
    env -i "${env[@]}" "${setpriv[@]}" -- "${cmd[@]}" </dev/null
