#!/usr/bin/env bash
# tools/test.sh: the whole test suite, from a fresh Debian 12 machine (as root).
#
# Installs the packages and (npm ci) the OpenAPI linter and the console's npm packages,
# checks the sources (tools/check-source.py: banned functions and clang-format), builds orch
# twice, the admin console bundled in (a -Werror
# build, and one under AddressSanitizer + UndefinedBehaviorSanitizer), cross-builds the
# Windows agent and runs its unit tests under wine (the windows suite), starts a private
# PostgreSQL and a private RabbitMQ node on free ports, runs the test suites against them
# (the unit and integration suites under the sanitizers, the browser
# suite in the -Werror build), and stops the services again; then the packaging stage builds the Debian
# packages, installs, uses, upgrades and purges them on this machine (tests/packaging/
# test-deb.sh) and under systemd in a Debian container (test-deb-systemd.sh), and tests
# the .msi under wine (tests/packaging/test-msi.sh, when present).
# Exits non-zero when anything fails.
#
# Environment:
#   ORCH_SKIP_APT=1       do not run apt-get (packages already there; npm ci still runs)
#   ORCH_TEST_SUITES="unit integration browser windows packaging"   suites to run (default:
#                         all); browser drives the admin console in headless Chromium;
#                         windows cross-builds orch-agent.exe (mingw-w64) and runs its
#                         unit tests under wine; packaging builds and tests the packages
#   ORCH_NO_SANITIZE=1    skip the sanitizer build (quicker local runs; CI runs both)
#   ORCH_FUZZ_SECONDS=N   how long each libFuzzer target runs (default 15; 0 skips them)
source "$(dirname "$0")/lib.sh"

# What failed and how long each stage took, printed again just before the totals, so that
# the end of a long log says it.
failures=()
stage_times=()
stage_start=$SECONDS
stage_done() { # NAME: the time since the previous stage ended
    stage_times+=("$(printf '%-44s %5d s' "$1" $((SECONDS - stage_start)))")
    stage_start=$SECONDS
}
# The failed tests of a meson build dir: Criterion's "[FAIL] suite::name" lines, and the
# test programs that did not end OK with no such line.
meson_failures() { # BUILD_DIR
    python3 - "$1/meson-logs/testlog.json" <<'PY2'
import json, re, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout", "") + t.get("stderr", "")
    names = sorted(set(re.findall(r"\[FAIL\] (\S+): \(", out)))
    for n in names:
        print(f"{t['name']}: {n}")
    if t.get("result") != "OK" and not names:
        print(f"{t['name']}: {t.get('result')}")
PY2
}

orch_install_deps
orch_npm_deps
orch_job_user
stage_done "packages (apt-get, npm ci)"

cd "$ORCH_ROOT"
# Banned functions and clang-format: checked first, reported with the totals at the end.
say "checking sources (banned functions, clang-format)"
source_status=0
python3 tools/check-source.py || { source_status=1; failures+=("tools/check-source.py"); }

say "building (-Werror)"
orch_build build -Dwerror=true -Dtests=enabled -Dbuildtype=debugoptimized -Dconsole=enabled
if [ "${ORCH_NO_SANITIZE:-0}" != 1 ]; then
    say "building with -Db_sanitize=address,undefined"
    orch_build build-asan -Dwerror=true -Dtests=enabled -Dconsole=enabled -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debug
fi

fuzz_seconds=${ORCH_FUZZ_SECONDS:-15}
if [ "$fuzz_seconds" != 0 ]; then
    say "building the fuzz target (clang, libFuzzer + ASan + UBSan)"
    CC=clang orch_build build-fuzz -Dfuzz=enabled -Dtests=disabled \
        -Db_sanitize=address,undefined -Db_lundef=false
fi
stage_done "builds"

all_suites=${ORCH_TEST_SUITES:-unit integration browser windows packaging}
# The Windows stage (the mingw-w64 toolchain's deps built from Debian's sources, the
# cross build, its unit tests under wine) needs none of the services and mostly waits on
# configure scripts and wine: it runs in the background beside the native tests, its output
# kept in build-win-stage.log and printed once it is done (windows_stage_end below).
# A stage in the background (a subshell) ends with bg_report NAME: its stage times, a
# "NAME-failure: ..." line per failure and "NAME-stage: PASSED FAILED STATUS" last, in its
# log; bg_counts LOG NAME WHAT adds them to this run's once it is done.
bg_report() { # NAME
    local line
    printf '  %s\n' "${stage_times[@]}"
    for line in "${failures[@]}"; do echo "$1-failure: $line"; done
    echo "$1-stage: $total_passed $total_failed $status"
}
bg_counts() { # LOG NAME WHAT
    local p f st line
    read -r p f st < <(sed -n "s/^$2-stage: //p" "$1" | tail -1) || true
    total_passed=$((total_passed + ${p:-0}))
    total_failed=$((total_failed + ${f:-1}))
    [ "${st:-1}" = 0 ] || status=1
    while IFS= read -r line; do
        [ -n "$line" ] && failures+=("$line")
    done < <(sed -n "s/^$2-failure: //p" "$1")
    [ -n "$p" ] || failures+=("$3: the background stage printed no result")
}
win_passed=0
win_failed=0
win_status=0
win_pid=
windows_stage() { # prints "windows-stage: PASSED FAILED" last
    local p=0 f=0
    if orch_win_deps && orch_win_build build-win; then
        meson test -C build-win --print-errorlogs --num-processes 2 || true
        # Each Windows test program prints "# N passed, M failed" (tests/win/wtest.h).
        read -r p f < <(python3 - build-win/meson-logs/testlog.json <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    m = re.search(r"# (\d+) passed, (\d+) failed", t.get("stdout", ""))
    if m:
        passed += int(m.group(1)); failed += int(m.group(2))
    if t.get("result") != "OK" and not (m and int(m.group(2))):
        failed += 1
print(passed, failed)
PY
        )
    else
        f=1
    fi
    echo "windows-stage: $p $f"
}
windows_stage_end() {
    [ -n "$win_pid" ] || return 0
    wait "$win_pid" || true
    win_pid=
    say "Windows agent: mingw-w64 build (-Werror), unit tests under wine (ran in the background)"
    grep -v '^windows-stage: ' build-win-stage.log || true
    read -r win_passed win_failed < <(sed -n 's/^windows-stage: //p' build-win-stage.log | tail -1) || true
    win_passed=${win_passed:-0}
    win_failed=${win_failed:-1}
    if [ "$win_failed" != 0 ]; then
        win_status=1
        failures+=("windows: $win_failed (see the windows stage above)")
    fi
    total_passed=$((total_passed + win_passed))
    total_failed=$((total_failed + win_failed))
    status=$((status | win_status))
    say "Windows stage: $win_passed passed, $win_failed failed"
    stage_done "windows stage's wait after the tests"
}

# The packaging stage: the .debs are built once (tools/package.sh) for both Debian tests.
# Each script prints "result: N passed, M failed" last; a script that ends without it counts
# as one test, failed or passed by its exit status.
packaging_test() { # SCRIPT [ARGS...]
    local t=$1 log rc p f
    shift
    if [ ! -x "$t" ]; then
        say "packaging: $t is not there yet, skipped"
        return 0
    fi
    say "packaging: $t"
    log=$(mktemp)
    # The packages the stage needs came with the others (orch_install_deps above).
    if ORCH_SKIP_APT=1 "$t" "$@" 2>&1 | tee "$log"; then rc=0; else rc=${PIPESTATUS[0]}; fi
    if read -r p f < <(sed -nE 's/^result: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$log" | tail -1) &&
        [ -n "$p" ]; then
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        [ "$rc" = 0 ] || [ "$f" -gt 0 ] || total_failed=$((total_failed + 1))
    elif [ "$rc" = 0 ]; then
        total_passed=$((total_passed + 1))
    else
        total_failed=$((total_failed + 1))
    fi
    [ "$rc" = 0 ] || status=1
    while IFS= read -r line; do failures+=("$t: $line"); done < <(grep -E '^  FAIL  |: FAIL: ' "$log")
    [ "$rc" = 0 ] || failures+=("$t: exit $rc")
    rm -f "$log"
    stage_done "packaging: ${t##*/}"
}
if [[ " $all_suites " == *" windows "* ]]; then
    say "Windows stage started in the background (build-win-stage.log)"
    windows_stage >build-win-stage.log 2>&1 &
    win_pid=$!
fi

# The first part of the packaging stage runs in the background beside the tests: the .debs
# built once (tools/package.sh) and their test under a real systemd in a container of its
# own (test-deb-systemd.sh), which shares nothing with the tests but the CPU. Its output
# is kept in build-pkg-stage.log and printed, its counts added, by packaging_bg_end.
debs=
pkg_pid=
packaging_bg() { # prints "packaging-stage: PASSED FAILED STATUS" and "packaging-failure: ..."
    total_passed=0 total_failed=0 status=0 failures=() stage_times=() stage_start=$SECONDS
    say "packaging: tools/package.sh deb $debs"
    if ORCH_SKIP_APT=1 tools/package.sh deb "$debs" >"$debs/package.log" 2>&1; then
        total_passed=1
        touch "$debs/built"
        # The units under a real systemd in a container (skips itself where it cannot boot one).
        packaging_test tests/packaging/test-deb-systemd.sh "$debs"
    else
        tail -30 "$debs/package.log"
        say "packaging: the Debian packages did not build"
        failures+=("tools/package.sh deb")
        total_failed=1
        status=1
    fi
    bg_report packaging
}
packaging_bg_end() {
    [ -n "$pkg_pid" ] || return 0
    wait "$pkg_pid" || true
    pkg_pid=
    say "packaging: the .debs and test-deb-systemd.sh (ran in the background)"
    grep -v '^packaging-stage: \|^packaging-failure: ' build-pkg-stage.log || true
    bg_counts build-pkg-stage.log packaging packaging
    stage_done "packaging (background): wait after the tests"
}
if [[ " $all_suites " == *" packaging "* ]]; then
    debs=$(mktemp -d /var/tmp/orch-debs.XXXXXX)
    packaging_bg >build-pkg-stage.log 2>&1 &
    pkg_pid=$!
    say "packaging stage started in the background (build-pkg-stage.log)"
fi

ORCH_STATE_REMOVE=1
# The tests kill and restart PostgreSQL's processes, never the machine, so what a commit
# wrote survives them in the page cache without fsync: off here (each test's database,
# copied from a template and dropped after it, cost half a second of fsyncs), on in the
# benchmarks and tools/run.sh. Exported for the nodes of tests/integration/own-services.sh.
export ORCH_PG_FSYNC=off
orch_services_start "$(orch_state_dir "test-$$")"
stage_done "PostgreSQL and RabbitMQ started"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# "packaging" is a stage of this script, not a meson suite.
suites=()
packaging=0
for s in $all_suites; do
    case $s in
    windows) ;;
    packaging) packaging=1 ;;
    *) suites+=(--suite "$s") ;;
    esac
done

# Count the Criterion tests (not the meson test binaries) from meson's JSON log.
count_tests() {
    python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    m = re.search(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)",
                  t.get("stdout", "") + t.get("stderr", ""))
    if m:
        passed += int(m.group(2)); failed += int(m.group(3)) + int(m.group(4))
    elif t.get("result") != "OK":
        failed += 1
print(passed, failed)
PY
}

status=$source_status
total_passed=$((1 - source_status))
total_failed=$source_status
for b in build build-asan; do
    [ ${#suites[@]} -gt 0 ] || break
    [ -f "$b/build.ninja" ] || continue
    [ "$b" = build-asan ] && [ "${ORCH_NO_SANITIZE:-0}" = 1 ] && continue
    say "running tests ($b)"
    # Each suite runs once where it tells the most, which keeps the whole run under CI's 25
    # minutes: the unit and integration suites under the sanitizers (the same tests, with
    # every memory and UB error made fatal), the browser suite in the -Werror build (what it
    # adds is the console's scripts in Chromium; orchd's side of it runs in the integration
    # suite). The packaging stage runs the release build end to end. Without the sanitizer
    # build (ORCH_NO_SANITIZE=1), everything runs in the -Werror build.
    run=()
    for ((i = 0; i < ${#suites[@]}; i += 2)); do
        case "$b:${suites[i + 1]}" in
        build-asan:browser) continue ;;
        build:integration | build:unit) [ "${ORCH_NO_SANITIZE:-0}" = 1 ] || continue ;;
        esac
        run+=("${suites[i]}" "${suites[i + 1]}")
    done
    [ ${#run[@]} -gt 0 ] || continue
    if ! meson test -C "$b" "${run[@]}" --print-errorlogs --num-processes 2; then
        status=1
    fi
    # A sanitizer report (the tests print orchd's log when it exits badly), or a test whose
    # teardown crashed, fails the run even where the test runner let it through.
    bad='ERROR: (Address|Leak)Sanitizer|runtime error:|crashed during its setup or teardown'
    if grep -qE "$bad" "$b/meson-logs/testlog.txt"; then
        grep -nE "$bad" "$b/meson-logs/testlog.txt" | head
        say "sanitizer reports or crashed teardowns in $b"
        status=1
    fi
    # The fault-injection suite's table (tests/integration/test-faults.c), for the record.
    awk '/^\| fault \|/{p=1} p&&/^\|/{print; next} p{exit}' "$b/meson-logs/testlog.txt" >&2 || true
    read -r p f < <(count_tests "$b")
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f + $(grep -cE "$bad" "$b/meson-logs/testlog.txt" || true)))
    while IFS= read -r line; do failures+=("$b: $line"); done < <(meson_failures "$b")
    grep -qE "$bad" "$b/meson-logs/testlog.txt" && failures+=("$b: sanitizer report or crashed teardown")
    stage_done "tests ($b: ${run[*]//--suite /})"
done

if [ "$fuzz_seconds" != 0 ]; then
    # The two targets side by side (libFuzzer runs one process each): each on a corpus of
    # its own, its output in build-fuzz/NAME.log.
    say "fuzzing request parsing, JSON validation and tokens, and the agent's unpacker (tar, tar.gz, zip), ${fuzz_seconds}s each, side by side"
    corpus_api=$(mktemp -d)
    cp "$ORCH_ROOT"/tests/fuzz/corpus/* "$corpus_api"/
    corpus_unpack=$(mktemp -d)
    # Seeds made here: a tar, a tar.gz and a zip with a file, a directory and a link.
    python3 - "$corpus_unpack" <<'PY'
import io, sys, tarfile, zipfile
d = sys.argv[1]
for name, mode in (("seed.tar", "w"), ("seed.tgz", "w:gz")):
    with tarfile.open(f"{d}/{name}", mode) as t:
        for n, data in (("bin/run.sh", b"#!/bin/sh\necho hi\n"), ("data/a.txt", b"a" * 100)):
            i = tarfile.TarInfo(n); i.size = len(data); i.mode = 0o755
            t.addfile(i, io.BytesIO(data))
        i = tarfile.TarInfo("bin/link"); i.type = tarfile.SYMTYPE; i.linkname = "run.sh"
        t.addfile(i)
with zipfile.ZipFile(f"{d}/seed.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("bin/run.sh", "#!/bin/sh\necho hi\n")
    z.writestr("data/a.txt", "a" * 100)
PY
    fuzz_run() { # NAME CORPUS: build-fuzz/tests/fuzz/NAME, its log in build-fuzz/NAME.log
        build-fuzz/tests/fuzz/"$1" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
            -artifact_prefix=build-fuzz/"$1"- -print_final_stats=1 "$2" >build-fuzz/"$1".log 2>&1
    }
    fuzz_end() { # NAME PID: wait for the target's run and count it
        if wait "$2"; then
            total_passed=$((total_passed + 1))
            echo "$1: $(grep -E "stat::number_of_executed_units" build-fuzz/"$1".log || true)"
        else
            tail -40 build-fuzz/"$1".log
            say "$1 found a crash (input saved in build-fuzz/$1-*)"
            failures+=("$1")
            total_failed=$((total_failed + 1))
            status=1
        fi
    }
    fuzz_run fuzz-api "$corpus_api" &
    fuzz_api_pid=$!
    fuzz_run fuzz-unpack "$corpus_unpack" &
    fuzz_unpack_pid=$!
    fuzz_end fuzz-api "$fuzz_api_pid"
    fuzz_end fuzz-unpack "$fuzz_unpack_pid"
    rm -rf "$corpus_api" "$corpus_unpack"
fi
[ "$fuzz_seconds" = 0 ] || stage_done "fuzzers"
windows_stage_end

# Stop the services now, so that the summary below is the last line printed (and the
# packaging tests left, which start their own, do not run beside them).
orch_services_stop
trap - EXIT
ORCH_STATE=

if [ $packaging = 1 ]; then
    packaging_bg_end
    if [ -n "$debs" ] && [ -f "$debs/built" ]; then
        # Installs the packages on this machine (and purges them, with their users): after
        # the integration tests, whose jobs run as the same orch-job user.
        packaging_test tests/packaging/test-deb.sh "$debs"
    fi
    [ -z "$debs" ] || rm -rf "$debs"
    # The .msi needs the Windows toolchain, wixl and msitools (the windows stage installs
    # them; without it, here). Not in the background: its checks of a job's timeout under
    # wine do not hold beside the sanitizer tests (tried in stop 23).
    [[ " $all_suites " == *" windows "* ]] || orch_win_deps
    packaging_test tests/packaging/test-msi.sh
fi

say "time by stage (${SECONDS} s in all)"
printf '  %s\n' "${stage_times[@]}"
if [ ${#failures[@]} -gt 0 ]; then
    say "failed"
    printf '  %s\n' "${failures[@]}"
fi
if [ $status = 0 ]; then say "all tests passed"; else say "TESTS FAILED"; fi
[ $status = 0 ] || [ $total_failed -gt 0 ] || total_failed=1
echo "tests: $total_passed passed, $total_failed failed"
exit $status
