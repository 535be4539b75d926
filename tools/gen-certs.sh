#!/usr/bin/env bash
# tools/gen-certs.sh DIR [NAME...]: a development CA and a server certificate signed by
# it, ECDSA P-256, valid for localhost, 127.0.0.1, ::1 and the extra NAMEs. Writes
#   DIR/ca.pem  DIR/ca.key  DIR/server.pem (leaf + CA)  DIR/server.key
# Keeps an existing CA and certificate. For development and tests only.
#
# Every signature made here has r and s of the full 32 bytes. Wine's crypt32 (the Windows
# agent's tests run under it) turns a DER ECDSA signature into r||s without padding, so a
# signature whose r or s has a leading zero byte (about 1 in 128) fails to verify there:
# "chain status 0x8", CERT_TRUST_IS_NOT_SIGNATURE_VALID. Such a certificate is made again.
set -euo pipefail

# full_sig CERT: true if both integers of CERT's ECDSA signature are 32 bytes long.
full_sig() {
    local off
    off=$(openssl asn1parse -in "$1" | awk -F: '/BIT STRING/ { o = $1 } END { print o + 0 }')
    openssl asn1parse -in "$1" -strparse "$off" |
        awk -F: '/INTEGER/ { n++; if (length($NF) != 64) bad = 1 } END { exit !(n == 2 && !bad) }'
}
dir=$1
shift
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
if [ ! -f ca.pem ]; then
    for _ in 1 2 3 4 5 6 7 8; do
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.pem -days 3650 -subj "/CN=orch development CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        full_sig ca.pem && break
    done
    rm -f server.pem
fi
if [ ! -f server.pem ]; then
    san="DNS:localhost,IP:127.0.0.1,IP:::1"
    for n in "$@"; do san="$san,DNS:$n"; done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
        -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" >server.ext
    for _ in 1 2 3 4 5 6 7 8; do
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.crt -days 825 -sha256 -extfile server.ext 2>/dev/null
        full_sig server.crt && break
    done
    cat server.crt ca.pem >server.pem
    rm -f server.csr server.ext server.crt ca.srl
fi
chmod 600 ca.key server.key
