#!/usr/bin/env bash
# tests/packaging/test-deb-systemd.sh [DEBDIR]: the Debian packages under a real systemd, on a
# machine where systemd is not PID 1 (a container, CI): a clean Debian root (debootstrap,
# kept in a cache between runs, used through an overlay so that every run starts clean) is
# booted with systemd as PID 1 of its own PID, mount, cgroup, UTS and IPC namespaces, in a
# cgroup v2 subtree of this test's. The packages are installed there with dpkg and used
# with systemctl as docs/install.md says: the units' hardening, Delegate=, KillMode=,
# ConditionPathExists=, the postinst's try-restart on upgrade and the prerm's stop on
# remove all run for real. PostgreSQL and RabbitMQ run on this machine (tools/lib.sh); the
# container shares its network, so orchd and the agent inside reach them on loopback.
#
# Skipped (exit 0, "result: 0 passed, 0 failed") where systemd is PID 1 (test-deb.sh uses it
# there), or without debootstrap, a writable cgroup v2 or the Debian mirror; the reason is
# printed. Builds the .debs unless DEBDIR holds them. Nothing of it is left on the machine
# but the root cache.
#
# Environment: ORCH_SKIP_APT=1 (do not apt-get the build tools), ORCH_DEB_ROOT_CACHE (the
# cached root, default /var/cache/orch-test/deb-systemd-root), ORCH_DEB_MIRROR (default
# http://deb.debian.org/debian), ORCH_DEB_KEEP=1 (keep the work directory).
source "$(dirname "$0")/../../tools/lib.sh"
set +e # the checks count failures and go on; every step that the next depend on is fatal
source "$(dirname "$0")/deb-lib.sh"

[ "$(id -u)" = 0 ] || die "test-deb-systemd.sh needs root"
t_start=$SECONDS
skip() {
    say "test-deb-systemd: skipped: $*"
    echo "result: 0 passed, 0 failed"
    exit 0
}
[ -d /run/systemd/system ] && skip "systemd is PID 1 here: test-deb.sh runs the units under it"
for c in debootstrap unshare nsenter; do
    command -v $c >/dev/null || skip "$c is missing"
done

work=$(mktemp -d /var/tmp/orch-test-deb-systemd.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/share" "$work/upper" "$work/ovwork" "$work/root"
pid1= unshare_pid= cg=
cleanup() {
    local rc=$?
    # The container's PID 1 takes every process of its namespace with it.
    [ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null
    [ -n "$unshare_pid" ] && wait "$unshare_pid" 2>/dev/null
    [ -n "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    orch_services_stop
    [ "${ORCH_DEB_KEEP:-0}" = 1 ] && echo "work directory kept: $work" || rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A cgroup v2 directory of our own, that will be the container's root cgroup.
cg_mnt=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
cg_self=$(sed -n 's/^0:://p' /proc/self/cgroup)
[ -n "$cg_mnt" ] || skip "no cgroup v2 mount"
cg=$cg_mnt${cg_self%/}/orch-test-deb-systemd.$$
mkdir "$cg" 2>/dev/null || { cg=; skip "cannot make a cgroup under $cg_mnt$cg_self"; }

# --- the packages --------------------------------------------------------------------------
debdir=${1:-}
if [ -z "$debdir" ]; then
    debdir=$work/out
    say "building the packages (tools/package.sh deb)"
    deb_build "$debdir" "$work/package.log" || fatal "tools/package.sh deb"
    ok "tools/package.sh deb built the packages ($((SECONDS - t_start)) s)"
fi
deb_find "$debdir" || fatal "no orch-agent_*.deb and orchd_*.deb in $debdir"
cp "$agent_deb" "$orchd_deb" "$work/share/"
version=$(dpkg-deb -f "$agent_deb" Version)
new_version=$version+upgradetest1
deb_repack "$agent_deb" "$new_version" "$work/share" && deb_repack "$orchd_deb" "$new_version" "$work/share" ||
    fatal "repack the packages at $new_version"

# --- the root: debootstrap once, then an overlay per run -------------------------------------
. /etc/os-release
cache=${ORCH_DEB_ROOT_CACHE:-/var/cache/orch-test/deb-systemd-root}
# systemd, and what the packages depend on (their Depends: without versions).
include=systemd,systemd-sysv,dbus,procps,ca-certificates,adduser
for d in "$agent_deb" "$orchd_deb"; do
    include="$include,$(dpkg-deb -f "$d" Depends | sed -E 's/ *\([^)]*\)//g; s/ *\|[^,]*//g; s/ //g')"
done
include=$(tr ',' '\n' <<<"$include" | sort -u | paste -sd, -)
stamp="$VERSION_CODENAME $include"
if [ "$(cat "$cache.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "debootstrap $VERSION_CODENAME into $cache (once; kept for later runs)"
    rm -rf "$cache" "$cache.new" "$cache.stamp"
    mkdir -p "$(dirname "$cache")"
    if ! debootstrap --variant=minbase --include="$include" "$VERSION_CODENAME" "$cache.new" \
        "${ORCH_DEB_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1; then
        tail -5 "$work/debootstrap.log"
        rm -rf "$cache.new"
        skip "debootstrap failed (no mirror?)"
    fi
    mv "$cache.new" "$cache" && echo "$stamp" >"$cache.stamp"
fi
ok "a clean $VERSION_CODENAME root ($((SECONDS - t_start)) s so far)"

# PID 1 of the container: an overlay of the cached root, the API file systems, /share (this
# test's files), pivot_root, systemd. Everything is mounted in the container's own mount
# namespace, which propagates nothing back.
cat >"$work/boot.sh" <<EOF
#!/bin/sh
set -e
R=$work/root
mount -t overlay overlay -o lowerdir=$cache,upperdir=$work/upper,workdir=$work/ovwork \$R
mount -t proc proc \$R/proc
mount -t sysfs -o ro sysfs \$R/sys
mount -t cgroup2 cgroup2 \$R/sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs \$R/dev
for d in null zero full random urandom tty; do touch \$R/dev/\$d; mount --bind /dev/\$d \$R/dev/\$d; done
mkdir -p \$R/dev/pts \$R/dev/shm \$R/share
mount -t devpts -o newinstance,ptmxmode=0666 devpts \$R/dev/pts
ln -sf pts/ptmx \$R/dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs \$R/dev/shm
mount -t tmpfs -o mode=755 tmpfs \$R/run
mount -t tmpfs -o mode=1777 tmpfs \$R/tmp
mount --bind $work/share \$R/share
cd \$R
mkdir -p oldroot
pivot_root . oldroot
exec env -i container=orch-test PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c 'umount -l /oldroot; rmdir /oldroot; exec /lib/systemd/systemd'
EOF
chmod +x "$work/boot.sh"

ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir "test-deb-systemd-$$")"
trap cleanup EXIT # orch_services_start set its own; cleanup stops the services too

say "booting systemd in a container"
setsid sh -c "echo \$\$ >'$cg/cgroup.procs' && exec unshare --pid --fork --mount --cgroup --uts --ipc \
    --propagation private '$work/boot.sh'" >"$work/boot.log" 2>&1 &
unshare_pid=$!
orch_wait_for 10 pgrep -P $unshare_pid || { cat "$work/boot.log"; fatal "the container did not start"; }
pid1=$(pgrep -P $unshare_pid | head -1)
in_ct() { nsenter -t "$pid1" -m -p -u -i -C -- "$@"; }
T=(in_ct)
booted() { case $(in_ct systemctl is-system-running 2>/dev/null) in running | degraded) return 0 ;; esac; return 1; }
orch_wait_for 60 booted || { cat "$work/boot.log"; fatal "systemd did not boot in the container"; }
ok "systemd $(in_ct systemctl --version | head -1 | cut -d' ' -f2) is PID 1 in the container ($(in_ct systemctl is-system-running))"
mode() { in_ct stat -c '%a %U:%G' "$1" 2>/dev/null; }
ct_privs() { in_ct cat "/proc/$(in_ct systemctl show -p MainPID --value "$1.service")/status" | privs proc; }
unit_privs() { in_ct cat "/lib/systemd/system/$1.service" | privs unit; }

# --- install, with systemd running ------------------------------------------------------------
say "installing $(basename "$orchd_deb") $(basename "$agent_deb")"
in_ct dpkg -i "/share/$(basename "$orchd_deb")" "/share/$(basename "$agent_deb")" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fatal "dpkg -i of the packages"; }
ok "dpkg -i of orchd and orch-agent"
check "the install prints no token or credential" bash -c "! grep -qE 'orch_(et|ag|op|ak)_' '$work/install.log'"
eq "neither unit enabled by the install" "$(in_ct systemctl is-enabled orchd orch-agent | tr '\n' ' ')" "disabled disabled "
eq "neither unit started by the install" "$(in_ct systemctl is-active orchd orch-agent | tr '\n' ' ')" "inactive inactive "
eq "/var/lib/orch-agent mode" "$(mode /var/lib/orch-agent)" "711 root:root"
eq "/etc/orch/orchd.conf mode" "$(mode /etc/orch/orchd.conf)" "640 root:orchd"
eq "orch-job user (home, shell)" "$(in_ct getent passwd orch-job | cut -d: -f6,7)" "/nonexistent:/usr/sbin/nologin"
in_ct systemctl enable --now orch-agent >/dev/null 2>&1
eq "an unenrolled agent does not start (ConditionPathExists=)" \
    "$(in_ct systemctl is-active orch-agent)/$(in_ct systemctl show -p ConditionResult --value orch-agent)" "inactive/no"

# --- orchd, as docs/install.md says ------------------------------------------------------------
say "configuring and starting orchd"
port=$(orch_free_port)
"$ORCH_ROOT/tools/gen-certs.sh" "$work/share/tls" >/dev/null
in_ct install -d -m 0750 -g orchd /etc/orch/tls
in_ct install -m 0644 /share/tls/server.pem /etc/orch/tls/server.pem
in_ct install -m 0640 -g orchd /share/tls/server.key /etc/orch/tls/server.key
conf=/etc/orch/orchd.conf
conf_set $conf db.url "$ORCH_PG_APP_URL"
conf_set $conf db.system_url "$ORCH_PG_SYSTEM_URL"
conf_set $conf amqp.url "$ORCH_AMQP_URL"
conf_set $conf http.port "$port"
conf_set $conf http.cert_file /etc/orch/tls/server.pem
conf_set $conf http.key_file /etc/orch/tls/server.key
check "orchd check-config" in_ct orchd --config $conf check-config
in_ct env ORCHD_DB_MIGRATE_URL="$ORCH_PG_OWNER_URL" orchd --config $conf migrate >"$work/migrate.log" 2>&1 ||
    { cat "$work/migrate.log"; fatal "orchd migrate"; }
ok "orchd migrate"
in_ct runuser -u orchd -- orchd --config $conf admin gen-key >/dev/null || fatal "orchd admin gen-key as orchd"
in_ct systemctl enable --now orchd >/dev/null 2>&1
base=https://127.0.0.1:$port
ca=$work/share/tls/ca.pem
orch_wait_for 30 curl -sf --cacert "$ca" "$base/readyz" ||
    { in_ct journalctl -u orchd --no-pager | tail -20; fatal "orchd.service is not ready"; }
ok "orchd.service is ready on $base"
orchd_status=$(in_ct cat "/proc/$(in_ct systemctl show -p MainPID --value orchd.service)/status")
eq "orchd.service runs as orchd" "$(awk '/^Uid:/ {print $2}' <<<"$orchd_status")" "$(in_ct id -u orchd)"
eq "orchd.service's bounding set and no_new_privs" "$(privs proc <<<"$orchd_status")" "$(unit_privs orchd)"
eq "orchd.service's seccomp filter" "$(awk '/^Seccomp:/ {print $2}' <<<"$orchd_status")" 2
operator=$(in_ct runuser -u orchd -- orchd --config $conf admin create-token "test-deb-systemd" 2>/dev/null) ||
    fatal "orchd admin create-token"
deb_tenant "$operator" debsystemd

# --- the agent ------------------------------------------------------------------------------------
say "enrolling the agent and starting orch-agent.service"
cp "$ca" "$work/share/ca.pem"
in_ct install -m 0644 /share/ca.pem /etc/orch-agent/ca.pem
conf_set /etc/orch-agent/agent.conf server.url "$base"
conf_set /etc/orch-agent/agent.conf server.ca_file /etc/orch-agent/ca.pem
in_ct env ORCH_AGENT_ENROLL_TOKEN="$etok" orch-agent register --slots 2 >"$work/register.log" 2>&1 ||
    { cat "$work/register.log"; fatal "orch-agent register"; }
ok "orch-agent register"
eq "agent.json mode" "$(mode /var/lib/orch-agent/agent.json)" "600 root:root"
json_sum=$(in_ct sha256sum /var/lib/orch-agent/agent.json | cut -c1-64)
in_ct systemctl enable --now orch-agent >/dev/null 2>&1
orch_wait_for 30 agent_online || { in_ct journalctl -u orch-agent --no-pager | tail -20; fatal "the agent did not come online"; }
ok "orch-agent.service is online"
eq "orch-agent.service's bounding set and no_new_privs" "$(ct_privs orch-agent)" "$(unit_privs orch-agent)"
check "jobs get cgroups under the service's (Delegate=yes)" bash -c \
    "nsenter -t $pid1 -m -p -u -i -C -- journalctl -u orch-agent --no-pager |
        grep -q 'op=isolation user=orch-job switched=yes pid_ns=yes cgroup=/sys/fs/cgroup/system.slice/orch-agent.service/orch-agent\.'"
# The job's probe of ProtectSystem= writes to /run/lock, world-writable in the container too.
eq "/run/lock in the container" "$(mode /run/lock)" "1777 root:root"
deb_job first
deb_timeout_job

# KillMode=control-group: stopping the service ends what its jobs started.
job=$(api POST /api/v1/jobs "$token" '{"command": "sleep 397 & sleep 398 & wait"}' | field id)
running() { [ "$(api GET "/api/v1/jobs/$job" "$token" | field status)" = running ]; }
orch_wait_for 30 running && in_ct pgrep -x -f 'sleep 39[78]' >/dev/null || bad "the long job did not start"
in_ct systemctl stop orch-agent
eq "systemctl stop leaves none of the job's processes" "$(in_ct pgrep -c -x -f 'sleep 39[78]')" 0
api POST "/api/v1/jobs/$job/cancel" "$token" >/dev/null 2>&1 # not run again after a restart (if still running)
in_ct systemctl start orch-agent
orch_wait_for 30 agent_online || fatal "the agent did not come back"

# --- upgrade: orchd as documented (stop, install, migrate, start); the agent restarts itself ----
say "upgrading both packages to $new_version"
mpid=$(in_ct systemctl show -p MainPID --value orch-agent)
in_ct systemctl stop orchd
in_ct dpkg -i "/share/orchd_${new_version}_amd64.deb" "/share/orch-agent_${new_version}_amd64.deb" \
    >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fatal "dpkg -i of $new_version"; }
ok "dpkg -i of $new_version"
check "orchd migrate after the upgrade" in_ct env ORCHD_DB_MIGRATE_URL="$ORCH_PG_OWNER_URL" orchd --config $conf migrate
in_ct systemctl start orchd
orch_wait_for 30 curl -sf --cacert "$ca" "$base/readyz" || fatal "orchd is not ready after the upgrade"
ok "orchd.service ready after the upgrade"
mpid2=$(in_ct systemctl show -p MainPID --value orch-agent)
check "the running agent was restarted on the new binary (pid $mpid, then $mpid2)" \
    bash -c "[ '$mpid2' != 0 ] && [ '$mpid2' != '$mpid' ]"
eq "agent.json kept by the upgrade" "$(in_ct sha256sum /var/lib/orch-agent/agent.json | cut -c1-64)" "$json_sum"
eq "orchd.conf mode after the upgrade" "$(mode /etc/orch/orchd.conf)" "640 root:orchd"
orch_wait_for 60 agent_online || fatal "the agent is not online after the upgrade"
deb_job after-upgrade

# --- remove, then purge ---------------------------------------------------------------------------
say "removing, then purging"
in_ct dpkg -r orch-agent >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; bad "dpkg -r orch-agent"; }
eq "remove stops the agent" "$(in_ct systemctl is-active orch-agent)" inactive
check "no orch-agent process after remove" bash -c "! nsenter -t $pid1 -m -p -u -i -C -- pgrep -x orch-agent"
check "remove keeps the enrolment" in_ct test -f /var/lib/orch-agent/agent.json
in_ct rm -rf /etc/orch/tls /etc/orch-agent/ca.pem
in_ct dpkg -P orch-agent orchd >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fatal "dpkg -P"; }
ok "dpkg -P orch-agent orchd"
check "no orchd process after purge" bash -c "! nsenter -t $pid1 -m -p -u -i -C -- pgrep -x orchd"
for f in /var/lib/orch-agent /var/lib/orchd /etc/orch /etc/orch-agent /lib/systemd/system/orch-agent.service \
    /lib/systemd/system/orchd.service /etc/systemd/system/multi-user.target.wants/orch-agent.service \
    /etc/systemd/system/multi-user.target.wants/orchd.service; do
    check "purge left no $f" in_ct test ! -e "$f"
done

echo "test-deb-systemd.sh took $((SECONDS - t_start)) s"
deb_result test-deb-systemd
