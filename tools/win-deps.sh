#!/usr/bin/env bash
# tools/win-deps.sh DIR: what the Windows agent links that Debian has no mingw build of:
# jansson, built from Debian's own source package (apt-get source, through a deb-src entry
# this script adds) with mingw-w64 into DIR/prefix. Writes DIR/deps.ini, a meson cross
# file that points pkg-config there; pass it after packaging/win/mingw-w64-x86_64.ini.
# No third-party source is kept in the tree. Does nothing when DIR is already complete.
#
# Environment: ORCH_SKIP_APT=1 (no apt-get update; the source must be reachable as is).
set -euo pipefail
out=$(realpath -m "${1:?usage: tools/win-deps.sh DIR}")
stamp=$out/.jansson-ready
say() { printf '== win-deps: %s\n' "$*"; }

# deps.ini: pkg-config finds the mingw jansson here, and the tests' exe wrapper is named by
# its absolute path (meson 1.0 does not expand @DIRNAME@ in the cross file). Rewritten on
# every run, so a moved tree stays right.
write_ini() {
    mkdir -p "$out"
    cat >"$out/deps.ini" <<INI
# Written by tools/win-deps.sh: where the mingw build of jansson is, and how tests run.
[binaries]
exe_wrapper = '$(realpath "$(dirname "$0")")/wine-run'

[properties]
pkg_config_libdir = ['$out/prefix/lib/pkgconfig']
INI
}
if [ -f "$stamp" ]; then
    write_ini
    exit 0
fi

src_list=/etc/apt/sources.list.d/orch-deb-src.sources
if [ ! -f "$src_list" ] && ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding a deb-src entry ($src_list)"
    . /etc/os-release
    cat >"$src_list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME:-bookworm}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
fi

rm -rf "$out/src" "$out/build" "$out/prefix"
mkdir -p "$out/download"
say "fetching jansson's Debian source package"
(cd "$out/download" && { ls jansson_*.dsc >/dev/null 2>&1 || apt-get source -qq --download-only jansson; })
# apt-get checked the files against the signed Sources index; dpkg-source cannot check
# the .dsc signature without Debian's uploader keys, and says so: that is expected.
dpkg-source -x "$(ls "$out"/download/jansson_*.dsc | head -n1)" "$out/src" >/dev/null 2>&1

cat >"$out/toolchain.cmake" <<CMAKE
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
CMAKE
say "building jansson for x86_64-w64-mingw32"
cmake -S "$out/src" -B "$out/build" -DCMAKE_TOOLCHAIN_FILE="$out/toolchain.cmake" \
    -DCMAKE_INSTALL_PREFIX="$out/prefix" -DCMAKE_BUILD_TYPE=Release \
    -DJANSSON_BUILD_SHARED_LIBS=OFF -DJANSSON_EXAMPLES=OFF -DJANSSON_BUILD_DOCS=OFF \
    -DJANSSON_WITHOUT_TESTS=ON >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
cmake --build "$out/build" -j"$(nproc)" >>"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
cmake --install "$out/build" >>"$out/cmake.log" 2>&1

write_ini
touch "$stamp"
say "jansson ready in $out/prefix"
