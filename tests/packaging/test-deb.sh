#!/usr/bin/env bash
# tests/packaging/test-deb.sh [DEBDIR]: the Debian packages, installed on this machine and
# used the way docs/install.md tells an operator to, then purged.
#
# Builds the .debs (tools/package.sh deb), or takes orch-agent_*.deb and orchd_*.deb from
# DEBDIR; runs lintian on them; installs them with apt-get; checks users, modes, conffiles
# and units; configures orchd through /etc/orch/orchd.conf, runs `orchd migrate` and
# `orchd admin gen-key` as documented and starts orchd against a private PostgreSQL and
# RabbitMQ (tools/lib.sh); creates a tenant and an enrolment token through the API; enrols
# the packaged agent with `orch-agent register`; starts it; runs a job through the API and
# checks its output (it ran as orch-job and could not read the credential); upgrades both
# packages to a higher version and checks that the enrolment survived and the agent still
# runs jobs; then purges both and checks that nothing of them is left.
#
# The services run under systemd when systemd is PID 1; otherwise each runs the exact
# ExecStart= of its installed unit, under the unit's user, capability bounding set,
# no_new_privs and file system protections (tests/packaging/unit-exec.sh).
#
# Needs root, and refuses to run when orch-agent or orchd is installed, or their state or
# configuration directories exist: the purge at the end would destroy them. Always purges
# what it installed, also on failure. The last line is "result: N passed, M failed".
#
# Environment: ORCH_SKIP_APT=1 (do not apt-get the build tools), ORCH_DEB_KEEP=1 (keep the
# work directory with the logs).
source "$(dirname "$0")/../../tools/lib.sh"
set +e # the checks count failures and go on; every step that the next depend on is fatal

source "$(dirname "$0")/deb-lib.sh"

[ "$(id -u)" = 0 ] || die "test-deb.sh needs root (it installs packages)"
t_start=$SECONDS

# --- one at a time, and refuse to clobber ---------------------------------------------
# Two runs on one machine would install, upgrade and purge each other's packages.
deb_lock_take
trap deb_lock_drop EXIT
for p in orch-agent orchd; do
    s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
    [ -z "$s" ] || [ "$s" = not-installed ] ||
        die "package $p is on this machine ($s): test-deb.sh would purge it; remove it first"
done
for d in /var/lib/orch-agent /var/lib/orchd /etc/orch /etc/orch-agent; do
    [ -e "$d" ] && die "$d exists: test-deb.sh would purge it; move it away first"
done

work=$(mktemp -d /var/tmp/orch-test-deb.XXXXXX)
chmod 755 "$work"
installed=0 orchd_pid= agent_pid= use_systemd=0
[ -d /run/systemd/system ] && use_systemd=1

cleanup() {
    local rc=$?
    svc_stop orch-agent
    svc_stop orchd
    if [ $installed = 1 ]; then
        say "purging orch-agent and orchd"
        # What the operator added to the packages' directories goes first, as an operator
        # would remove it, so that the purge can remove the directories.
        rm -rf /etc/orch/tls /etc/orch-agent/ca.pem
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 purge -y -qq orch-agent orchd >"$work/purge.log" 2>&1 ||
            { cat "$work/purge.log"; rc=1; }
    fi
    orch_services_stop
    [ "${ORCH_DEB_KEEP:-0}" = 1 ] && echo "work directory kept: $work" || rm -rf "$work"
    deb_lock_drop
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start and stop a packaged service: systemctl when systemd runs, else the unit's exact
# command line through unit-exec.sh, logging to $work/UNIT.log.
svc_start() { # UNIT
    if [ $use_systemd = 1 ]; then
        systemctl daemon-reload && systemctl start "$1.service"
        return
    fi
    "$ORCH_ROOT/tests/packaging/unit-exec.sh" "/lib/systemd/system/$1.service" >>"$work/$1.log" 2>&1 &
    if [ "$1" = orchd ]; then orchd_pid=$!; else agent_pid=$!; fi
}
svc_stop() { # UNIT
    if [ $use_systemd = 1 ]; then
        [ $installed = 1 ] && systemctl stop "$1.service" 2>/dev/null
        return 0
    fi
    local pid
    if [ "$1" = orchd ]; then pid=$orchd_pid; orchd_pid=; else pid=$agent_pid; agent_pid=; fi
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    # The agent cancels its jobs and flushes its spool (10 s at most) before it exits.
    local i
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
svc_pid() { # UNIT: the main process
    if [ $use_systemd = 1 ]; then systemctl show -p MainPID --value "$1.service"
    elif [ "$1" = orchd ]; then echo "$orchd_pid"; else echo "$agent_pid"; fi
}
svc_log() { # UNIT
    if [ $use_systemd = 1 ]; then journalctl -u "$1.service" --no-pager | tail -30; else tail -30 "$work/$1.log"; fi
}

# --- build and lint ------------------------------------------------------------------
debdir=${1:-}
if [ -z "$debdir" ]; then
    debdir=$work/out
    say "building the packages (tools/package.sh deb)"
    deb_build "$debdir" "$work/package.log" || fatal "tools/package.sh deb"
    ok "tools/package.sh deb built the packages ($((SECONDS - t_start)) s)"
fi
deb_find "$debdir" || fatal "no orch-agent_*.deb and orchd_*.deb in $debdir"
# debian/changelog carries the version: it must follow meson.build's.
eq "the packages' version is meson's project version" "$(dpkg-deb -f "$agent_deb" Version)" \
    "$(sed -nE "s/^ *version *: *'([^']+)',?/\1/p" "$ORCH_ROOT/meson.build" | head -1)"

say "lintian"
# Errors and warnings fail; every one that is expected is overridden, with its reason, in
# packaging/deb/debian/*.lintian-overrides.
lintian --fail-on error,warning "$agent_deb" "$orchd_deb" >"$work/lintian.log" 2>&1
lint_rc=$?
sed 's/^/    /' "$work/lintian.log"
if [ $lint_rc = 0 ] && ! grep -qE '^[EW]: ' "$work/lintian.log"; then
    ok "lintian: no error, no warning"
else
    bad "lintian reports errors or warnings"
fi

# --- services and install --------------------------------------------------------------
ORCH_STATE_REMOVE=1
orch_services_start "$(orch_state_dir "test-deb-$$")"
trap cleanup EXIT # orch_services_start set its own; cleanup stops the services too

say "apt-get install $(basename "$orchd_deb") $(basename "$agent_deb")"
job_user_before=$(getent passwd orch-job) && job_user_existed=1 || job_user_existed=0
installed=1
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends \
    "$orchd_deb" "$agent_deb" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fatal "apt-get install of the packages"; }
ok "apt-get install of orchd and orch-agent"
# Nothing secret exists at install time; no orch secret may appear in the output anyway.
check "the install prints no token or credential" \
    bash -c "! grep -qE 'orch_(et|ag|op|ak)_' '$work/install.log'"

say "checking the installed files"
mode() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
eq "orch-agent binary" "$(/usr/bin/orch-agent version | cut -d' ' -f1)" orch-agent
eq "orchd binary" "$(/usr/bin/orchd version | cut -d' ' -f1)" orchd
eq "/var/lib/orch-agent mode" "$(mode /var/lib/orch-agent)" "711 root:root"
eq "/var/lib/orchd mode" "$(mode /var/lib/orchd)" "700 orchd:orchd"
eq "/var/lib/orchd/keys mode" "$(mode /var/lib/orchd/keys)" "700 orchd:orchd"
eq "/etc/orch/orchd.conf mode" "$(mode /etc/orch/orchd.conf)" "640 root:orchd"
eq "/etc/orch-agent/agent.conf mode" "$(mode /etc/orch-agent/agent.conf)" "644 root:root"
# The postinst creates orch-job unless it exists (tools/lib.sh makes it for the other suites).
if [ $job_user_existed = 1 ]; then
    eq "orch-job (there before) kept as it was" "$(getent passwd orch-job)" "$job_user_before"
else
    eq "orch-job user (home, shell)" "$(getent passwd orch-job | cut -d: -f6,7)" "/nonexistent:/usr/sbin/nologin"
fi
check "orch-job has no home directory" test ! -e /nonexistent
check "orch-job is a system user with its own group" \
    bash -c '[ "$(id -u orch-job)" -lt 1000 ] && [ "$(id -gn orch-job)" = orch-job ]'
eq "orchd user's shell" "$(getent passwd orchd | cut -d: -f7)" /usr/sbin/nologin
check "agent.conf is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' orch-agent | grep -q ' /etc/orch-agent/agent.conf '"
check "orchd.conf is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' orchd | grep -q ' /etc/orch/orchd.conf '"
check "man page orch-agent(8)" test -f /usr/share/man/man8/orch-agent.8.gz
check "man page orchd(8)" test -f /usr/share/man/man8/orchd.8.gz
check "orch-agent.service installed" test -f /lib/systemd/system/orch-agent.service
check "orchd.service installed" test -f /lib/systemd/system/orchd.service
check "neither unit is enabled by the install" \
    bash -c '! ls /etc/systemd/system/*.wants/orch-agent.service /etc/systemd/system/*.wants/orchd.service 2>/dev/null | grep -q .'
[ $use_systemd = 1 ] && check "the agent is not running after the install" \
    bash -c '! systemctl is-active -q orch-agent.service'
# The conffiles list every key of `config`, commented out, and are valid as shipped.
keys_listed() { # BINARY CONFFILE
    local k missing=0
    for k in $("$1" config | awk '{print $1}'); do
        grep -qE "^#$k = ?" "$2" || { echo "missing: $k"; missing=1; }
    done
    return $missing
}
check "agent.conf lists every key of orch-agent config" keys_listed /usr/bin/orch-agent /etc/orch-agent/agent.conf
check "orchd.conf lists every key of orchd config" keys_listed /usr/bin/orchd /etc/orch/orchd.conf
check "agent.conf as shipped is valid" /usr/bin/orch-agent check-config
check "orchd.conf as shipped is valid" /usr/bin/orchd --config /etc/orch/orchd.conf check-config
unit_has() { grep -qx "$2" "/lib/systemd/system/$1.service"; }
for line in 'ExecStart=/usr/bin/orch-agent run' 'Restart=on-failure' 'KillMode=control-group' \
    'Delegate=yes' 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/orch-agent' 'ProtectHome=yes' \
    'PrivateTmp=yes' 'NoNewPrivileges=yes' 'ConditionPathExists=/var/lib/orch-agent/agent.json'; do
    check "orch-agent.service: $line" unit_has orch-agent "$line"
done
for line in 'User=orchd' 'ExecStart=/usr/bin/orchd --config /etc/orch/orchd.conf serve' \
    'Restart=on-failure' 'CapabilityBoundingSet=' 'NoNewPrivileges=yes' 'ProtectSystem=strict'; do
    check "orchd.service: $line" unit_has orchd "$line"
done

# --- configure orchd as docs/install.md says ------------------------------------------
say "configuring orchd (/etc/orch/orchd.conf), migrating, starting it"
port=$(orch_free_port)
"$ORCH_ROOT/tools/gen-certs.sh" /etc/orch/tls >/dev/null
chgrp orchd /etc/orch/tls /etc/orch/tls/server.key
chmod 750 /etc/orch/tls
chmod 640 /etc/orch/tls/server.key
conf=/etc/orch/orchd.conf
conf_set $conf db.url "$ORCH_PG_APP_URL"
conf_set $conf db.system_url "$ORCH_PG_SYSTEM_URL"
conf_set $conf amqp.url "$ORCH_AMQP_URL"
conf_set $conf http.port "$port"
conf_set $conf http.cert_file /etc/orch/tls/server.pem
conf_set $conf http.key_file /etc/orch/tls/server.key
check "orchd check-config of the edited file" orchd --config $conf check-config
ORCHD_DB_MIGRATE_URL=$ORCH_PG_OWNER_URL orchd --config $conf migrate >"$work/migrate.log" 2>&1 ||
    { cat "$work/migrate.log"; fatal "orchd migrate"; }
ok "orchd migrate ($(head -1 "$work/migrate.log"))"
runuser -u orchd -- orchd --config $conf admin gen-key >/dev/null ||
    fatal "orchd admin gen-key as orchd"
eq "signing key in /var/lib/orchd/keys" "$(stat -c '%a %U' /var/lib/orchd/keys/*.pem)" "600 orchd"
operator=$(runuser -u orchd -- orchd --config $conf admin create-token "test-deb" 2>/dev/null) ||
    fatal "orchd admin create-token"
svc_start orchd
base=https://127.0.0.1:$port
ca=/etc/orch/tls/ca.pem
orch_wait_for 30 curl -sf --cacert $ca "$base/readyz" || { svc_log orchd; fatal "orchd is not ready"; }
ok "orchd (the unit's ExecStart, as orchd) is ready on $base"
eq "orchd's capability bounding set and no_new_privs" "$(privs proc <"/proc/$(svc_pid orchd)/status")" \
    "$(privs unit </lib/systemd/system/orchd.service)"
check "orchd runs as the user orchd" \
    bash -c "[ \"\$(ps -o user= -p \$(pgrep -xf '/usr/bin/orchd --config /etc/orch/orchd.conf serve' | head -1))\" = orchd ]"

deb_tenant "$operator" debtest

# --- enrol and run the packaged agent ---------------------------------------------------
say "enrolling the packaged agent and running a job"
cp $ca /etc/orch-agent/ca.pem
conf_set /etc/orch-agent/agent.conf server.url "$base"
conf_set /etc/orch-agent/agent.conf server.ca_file /etc/orch-agent/ca.pem
ORCH_AGENT_ENROLL_TOKEN=$etok orch-agent register --name deb-test >"$work/register.log" 2>&1 ||
    { cat "$work/register.log"; fatal "orch-agent register"; }
ok "orch-agent register: $(cat "$work/register.log")"
eq "agent.json mode" "$(mode /var/lib/orch-agent/agent.json)" "600 root:root"
eq "/var/lib/orch-agent mode after enrolment" "$(mode /var/lib/orch-agent)" "711 root:root"
json_sum=$(sha256sum /var/lib/orch-agent/agent.json | cut -c1-64)

svc_start orch-agent
orch_wait_for 30 agent_online || { svc_log orch-agent; fatal "the agent did not come online"; }
ok "the agent (the unit's ExecStart) is online"
eq "the agent's capability bounding set and no_new_privs" "$(privs proc <"/proc/$(svc_pid orch-agent)/status")" \
    "$(privs unit </lib/systemd/system/orch-agent.service)"
deb_job first
deb_timeout_job
check "the agent logged its isolation: job user switched, PID namespace, cgroup" \
    bash -c "grep -E 'op=isolation user=orch-job switched=yes pid_ns=yes cgroup=/' '$work/orch-agent.log' ||
             journalctl -u orch-agent.service | grep -E 'op=isolation user=orch-job switched=yes pid_ns=yes cgroup=/'"

# --- upgrade -----------------------------------------------------------------------------
say "upgrading both packages"
svc_stop orch-agent
old_version=$(dpkg-query -W -f='${Version}' orch-agent)
new_version=$old_version+upgradetest1
mkdir -p "$work/up"
deb_repack "$agent_deb" "$new_version" "$work/up" && deb_repack "$orchd_deb" "$new_version" "$work/up" ||
    fatal "repack the packages at $new_version"
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends \
    "$work"/up/orchd_*.deb "$work"/up/orch-agent_*.deb >"$work/upgrade.log" 2>&1 ||
    { cat "$work/upgrade.log"; fatal "apt-get install of $new_version"; }
eq "orch-agent upgraded" "$(dpkg-query -W -f='${Version}' orch-agent)" "$new_version"
eq "orchd upgraded" "$(dpkg-query -W -f='${Version}' orchd)" "$new_version"
eq "agent.json kept by the upgrade" "$(sha256sum /var/lib/orch-agent/agent.json 2>/dev/null | cut -c1-64)" "$json_sum"
eq "agent.json mode after the upgrade" "$(mode /var/lib/orch-agent/agent.json)" "600 root:root"
eq "/var/lib/orch-agent mode after the upgrade" "$(mode /var/lib/orch-agent)" "711 root:root"
eq "orchd.conf mode after the upgrade" "$(mode /etc/orch/orchd.conf)" "640 root:orchd"
check "the edited agent.conf kept by the upgrade" grep -qx "server.url = $base" /etc/orch-agent/agent.conf
check "the edited orchd.conf kept by the upgrade" grep -qx "http.port = $port" /etc/orch/orchd.conf
check "the signing key kept by the upgrade" bash -c 'ls /var/lib/orchd/keys/*.pem'
svc_start orch-agent
deb_job after-upgrade

# --- purge ---------------------------------------------------------------------------------
say "stopping and purging"
svc_stop orch-agent
svc_stop orchd
rm -rf /etc/orch/tls /etc/orch-agent/ca.pem
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 purge -y -qq orch-agent orchd >"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log"; fatal "apt-get purge"; }
installed=0
ok "apt-get purge of orch-agent and orchd"
for p in orch-agent orchd; do
    eq "package $p gone" "$(dpkg-query -W -f='${db:Status-Status}' $p 2>/dev/null || echo not-installed)" not-installed
done
for f in /var/lib/orch-agent /var/lib/orchd /etc/orch /etc/orch-agent /usr/bin/orch-agent /usr/bin/orchd \
    /lib/systemd/system/orch-agent.service /lib/systemd/system/orchd.service \
    /usr/share/man/man8/orch-agent.8.gz /usr/share/man/man8/orchd.8.gz /usr/share/doc/orch-agent \
    /usr/share/doc/orchd /var/lib/systemd/deb-systemd-helper-enabled/orch-agent.service.dsh-also; do
    check "purge left no $f" test ! -e "$f"
done

echo "test-deb.sh took $((SECONDS - t_start)) s"
deb_result test-deb
