#!/usr/bin/env bash
# packaging/msi/build.sh OUTDIR [VERSION]: the Windows agent's installer,
# OUTDIR/orch-agent-VERSION.msi.
#
# Cross-builds orch-agent.exe (tools/win-deps.sh, then meson with packaging/win's cross
# file, release, stripped) and packs it with wixl (msitools) from orch-agent.wxs.
# VERSION is the product version, X.Y.Z (X, Y <= 255, Z <= 65535: what Windows Installer
# compares to decide an upgrade), by default meson's project version; a VERSION that
# differs is also the version the agent reports (meson -Dversion_override), so that a test
# can tell an upgraded agent from the old one.
#
# Environment:
#   ORCH_MSI_BUILD_DIR  the meson build folder of the Windows agent (default build-msi)
#   ORCH_WIN_DEPS_DIR   tools/win-deps.sh's folder (default build-win-deps)
#   ORCH_AGENT_EXE      pack this orch-agent.exe instead of building one
#   ORCH_SKIP_APT=1     passed on to tools/win-deps.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$(realpath -m "${1:?usage: packaging/msi/build.sh OUTDIR [VERSION]}")
project_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$root/meson.build" | head -n1)
version=${2:-$project_version}
say() { printf '== msi: %s\n' "$*" >&2; }
die() { printf 'packaging/msi/build.sh: %s\n' "$*" >&2; exit 1; }

[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] ||
    die "version '$version' is not X.Y.Z (Windows Installer compares three numbers)"
((BASH_REMATCH[1] <= 255 && BASH_REMATCH[2] <= 255 && BASH_REMATCH[3] <= 65535)) ||
    die "version '$version' is out of Windows Installer's range (255.255.65535)"
for tool in wixl msibuild; do
    command -v $tool >/dev/null || die "$tool is missing (Debian packages wixl and msitools)"
done

exe=${ORCH_AGENT_EXE:-}
if [ -z "$exe" ]; then
    deps=$(realpath -m "${ORCH_WIN_DEPS_DIR:-$root/build-win-deps}")
    bdir=$(realpath -m "${ORCH_MSI_BUILD_DIR:-$root/build-msi}")
    "$root/tools/win-deps.sh" "$deps" >&2
    override=
    [ "$version" = "$project_version" ] || override=$version
    opts=(-Dbuildtype=release -Dwerror=true -Dtests=disabled "-Dversion_override=$override")
    if [ -f "$bdir/build.ninja" ]; then
        meson configure "$bdir" "${opts[@]}" >/dev/null
    else
        say "configuring the Windows agent in $bdir"
        meson setup "$bdir" "$root" --cross-file "$root/packaging/win/mingw-w64-x86_64.ini" \
            --cross-file "$deps/deps.ini" "${opts[@]}" >/dev/null
    fi
    say "building orch-agent.exe $version"
    ninja -C "$bdir" agent/orch-agent.exe >/dev/null || ninja -C "$bdir" agent/orch-agent.exe
    exe=$bdir/agent/orch-agent.exe
fi
[ -f "$exe" ] || die "no orch-agent.exe at $exe"

# wixl finds a File's Source beside the .wxs: stage the three together.
stage=$(mktemp -d)
trap 'rm -rf "$stage"; rm -f "${msi:-}.tmp"' EXIT
cp "$root/packaging/msi/orch-agent.wxs" "$root/packaging/msi/README.txt" "$stage/"
cp "$exe" "$stage/orch-agent.exe"
x86_64-w64-mingw32-strip "$stage/orch-agent.exe" 2>/dev/null || true
mkdir -p "$out"
msi=$out/orch-agent-$version.msi
say "packing $msi"
wixl --arch x64 -D "Version=$version" -o "$msi.tmp" "$stage/orch-agent.wxs"

# What wixl 0.101 has no element for, set in the tables it wrote:
# - a condition on each registry component, so that a value is written only when its
#   property was given (WiX's Component/Condition, which wixl does not know); or when
#   the product is removed, since a component whose condition is false then is left
#   installed, its value behind;
# - the properties the install's server side may take from the command line
#   (WiX's Property/@Secure);
# - the log line of WriteRegistryValues without the value's data (ActionText), so that
#   the enrolment token stays out of a verbose log;
# - HKLM\SOFTWARE\Orch\Agent readable and writable by SYSTEM and Administrators only
#   (MsiLockPermissionsEx, Windows Installer 5; WiX's PermissionEx), where HKLM\SOFTWARE
#   lets every user read: the token waits there for the service's first start.
sql() { msibuild "$msi.tmp" -q "$1"; }
for pair in ServerUrl:SERVERURL Token:TOKEN CaFile:CAFILE Name:NAME Labels:LABELS; do
    sql "UPDATE \`Component\` SET \`Condition\` = '${pair#*:} OR REMOVE~=\"ALL\"' WHERE \`Component\` = 'Reg${pair%:*}'"
done
sql "UPDATE \`Property\` SET \`Value\` = 'WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED;SERVERURL;TOKEN;CAFILE;NAME;LABELS' WHERE \`Property\` = 'SecureCustomProperties'"
printf 'Action\tDescription\tTemplate\ns72\tL0\tL0\nActionText\tAction\nWriteRegistryValues\tWriting system registry values\tKey: [1], Name: [2]\n' \
    >"$stage/ActionText.idt"
msibuild "$msi.tmp" -i "$stage/ActionText.idt"
{
    printf 'MsiLockPermissionsEx\tLockObject\tTable\tSDDLText\tCondition\n'
    printf 's72\ts72\ts32\ts0\tS255\nMsiLockPermissionsEx\tMsiLockPermissionsEx\n'
    for v in ServerUrl EnrollmentToken CaFile Name Labels; do
        printf 'Lock%s\tReg%sValue\tRegistry\tD:P(A;;GA;;;SY)(A;;GA;;;BA)\t\n' "$v" "$v"
    done
} >"$stage/MsiLockPermissionsEx.idt"
msibuild "$msi.tmp" -i "$stage/MsiLockPermissionsEx.idt"

# Check that the edits took: a silent no-op would write empty values or log the token.
[[ $(msiinfo export "$msi.tmp" Component) == *$'\tTOKEN OR REMOVE~="ALL"\t'* ]] || die "the component conditions were not set"
[[ $(msiinfo export "$msi.tmp" ActionText) == *$'Name: [2]\r'* ]] || die "the ActionText table was not set"
[[ $(msiinfo export "$msi.tmp" MsiLockPermissionsEx) == *RegEnrollmentTokenValue* ]] ||
    die "the MsiLockPermissionsEx table was not set"
mv "$msi.tmp" "$msi"
say "done: $msi ($(stat -c %s "$msi") bytes)"
echo "$msi"
