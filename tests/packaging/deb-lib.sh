# tests/packaging/deb-lib.sh: what test-deb.sh and test-deb-systemd.sh share. Sourced after
# tools/lib.sh.
#
# T is the command prefix that runs a command on the system the packages are installed on:
# empty for this machine, nsenter into the container for test-deb-systemd.sh. Set base, ca
# and token before the API and job helpers are used.
T=()

# --- counting --------------------------------------------------------------------------
passed=0 failed=0
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$*"; }
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
fatal() { bad "$*"; exit 1; }
eq() { # DESCRIPTION GOT WANT
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi
}
# The summary line tools/test.sh counts.
deb_result() { # NAME
    [ $failed = 0 ] && say "$1: all checks passed" || say "$1: CHECKS FAILED"
    echo "result: $passed passed, $failed failed"
    [ $failed = 0 ]
}

# --- one test at a time ----------------------------------------------------------------
# The packaging tests install, upgrade and purge packages of one name on one machine: a
# second run waits for the first (at most 15 minutes). A directory, not flock: the services
# a test starts would inherit a lock descriptor. A lock whose owner is gone is taken over.
deb_lock=/run/lock/orch-test-deb
deb_lock_take() {
    local i owner
    for i in $(seq 1 900); do
        if mkdir "$deb_lock" 2>/dev/null; then
            echo $$ >"$deb_lock/pid"
            return 0
        fi
        owner=$(cat "$deb_lock/pid" 2>/dev/null)
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            rm -rf "$deb_lock"
            continue
        fi
        [ "$i" = 1 ] && say "waiting for another packaging test (pid ${owner:-?}) to finish"
        sleep 1 # polling the lock, bounded to 15 minutes
    done
    die "another packaging test holds $deb_lock"
}
deb_lock_drop() {
    [ "$(cat "$deb_lock/pid" 2>/dev/null)" = $$ ] && rm -rf "$deb_lock"
    return 0
}

# --- packages --------------------------------------------------------------------------
# The .debs of DIR (the newest of each), or built into DIR by tools/package.sh.
deb_find() { # DIR: sets agent_deb, orchd_deb
    agent_deb=$(ls "$1"/orch-agent_*.deb 2>/dev/null | sort -V | tail -1)
    orchd_deb=$(ls "$1"/orchd_*.deb 2>/dev/null | sort -V | tail -1)
    [ -f "$agent_deb" ] && [ -f "$orchd_deb" ]
}
deb_build() { # DIR LOG
    "$ORCH_ROOT/tools/package.sh" deb "$1" >"$2" 2>&1 || { tail -30 "$2"; return 1; }
}
# The same package at another version (an upgrade to test), into OUTDIR.
deb_repack() { # DEB VERSION OUTDIR
    local d
    d=$(mktemp -d)
    dpkg-deb -R "$1" "$d/p" &&
        sed -i "s/^Version: .*/Version: $2/" "$d/p/DEBIAN/control" &&
        dpkg-deb -b "$d/p" "$3/" >/dev/null
    local rc=$?
    rm -rf "$d"
    return $rc
}

# --- configuration ---------------------------------------------------------------------
# Uncomment KEY in FILE (on the target) and set it, as an operator edits a conffile.
conf_set() { # FILE KEY VALUE
    "${T[@]}" sed -i "s|^#$2 = .*|$2 = $3|; s|^#$2 =\$|$2 = $3|" "$1"
    "${T[@]}" grep -qx "$2 = $3" "$1" || fatal "could not set $2 in $1"
}

# A capability bounding set and no_new_privs as "CAP_X CAP_Y ... nnp=N" (capabilities in
# the kernel's order), from stdin: "proc" reads /proc/<pid>/status (what a running process
# has), "unit" a unit file (what its CapabilityBoundingSet= and NoNewPrivileges= ask for).
privs() { # proc|unit
    python3 -c '
import sys
order = ("chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap "
         "linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner "
         "sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice "
         "sys_resource sys_time sys_tty_config mknod lease audit_write audit_control setfcap "
         "mac_override mac_admin syslog wake_alarm block_suspend audit_read perfmon bpf "
         "checkpoint_restore").split()
names = [f"CAP_{n.upper()}" for n in order]
text = sys.stdin.read().splitlines()
if sys.argv[1] == "proc":
    st = dict(l.split(":", 1) for l in text if ":" in l)
    bnd = int(st["CapBnd"], 16)
    caps = {n for i, n in enumerate(names) if bnd >> i & 1}
    nnp = st["NoNewPrivs"].strip()
else:
    caps, nnp, seen = set(names), "0", False
    for line in text:
        k, _, v = line.strip().partition("=")
        if k == "CapabilityBoundingSet":
            caps = (caps if seen else set()) | set(v.split()) if v else set()
            seen = True
        elif k == "NoNewPrivileges":
            nnp = "1" if v == "yes" else "0"
print(" ".join([n for n in names if n in caps] + [f"nnp={nnp}"]))
' "$1"
}

# --- the API -----------------------------------------------------------------------------
api() { # METHOD PATH TOKEN [BODY]: the body of a 2xx answer, else fails
    local out code
    out=$(curl -s -w '\n%{http_code}' --cacert "$ca" -X "$1" "$base$2" \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-H 'Content-Type: application/json' -d "$4"})
    code=${out##*$'\n'}
    [ "${code:0:1}" = 2 ] || { echo "$1 $2: HTTP $code: ${out%$'\n'*}" >&2; return 1; }
    printf '%s\n' "${out%$'\n'*}"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# A tenant with an admin key, and an enrolment token, as an operator and a tenant admin make
# them. Sets token (the tenant admin's access token) and etok (the enrolment token).
deb_tenant() { # OPERATOR_KEY SLUG
    local op tenant key
    op=$(api POST /api/v1/auth/token "" "{\"key\":\"$1\"}" | field access_token) || fatal "operator token"
    tenant=$(api POST /api/v1/tenants "$op" "{\"slug\":\"$2\",\"display_name\":\"$2\",\"tier\":\"standard\"}" |
        field id) || fatal "create a tenant"
    key=$(api POST "/api/v1/tenants/$tenant/api-keys" "$op" '{"name":"deb-admin","role":"admin"}' |
        field key) || fatal "create an API key"
    token=$(api POST /api/v1/auth/token "" "{\"key\":\"$key\"}" | field access_token) || fatal "tenant token"
    etok=$(api POST /api/v1/enrollment-tokens "$token" '{"name":"deb test"}' | field token) ||
        fatal "create an enrolment token"
    ok "tenant, API key and enrolment token made through the API"
}

agent_online() {
    curl -s --cacert "$ca" "$base/api/v1/agents" -H "Authorization: Bearer $token" |
        python3 -c 'import json,sys; sys.exit(not any(a["status"] == "online" for a in json.load(sys.stdin)["items"]))'
}

# Submit a job (JSON) and wait, bounded, until it ends. Sets job_status and job_out (stdout).
job_run() { # BODY
    local job i
    job_status=none job_out=
    job=$(api POST /api/v1/jobs "$token" "$1" | field id) || return 1
    for i in $(seq 1 600); do
        job_status=$(api GET "/api/v1/jobs/$job" "$token" | field status)
        case $job_status in succeeded | failed | dead | cancelled) break ;; esac
        sleep 0.1 # polling the job's state, bounded to 60 s
    done
    job_out=$(curl -s --cacert "$ca" "$base/api/v1/jobs/$job/logs?stream=stdout" -H "Authorization: Bearer $token")
}

# A job that says who it runs as, whether it can read the credential, whether it can write a
# world-writable directory of the host (not under ProtectSystem=strict), whether it sees
# /home (ProtectHome=yes), and leaves a file in its /tmp (PrivateTmp=yes: not the host's).
deb_job_cmd='id -un
if cat /var/lib/orch-agent/agent.json >/dev/null 2>&1; then echo credential=readable; else echo credential=hidden; fi
if touch /run/lock/orch-test-deb-$MARK 2>/dev/null; then echo run-lock=writable; else echo run-lock=readonly; fi
if ls /home >/dev/null 2>&1; then echo home=visible; else echo home=hidden; fi
echo private >/tmp/orch-test-deb-$MARK
echo "done $MARK"'
deb_job() { # MARKER
    job_run "$(python3 -c 'import json,sys; print(json.dumps({"command": sys.argv[1], "env": {"MARK": sys.argv[2]}}))' \
        "$deb_job_cmd" "$1")" || { bad "submit job $1"; return; }
    eq "job $1 status" "$job_status" succeeded
    eq "job $1 output (user, credential, ProtectSystem, ProtectHome)" "$(printf '%s' "$job_out" | tr '\n' ' ')" \
        "orch-job credential=hidden run-lock=readonly home=hidden done $1"
    check "job $1 wrote to a private /tmp, not the system's" "${T[@]}" test ! -e "/tmp/orch-test-deb-$1"
    "${T[@]}" rm -f "/run/lock/orch-test-deb-$1" "/tmp/orch-test-deb-$1"
}

# A job past its timeout gets SIGTERM first, sent by the agent (root) to processes of
# another uid: that takes CAP_KILL in the unit's bounding set (the kill after the grace
# period goes through cgroup.kill and would not show its absence).
deb_timeout_job() {
    job_run '{"command": "trap \"echo term; exit 3\" TERM; echo started; sleep 60 & wait", "timeout_ms": 1000, "max_attempts": 1}' ||
        { bad "submit the timeout job"; return; }
    eq "a job past its timeout gets SIGTERM from the agent ($job_status)" \
        "$(printf '%s' "$job_out" | tr '\n' ' ')" "started term"
}
