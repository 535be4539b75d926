#!/usr/bin/env bash
# tools/gen-certs.sh DIR [NAME...]: a development CA and a server certificate signed by
# it, ECDSA P-256, valid for localhost, 127.0.0.1, ::1 and the extra NAMEs. Writes
#   DIR/ca.pem  DIR/ca.key  DIR/server.pem (leaf + CA)  DIR/server.key
# Keeps an existing CA and certificate. For development and tests only.
set -euo pipefail
dir=$1
shift
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"
if [ ! -f ca.pem ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.pem -days 3650 -subj "/CN=orch development CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    rm -f server.pem
fi
if [ ! -f server.pem ]; then
    san="DNS:localhost,IP:127.0.0.1,IP:::1"
    for n in "$@"; do san="$san,DNS:$n"; done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
        -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt \
        -days 825 -sha256 -extfile server.ext 2>/dev/null
    cat server.crt ca.pem >server.pem
    rm -f server.csr server.ext server.crt ca.srl
fi
chmod 600 ca.key server.key
