#!/usr/bin/env bash
# Test certificates for the broker's TLS listener: a self-signed CA, a server certificate and
# a client certificate signed by it. For tests and trials; a plant uses its own CA.
#
#   deploy/make-test-certs.sh [DIR] [NAME...]
#
# DIR defaults to deploy/certs (ignored by git). The server certificate names the host
# "broker" (the compose service), localhost and 127.0.0.1, plus each NAME: the host names or
# IP addresses other machines reach the broker by.
set -euo pipefail
dir=${1:-$(dirname "$0")/certs}
shift || true
days=825

san=""
for name in broker localhost 127.0.0.1 "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

mkdir -p "$dir"
cd "$dir"
umask 077
ssl() {  # quiet unless it fails
  local out
  if ! out=$(openssl "$@" 2>&1); then echo "$out" >&2; return 1; fi
}

ssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=BMS test CA" \
  -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

sign() {  # sign NAME SUBJECT EXTENSIONS
  ssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
  printf '%b' "$3" >"$1.ext"
  ssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt"
  rm -f "$1.csr" "$1.ext"
}
common="basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
sign server "/CN=broker" "${common}keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\n"
sign client "/CN=bms-client" "${common}keyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
rm -f ca.srl
chmod 0644 ca.crt server.crt client.crt

echo "made in $(pwd): ca.crt ca.key server.crt server.key client.crt client.key"
echo "server certificate names: $san"
