#!/bin/sh
# Create a throwaway DEMO certificate authority and the certificates the demo, compose and the
# tests use:
#
#   envoy/gen-certs.sh DIR
#
# DIR/ca.pem, DIR/ca.key                  demo CA (ECDSA P-256, 30 days) - clients trust ca.pem
# DIR/server.pem, DIR/server.key          Envoy's private (TLS) listener, SAN:
#                                         localhost, envoy, private.keyward.internal, 127.0.0.1
# DIR/keyward.pem, DIR/keyward.key        keyward's Check and admin listeners, SAN:
#                                         keyward, localhost, 127.0.0.1
# DIR/envoy-client.pem, .key              Envoy's client certificate towards keyward's Check
#                                         listener (mutual TLS)
# DIR/cli-client.pem, .key                the keyward CLI's client certificate, for an admin API
#                                         that asks for one
#
# Each missing pair is created and signed by DIR's CA (created first when missing); pairs that
# exist are left alone, so the script is idempotent. Demo material only: never commit it (the
# repository's .gitignore excludes *.pem and *.key), never use it in production.
set -eu

fail() {
	printf 'gen-certs.sh: %s\n' "$*" >&2
	exit 1
}

[ $# -eq 1 ] && [ -n "$1" ] || fail "usage: gen-certs.sh DIR"
dir=$1
command -v openssl >/dev/null 2>&1 || fail "the openssl CLI is required"

mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

days=30

# Copies NAME.key (0600) then NAME.pem (0644) from the work dir into DIR: the .pem last, as the
# "done" marker.
install_pair() {
	cp "$work/$1.key" "$dir/$1.key"
	chmod 600 "$dir/$1.key"
	cp "$work/$1.pem" "$dir/$1.pem"
	chmod 644 "$dir/$1.pem"
}

if [ ! -e "$dir/ca.pem" ]; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
	openssl req -new -x509 -sha256 -days "$days" -key "$work/ca.key" -out "$work/ca.pem" \
		-subj "/O=keyward demo/CN=keyward demo CA (throwaway)" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash"
	install_pair ca
fi
[ -r "$dir/ca.key" ] || fail "$dir/ca.pem exists but $dir/ca.key does not: cannot sign new certificates"

# issue NAME CN USAGE SAN: a key and a certificate signed by the demo CA.
issue() {
	name=$1 cn=$2 usage=$3 san=$4
	[ -e "$dir/$name.pem" ] && return 0
	openssl ecparam -name prime256v1 -genkey -noout -out "$work/$name.key"
	openssl req -new -sha256 -key "$work/$name.key" -out "$work/$name.csr" \
		-subj "/O=keyward demo/CN=$cn"
	{
		echo "basicConstraints = critical, CA:FALSE"
		echo "keyUsage = critical, digitalSignature"
		echo "extendedKeyUsage = $usage"
		[ -n "$san" ] && echo "subjectAltName = $san"
		echo "subjectKeyIdentifier = hash"
		echo "authorityKeyIdentifier = keyid"
	} >"$work/$name.ext"
	openssl x509 -req -sha256 -days "$days" -in "$work/$name.csr" \
		-CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -CAserial "$work/ca.srl" \
		-extfile "$work/$name.ext" -out "$work/$name.pem" 2>/dev/null
	openssl verify -CAfile "$dir/ca.pem" "$work/$name.pem" >/dev/null
	install_pair "$name"
	echo "gen-certs.sh: wrote $dir/$name.pem" >&2
}

issue server private.keyward.internal serverAuth \
	"DNS:localhost,DNS:envoy,DNS:private.keyward.internal,IP:127.0.0.1"
issue keyward keyward serverAuth "DNS:keyward,DNS:localhost,IP:127.0.0.1"
issue envoy-client envoy clientAuth ""
issue cli-client keyward-cli clientAuth ""
