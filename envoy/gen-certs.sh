#!/bin/sh
# Create a throwaway DEMO certificate authority and a server certificate for Envoy's private
# (TLS) listener:
#
#   envoy/gen-certs.sh DIR
#
# DIR/ca.pem, DIR/ca.key          demo CA (ECDSA P-256, 30 days) - clients trust ca.pem
# DIR/server.pem, DIR/server.key  server certificate signed by it, SAN:
#                                 localhost, envoy, private.keyward.internal, 127.0.0.1
#
# Does nothing if DIR/server.pem already exists. Demo material only: never commit it (the
# repository's .gitignore excludes *.pem and *.key), never use it in production.
set -eu

fail() {
	printf 'gen-certs.sh: %s\n' "$*" >&2
	exit 1
}

[ $# -eq 1 ] && [ -n "$1" ] || fail "usage: gen-certs.sh DIR"
dir=$1
command -v openssl >/dev/null 2>&1 || fail "the openssl CLI is required"

if [ -e "$dir/server.pem" ]; then
	echo "gen-certs.sh: $dir/server.pem exists, leaving $dir untouched" >&2
	exit 0
fi

mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

days=30
san="DNS:localhost,DNS:envoy,DNS:private.keyward.internal,IP:127.0.0.1"

# Demo CA.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -new -x509 -sha256 -days "$days" -key "$work/ca.key" -out "$work/ca.pem" \
	-subj "/O=keyward demo/CN=keyward demo CA (throwaway)" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-addext "subjectKeyIdentifier=hash"

# Server key, CSR and certificate.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
openssl req -new -sha256 -key "$work/server.key" -out "$work/server.csr" \
	-subj "/O=keyward demo/CN=private.keyward.internal"
cat >"$work/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl x509 -req -sha256 -days "$days" -in "$work/server.csr" \
	-CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
	-extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null

openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null

# Keys private (0600), certificates world-readable; server.pem last, as the "done" marker.
for f in ca.key server.key; do
	cp "$work/$f" "$dir/$f"
	chmod 600 "$dir/$f"
done
for f in ca.pem server.pem; do
	cp "$work/$f" "$dir/$f"
	chmod 644 "$dir/$f"
done
echo "gen-certs.sh: wrote demo CA and server certificate to $dir" >&2
