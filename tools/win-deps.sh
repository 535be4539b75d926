#!/usr/bin/env bash
# tools/win-deps.sh DIR: what the Windows agent links that Debian has no mingw build of:
# jansson and libarchive, built from Debian's own source packages (apt-get source, through a
# deb-src entry this script adds) with mingw-w64 into DIR/prefix. zlib is Debian's own mingw
# build (libz-mingw-w64-dev). Writes DIR/deps.ini, a meson cross file that points pkg-config
# there; pass it after packaging/win/mingw-w64-x86_64.ini. No third-party source is kept in
# the tree. Each library is built once: a later run does only what is missing.
#
# Each library's cmake configure asks the mingw compiler a few hundred questions (is this
# header there, how big is that type), each a compile and a link through try_compile: about
# 0.3 s each alone, two minutes for libarchive, and many more beside the sanitizer tests that
# run at the same time. The answers are kept in packaging/win/cmake-seed-NAME.cmake and given
# to cmake with -C: a check whose answer is set is not run. A seed serves only the library
# version, compiler and Windows headers it was made with (its "# for:" line); otherwise every
# check runs, as without it. `tools/win-deps.sh --reseed DIR` runs them all and rewrites the
# seeds.
#
# Environment: ORCH_SKIP_APT=1 (no apt-get update; the source must be reachable as is).
set -euo pipefail
reseed=0
if [ "${1:-}" = --reseed ]; then
    reseed=1
    shift
fi
out=$(realpath -m "${1:?usage: tools/win-deps.sh [--reseed] DIR}")
seed_dir=$(realpath "$(dirname "$0")/../packaging/win")
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
[ $reseed = 0 ] || rm -f "$stamp" "$stamp_archive"
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
# The Debian source package $1 unpacked into $2 (fresh); its upstream version in
# $src_version.
src_version=
debian_source() {
    local dsc
    say "fetching $1's Debian source package"
    (cd "$out/download" && { ls "$1"_*.dsc >/dev/null 2>&1 || apt-get source -qq --download-only "$1"; })
    # apt-get checked the files against the signed Sources index; dpkg-source cannot check
    # the .dsc signature without Debian's uploader keys, and says so: that is expected.
    rm -rf "$2"
    dsc=$(ls "$out/download/$1"_*.dsc | head -n1)
    dpkg-source -x "$dsc" "$2" >/dev/null 2>&1
    src_version=${dsc##*/}
    src_version=${src_version#*_}
    src_version=${src_version%.dsc}
    src_version=${src_version%-*}
}

# The answers of a configure's checks in its CMakeCache.txt ($1), as a cmake -C script: every
# internal entry but cmake's own, the "advanced" marks and those naming a path.
seed_of() {
    sed -n -e '/^\(CMAKE_\|_CMAKE\|FIND_PACKAGE_MESSAGE\)/d' -e '/-ADVANCED:INTERNAL=/d' \
        -e 's/^\([A-Za-z0-9_]*\):INTERNAL=\([^/"]*\)$/set(\1 "\2" CACHE INTERNAL "")/p' "$1"
}

# cmake_configure NAME SRC BUILD LOG [ARGS...]: cmake configures NAME (the version
# debian_source unpacked) for mingw with Ninja, its checks answered by NAME's seed when the
# seed was made for this version, compiler and Windows headers. With --reseed every check
# runs and the seed is written from the answers.
cc=x86_64-w64-mingw32-gcc-posix
cmake_configure() {
    local name=$1 src=$2 build=$3 log=$4
    shift 4
    local seed=$seed_dir/cmake-seed-$name.cmake
    local headers
    headers=$(dpkg-query -W -f='${Version}' mingw-w64-x86-64-dev)
    local for="$name $src_version, $cc $($cc -dumpversion), mingw-w64-x86-64-dev $headers"
    local seed_args=()
    if [ $reseed = 1 ]; then
        say "$name: running every configure check (--reseed)"
    elif [ -f "$seed" ] && [ "$(sed -n 's/^# for: //p' "$seed")" = "$for" ]; then
        seed_args=(-C "$seed")
    else
        say "$name: no seed of its checks for $for: every check runs (--reseed writes one)"
    fi
    cmake -G Ninja "${seed_args[@]}" -S "$src" -B "$build" \
        -DCMAKE_TOOLCHAIN_FILE="$out/toolchain.cmake" -DCMAKE_INSTALL_PREFIX="$out/prefix" \
        -DCMAKE_BUILD_TYPE=Release "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
    if [ $reseed = 1 ]; then
        {
            echo "# The answers of $name's cmake configure checks for x86_64-w64-mingw32,"
            echo "# written by tools/win-deps.sh --reseed: given to cmake with -C, they are"
            echo "# not asked again."
            echo "# for: $for"
            seed_of "$build/CMakeCache.txt"
        } >"$seed"
        say "wrote $seed"
    fi
}

cat >"$out/toolchain.cmake" <<CMAKE
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_C_COMPILER $cc)
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
    cmake_configure jansson "$out/src" "$out/build" "$out/cmake.log" \
        -DJANSSON_BUILD_SHARED_LIBS=OFF -DJANSSON_EXAMPLES=OFF -DJANSSON_BUILD_DOCS=OFF \
        -DJANSSON_WITHOUT_TESTS=ON
    cmake --build "$out/build" -j"$(nproc)" >>"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
    cmake --install "$out/build" >>"$out/cmake.log" 2>&1
    touch "$stamp"
    say "jansson ready in $out/prefix"
fi

# libarchive: the agent reads tar, tar in gzip and zip with it (agent/unpack.c) and writes
# them to disk; tests/win/test-unpack.c writes its archives with it. Every optional library,
# crypto backend and tool is off, zlib is the one dependency. Only the sources those programs
# link are compiled (45 of 127: a minute of CPU, not four), named here from the link maps of
# build-win's programs (-Wl,-Map=FILE: the "libarchive.a(NAME.c.obj)" members). A program
# that calls into another source fails to link with "undefined reference to archive_...":
# add that source's name here.
archive_members=(
    archive_acl archive_check_magic archive_cryptor archive_digest archive_entry
    archive_entry_sparse archive_entry_xattr archive_hmac archive_ppmd7 archive_ppmd8
    archive_random archive_rb archive_read archive_read_add_passphrase
    archive_read_open_filename archive_read_support_filter_gzip
    archive_read_support_format_tar archive_read_support_format_zip archive_string
    archive_string_sprintf archive_util archive_virtual archive_windows archive_write
    archive_write_add_filter_gzip archive_write_disk_windows archive_write_open_fd
    archive_write_open_filename archive_write_set_format archive_write_set_format_7zip
    archive_write_set_format_cpio archive_write_set_format_cpio_binary
    archive_write_set_format_cpio_newc archive_write_set_format_cpio_odc
    archive_write_set_format_gnutar archive_write_set_format_iso9660
    archive_write_set_format_mtree archive_write_set_format_pax archive_write_set_format_raw
    archive_write_set_format_shar archive_write_set_format_ustar
    archive_write_set_format_warc archive_write_set_format_xar archive_write_set_format_zip
    archive_write_set_passphrase
)
if [ ! -f "$stamp_archive" ]; then
    a=$out/libarchive
    rm -rf "$a"
    mkdir -p "$a"
    debian_source libarchive "$a/src"
    say "building libarchive for x86_64-w64-mingw32 (tar, zip and gzip)"
    # Debian's static mingw zlib, plain cdecl: said here, as cmake 3.25 crashes on the
    # run-time check libarchive makes of it when cross-compiling.
    z=/usr/x86_64-w64-mingw32/lib/libz.a
    cmake_configure libarchive "$a/src" "$a/build" "$a/cmake.log" \
        -DZLIB_LIBRARY="$z" -DZLIB_WINAPI_WITH_LIB="$z" -DZLIB_WINAPI=OFF -DPOSIX_REGEX_LIB=NONE \
        -DENABLE_ZLIB=ON -DENABLE_OPENSSL=OFF -DENABLE_MBEDTLS=OFF -DENABLE_NETTLE=OFF \
        -DENABLE_CNG=OFF -DENABLE_LIBB2=OFF -DENABLE_LZ4=OFF -DENABLE_LZO=OFF \
        -DENABLE_LZMA=OFF -DENABLE_ZSTD=OFF -DENABLE_BZip2=OFF -DENABLE_LIBXML2=OFF \
        -DENABLE_EXPAT=OFF -DENABLE_PCREPOSIX=OFF -DENABLE_LIBGCC=OFF -DENABLE_ICONV=OFF \
        -DENABLE_XATTR=OFF -DENABLE_ACL=OFF -DENABLE_TAR=OFF -DENABLE_CPIO=OFF \
        -DENABLE_CAT=OFF -DENABLE_TEST=OFF -DENABLE_WERROR=OFF
    objs=("${archive_members[@]/#/libarchive/CMakeFiles/archive_static.dir/}")
    objs=("${objs[@]/%/.c.obj}")
    ninja -C "$a/build" "${objs[@]}" >>"$a/cmake.log" 2>&1 || { cat "$a/cmake.log"; exit 1; }
    rm -f "$a/libarchive.a"
    (cd "$a/build" && x86_64-w64-mingw32-ar rcs "$a/libarchive.a" "${objs[@]}")
    mkdir -p "$out/prefix/include" "$out/prefix/lib/pkgconfig"
    cp "$a/src/libarchive/archive.h" "$a/src/libarchive/archive_entry.h" "$out/prefix/include/"
    cp "$a/libarchive.a" "$out/prefix/lib/libarchive.a"
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
