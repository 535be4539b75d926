#!/usr/bin/env bash
# tools/win-deps.sh DIR: what the Windows agent links that Debian has no mingw build of:
# jansson and libarchive, built from Debian's own source packages (apt-get source, through a
# deb-src entry this script adds) with mingw-w64 into DIR/prefix. zlib is Debian's own mingw
# build (libz-mingw-w64-dev). Writes DIR/deps.ini, a meson cross file that points pkg-config
# there; pass it after packaging/win/mingw-w64-x86_64.ini. No third-party source is kept in
# the tree. Each library is built once: a later run does only what is missing.
#
# Environment: ORCH_SKIP_APT=1 (no apt-get update; the source must be reachable as is).
set -euo pipefail
out=$(realpath -m "${1:?usage: tools/win-deps.sh DIR}")
stamp=$out/.jansson-ready
stamp_archive=$out/.libarchive-ready
say() { printf '== win-deps: %s\n' "$*"; }

# deps.ini: pkg-config finds the mingw jansson here, and the tests' exe wrapper is named by
# its absolute path (meson 1.0 does not expand @DIRNAME@ in the cross file). Rewritten on
# every run, so a moved tree stays right.
write_ini() {
    mkdir -p "$out"
    cat >"$out/deps.ini" <<INI
# Written by tools/win-deps.sh: where the mingw builds of jansson, libarchive and zlib are,
# and how tests run.
[binaries]
exe_wrapper = '$(realpath "$(dirname "$0")")/wine-run'

[properties]
pkg_config_libdir = ['$out/prefix/lib/pkgconfig', '/usr/x86_64-w64-mingw32/lib/pkgconfig']
INI
}
if [ -f "$stamp" ] && [ -f "$stamp_archive" ]; then
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

mkdir -p "$out/download"
# The Debian source package $1 unpacked into $2 (fresh).
debian_source() {
    say "fetching $1's Debian source package"
    (cd "$out/download" && { ls "$1"_*.dsc >/dev/null 2>&1 || apt-get source -qq --download-only "$1"; })
    # apt-get checked the files against the signed Sources index; dpkg-source cannot check
    # the .dsc signature without Debian's uploader keys, and says so: that is expected.
    rm -rf "$2"
    dpkg-source -x "$(ls "$out/download/$1"_*.dsc | head -n1)" "$2" >/dev/null 2>&1
}

cat >"$out/toolchain.cmake" <<CMAKE
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
CMAKE
if [ ! -f "$stamp" ]; then
    # A fresh prefix: whatever was built into the old one is built again.
    rm -f "$stamp_archive"
    rm -rf "$out/src" "$out/build" "$out/prefix"
    debian_source jansson "$out/src"
    say "building jansson for x86_64-w64-mingw32"
    cmake -S "$out/src" -B "$out/build" -DCMAKE_TOOLCHAIN_FILE="$out/toolchain.cmake" \
        -DCMAKE_INSTALL_PREFIX="$out/prefix" -DCMAKE_BUILD_TYPE=Release \
        -DJANSSON_BUILD_SHARED_LIBS=OFF -DJANSSON_EXAMPLES=OFF -DJANSSON_BUILD_DOCS=OFF \
        -DJANSSON_WITHOUT_TESTS=ON >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
    cmake --build "$out/build" -j"$(nproc)" >>"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
    cmake --install "$out/build" >>"$out/cmake.log" 2>&1
    touch "$stamp"
    say "jansson ready in $out/prefix"
fi

# libarchive: the agent reads tar, tar in gzip and zip with it (agent/unpack.c) and writes
# them to disk. Every optional library, crypto backend and tool is off, zlib is the one
# dependency; only the static library is built (about a minute on 2 cores), and the static
# link keeps only the readers the agent names (tar, zip, the gzip filter).
if [ ! -f "$stamp_archive" ]; then
    a=$out/libarchive
    rm -rf "$a"
    mkdir -p "$a"
    debian_source libarchive "$a/src"
    say "building libarchive for x86_64-w64-mingw32 (tar, zip and gzip readers)"
    # Debian's static mingw zlib, plain cdecl: said here, as cmake 3.25 crashes on the
    # run-time check libarchive makes of it when cross-compiling.
    z=/usr/x86_64-w64-mingw32/lib/libz.a
    cmake -S "$a/src" -B "$a/build" -DCMAKE_TOOLCHAIN_FILE="$out/toolchain.cmake" \
        -DCMAKE_INSTALL_PREFIX="$out/prefix" -DCMAKE_BUILD_TYPE=Release \
        -DZLIB_LIBRARY="$z" -DZLIB_WINAPI_WITH_LIB="$z" -DZLIB_WINAPI=OFF -DPOSIX_REGEX_LIB=NONE \
        -DENABLE_ZLIB=ON -DENABLE_OPENSSL=OFF -DENABLE_MBEDTLS=OFF -DENABLE_NETTLE=OFF \
        -DENABLE_CNG=OFF -DENABLE_LIBB2=OFF -DENABLE_LZ4=OFF -DENABLE_LZO=OFF \
        -DENABLE_LZMA=OFF -DENABLE_ZSTD=OFF -DENABLE_BZip2=OFF -DENABLE_LIBXML2=OFF \
        -DENABLE_EXPAT=OFF -DENABLE_PCREPOSIX=OFF -DENABLE_LIBGCC=OFF -DENABLE_ICONV=OFF \
        -DENABLE_XATTR=OFF -DENABLE_ACL=OFF -DENABLE_TAR=OFF -DENABLE_CPIO=OFF \
        -DENABLE_CAT=OFF -DENABLE_TEST=OFF -DENABLE_WERROR=OFF \
        >"$a/cmake.log" 2>&1 || { cat "$a/cmake.log"; exit 1; }
    cmake --build "$a/build" --target archive_static -j"$(nproc)" >>"$a/cmake.log" 2>&1 ||
        { cat "$a/cmake.log"; exit 1; }
    mkdir -p "$out/prefix/include" "$out/prefix/lib/pkgconfig"
    cp "$a/src/libarchive/archive.h" "$a/src/libarchive/archive_entry.h" "$out/prefix/include/"
    cp "$a/build/libarchive/libarchive_static.a" "$out/prefix/lib/libarchive.a"
    # Static: the headers must not declare the functions dllimport.
    cat >"$out/prefix/lib/pkgconfig/libarchive.pc" <<PC
prefix=$out/prefix
Name: libarchive
Description: libarchive for mingw-w64 (tools/win-deps.sh): tar, zip, gzip with zlib
Version: $(sed -n 's/^#define[[:space:]]*ARCHIVE_VERSION_ONLY_STRING "\(.*\)"/\1/p' "$a/src/libarchive/archive.h")
Cflags: -I\${prefix}/include -DLIBARCHIVE_STATIC
Libs: -L\${prefix}/lib -larchive -lz
PC
    touch "$stamp_archive"
    say "libarchive ready in $out/prefix"
fi
write_ini
