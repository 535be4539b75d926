#!/usr/bin/env bash
# pkg-upload.sh: upload a package archive of any size (up to orchd's packages.max_bytes) in
# parts, resuming where orchd says after a broken connection (docs/packages.md, "Storage
# and upload").
#
#   ORCH=https://orch.example.com TOKEN=<access token> [CA=ca.pem] [PART_MIB=8] \
#       tools/pkg-upload.sh FILE NAME VERSION [ENTRYPOINT]
#
# Prints the package (JSON) on success. Run it again with UPLOAD=<session id> to go on
# with a session an earlier run left unfinished. Needs curl, sha256sum, stat, dd, sed.
set -euo pipefail

usage() {
    echo "usage: ORCH=URL TOKEN=T [CA=ca.pem] [PART_MIB=8] [UPLOAD=id] $0 FILE NAME VERSION [ENTRYPOINT]" >&2
    exit 2
}
[ $# -ge 3 ] && [ $# -le 4 ] || usage
: "${ORCH:?set ORCH to the base URL of orchd}" "${TOKEN:?set TOKEN to an access token}"
file=$1 name=$2 version=$3 entry=${4:-}
part_mib=${PART_MIB:-8}
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 2; }
case $part_mib in [1-8]) ;; *) echo "PART_MIB must be 1 to 8" >&2; exit 2 ;; esac

curl_args=(-sS --fail-with-body -H "Authorization: Bearer $TOKEN")
[ -n "${CA:-}" ] && curl_args+=(--cacert "$CA")
api() { curl "${curl_args[@]}" "$@"; }

size=$(stat -c %s "$file")
sha=$(sha256sum "$file" | cut -c1-64)
# A member of orchd's JSON answer (a string or a number; names and versions hold no quotes).
member() { sed -n 's/.*"'"$1"'":"\{0,1\}\([^",}]*\).*/\1/p'; }
for v in "$name" "$version" "$entry"; do
    case $v in *[!A-Za-z0-9_.+/-]*) echo "invalid name, version or entrypoint: $v" >&2; exit 2 ;; esac
done

id=${UPLOAD:-}
if [ -z "$id" ]; then
    ep=
    [ -n "$entry" ] && ep=",\"entrypoint\":\"$entry\""
    body="{\"name\":\"$name\",\"version\":\"$version\",\"size_bytes\":$size,\"sha256\":\"$sha\"$ep}"
    id=$(api -H 'Content-Type: application/json' -d "$body" "$ORCH/api/v1/packages/uploads" |
        member id)
    echo "upload session $id: $size bytes" >&2
fi

part=$((part_mib * 1024 * 1024))
tries=0
while :; do
    # Where orchd is: the parts it has are never sent again.
    offset=$(api "$ORCH/api/v1/packages/uploads/$id" | member offset)
    [ "$offset" -ge "$size" ] && break
    # Parts start on a multiple of the part size unless orchd is elsewhere: dd takes the
    # offset in bytes (iflag=skip_bytes,count_bytes).
    if dd if="$file" iflag=skip_bytes,count_bytes skip="$offset" count="$part" status=none |
        api -X PATCH -H "Upload-Offset: $offset" \
            -H 'Content-Type: application/offset+octet-stream' --data-binary @- \
            "$ORCH/api/v1/packages/uploads/$id" >/dev/null; then
        tries=0
    else
        tries=$((tries + 1))
        [ "$tries" -le 5 ] || { echo "giving up; resume with UPLOAD=$id" >&2; exit 1; }
        echo "part at $offset failed; retrying ($tries/5)" >&2
        sleep "$tries"
    fi
done
api -X POST "$ORCH/api/v1/packages/uploads/$id/commit"
echo
