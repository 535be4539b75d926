#!/usr/bin/env bash
# tools/package.sh deb|msi|all OUTDIR: build the packages of orch into OUTDIR.
#
#   deb  the Debian packages orch-agent and orchd (packaging/deb/debian, debhelper): the
#        tree (git's tracked and untracked-but-not-ignored files, as they are in the work
#        tree) is copied to OUTDIR/src with packaging/deb/debian as its debian/, and
#        dpkg-buildpackage -b builds it there; the .debs land in OUTDIR.
#   msi  the Windows agent's .msi: packaging/msi/build.sh OUTDIR.
#   all  both.
#
# Environment:
#   ORCH_SKIP_APT=1     do not run apt-get (the build tools are already there)
#   DEB_BUILD_OPTIONS   passed on; default "nocheck parallel=<cores>"
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: tools/package.sh deb|msi|all OUTDIR" >&2; exit 2; }
[ $# = 2 ] || usage
what=$1
case $what in deb | msi | all) ;; *) usage ;; esac
mkdir -p "$2"
out=$(cd "$2" && pwd)

# The source tree as git sees it, without build directories and other ignored files; a
# checkout without git is copied whole but for the usual build and state directories.
copy_tree() {
    local dest=$1
    rm -rf "$dest"
    mkdir -p "$dest"
    if git -C "$ORCH_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ORCH_ROOT" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
            tar --null -T - -cf - | tar -C "$dest" -xf -)
    else
        tar -C "$ORCH_ROOT" --exclude='./build*' --exclude=./.dev --exclude=./.git \
            --exclude=node_modules -cf - . | tar -C "$dest" -xf -
    fi
}

build_deb() {
    local src=$out/src
    say "copying the tree to $src"
    copy_tree "$src"
    rm -rf "$src/debian"
    cp -a "$src/packaging/deb/debian" "$src/debian"
    rm -f "$out"/orch-agent_*.deb "$out"/orchd_*.deb "$out"/orch-agent-dbgsym_*.deb \
        "$out"/orchd-dbgsym_*.deb "$out"/orch_*.changes "$out"/orch_*.buildinfo
    say "dpkg-buildpackage -b (log: $out/build-deb.log)"
    if ! (cd "$src" &&
        DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-"nocheck parallel=$(nproc)"} \
            dpkg-buildpackage -b -us -uc >"$out/build-deb.log" 2>&1); then
        tail -40 "$out/build-deb.log" >&2
        die "the Debian packages did not build (see $out/build-deb.log)"
    fi
    local f
    for f in "$out"/orch-agent_*.deb "$out"/orchd_*.deb; do
        [ -f "$f" ] || die "dpkg-buildpackage made no ${f##*/}"
        echo "deb: $f"
    done
}

build_msi() {
    local script=$ORCH_ROOT/packaging/msi/build.sh
    [ -x "$script" ] || die "packaging/msi/build.sh is missing: no .msi can be built yet"
    say "packaging/msi/build.sh $out"
    "$script" "$out"
    local f found=0
    for f in "$out"/*.msi; do
        [ -f "$f" ] && { echo "msi: $f"; found=1; }
    done
    [ $found = 1 ] || die "packaging/msi/build.sh made no .msi in $out"
}

orch_install_deps
case $what in
deb) build_deb ;;
msi) build_msi ;;
all) build_deb && build_msi ;;
esac
