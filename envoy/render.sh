#!/bin/sh
# Render the keyward Envoy bootstrap template to stdout.
#
#   CERT_DIR=/certs [LISTEN_HOST=0.0.0.0 ...] envoy/render.sh > envoy.yaml
#   CERT_DIR=/certs RATE_LIMIT_PER_CLIENT_RPS=50 envoy/render.sh > envoy.yaml   # + rate limit
#   CERT_DIR=/certs ENCODE_RAW_HEADERS=true envoy/render.sh > envoy.yaml         # header_map
#   CERT_DIR=/certs KEYWARD_TLS=mtls envoy/render.sh > envoy.yaml               # mTLS to keyward
#   CERT_DIR=/certs KEYWARD_MODULE=on KEYWARD_MODULE_PATH=/lib/libkeyward_envoy_module.so \
#     envoy/render.sh > envoy.yaml                                              # + the module
#
# Every {{NAME}} placeholder in the template is replaced by the environment variable NAME
# (defaults below; CERT_DIR has none). The template is envoy.yaml.tmpl next to this script,
# or $ENVOY_TEMPLATE. Fails if a placeholder is left unrendered.
#
# POSIX sh + sed only: it runs inside the official envoyproxy/envoy image.
set -eu

prog=render.sh
fail() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
template=${ENVOY_TEMPLATE:-$here/envoy.yaml.tmpl}
[ -r "$template" ] || fail "template not found or unreadable: $template"

[ -n "${CERT_DIR:-}" ] || fail "CERT_DIR is not set (directory holding server.pem and server.key for the private TLS listener)"

: "${LISTEN_HOST:=127.0.0.1}"
: "${ADMIN_HOST:=127.0.0.1}"
: "${PUBLIC_PORT:=8080}"
: "${PRIVATE_PORT:=8443}"
: "${ADMIN_PORT:=9901}"
: "${KEYWARD_HOST:=127.0.0.1}"
: "${KEYWARD_PORT:=9191}"
: "${BACKEND_HOST:=127.0.0.1}"
# Several keyward replicas: KEYWARD_ADDRS="host1:port1,host2:port2" (default: the one above).
: "${KEYWARD_ADDRS:=$KEYWARD_HOST:$KEYWARD_PORT}"
: "${BACKEND_PORT:=8000}"

for name in PUBLIC_PORT PRIVATE_PORT ADMIN_PORT KEYWARD_PORT BACKEND_PORT; do
	eval "value=\$$name"
	case $value in
	'' | *[!0-9]*) fail "$name must be a port number, got '$value'" ;;
	esac
done

newline='
'

# KEYWARD_ADDRS as a one-line YAML flow sequence of Envoy lb_endpoints.
KEYWARD_ENDPOINTS=
for addr in $(printf '%s' "$KEYWARD_ADDRS" | tr ',' ' '); do
	host=${addr%:*}
	port=${addr##*:}
	case $port in
	'' | *[!0-9]*) fail "KEYWARD_ADDRS: '$addr' is not HOST:PORT" ;;
	esac
	[ -n "$host" ] && [ "$host" != "$addr" ] || fail "KEYWARD_ADDRS: '$addr' is not HOST:PORT"
	entry="{endpoint: {address: {socket_address: {address: \"$host\", port_value: $port}}}}"
	KEYWARD_ENDPOINTS="${KEYWARD_ENDPOINTS:+$KEYWARD_ENDPOINTS, }$entry"
done
[ -n "$KEYWARD_ENDPOINTS" ] || fail "KEYWARD_ADDRS is empty"
KEYWARD_ENDPOINTS="[$KEYWARD_ENDPOINTS]"
# Opt-in per-client rate limit in front of ext_authz (requests per second per client address;
# empty or 0 = off, the default: behind a load balancer every client shares one address).
# The burst (bucket size) defaults to one second's worth.
: "${RATE_LIMIT_PER_CLIENT_RPS:=}"
case ${RATE_LIMIT_PER_CLIENT_RPS:-0} in
*[!0-9]*) fail "RATE_LIMIT_PER_CLIENT_RPS must be a whole number of requests per second (empty or 0 = off), got '$RATE_LIMIT_PER_CLIENT_RPS'" ;;
esac
# Leading zeros and all: 0, 00 ... mean off.
if [ "$(printf '%s' "${RATE_LIMIT_PER_CLIENT_RPS:-0}" | sed 's/^0*//')" = "" ]; then
	RATE_LIMIT_PER_CLIENT_RPS=
	RATE_LIMIT_PER_CLIENT_BURST=
	rate_limit_block='/# BEGIN RATE_LIMIT_PER_CLIENT/,/# END RATE_LIMIT_PER_CLIENT/d'
else
	RATE_LIMIT_PER_CLIENT_RPS=$(printf '%s' "$RATE_LIMIT_PER_CLIENT_RPS" | sed 's/^0*//')
	: "${RATE_LIMIT_PER_CLIENT_BURST:=$RATE_LIMIT_PER_CLIENT_RPS}"
	case $RATE_LIMIT_PER_CLIENT_BURST in
	'' | *[!0-9]* | 0*) fail "RATE_LIMIT_PER_CLIENT_BURST must be a whole number above 0, got '$RATE_LIMIT_PER_CLIENT_BURST'" ;;
	esac
	rate_limit_block=
fi

# ext_authz's encode_raw_headers: true or false (the default, as Envoy's).
: "${ENCODE_RAW_HEADERS:=false}"
case $ENCODE_RAW_HEADERS in
true | false) ;;
*) fail "ENCODE_RAW_HEADERS must be true or false, got '$ENCODE_RAW_HEADERS'" ;;
esac

# Envoy -> keyward: off (plaintext, the default), tls (verify keyward's certificate) or mtls
# (and present Envoy's client certificate). Certificates default to envoy/gen-certs.sh's names.
: "${KEYWARD_TLS:=off}"
: "${KEYWARD_TLS_SNI:=keyward}"
: "${KEYWARD_TLS_CA:=$CERT_DIR/ca.pem}"
: "${KEYWARD_TLS_CLIENT_CERT:=$CERT_DIR/envoy-client.pem}"
: "${KEYWARD_TLS_CLIENT_KEY:=$CERT_DIR/envoy-client.key}"
case $KEYWARD_TLS in
off)
	tls_block='/# BEGIN KEYWARD_TLS/,/# END KEYWARD_TLS/d'
	;;
tls)
	tls_block='/# BEGIN KEYWARD_MTLS/,/# END KEYWARD_MTLS/d;/# BEGIN KEYWARD_TLS/d;/# END KEYWARD_TLS/d'
	;;
mtls)
	tls_block='/# BEGIN KEYWARD_MTLS/d;/# END KEYWARD_MTLS/d;/# BEGIN KEYWARD_TLS/d;/# END KEYWARD_TLS/d'
	;;
*) fail "KEYWARD_TLS must be off, tls or mtls, got '$KEYWARD_TLS'" ;;
esac
case $KEYWARD_TLS_SNI in
'' | *[!A-Za-z0-9.-]*) fail "KEYWARD_TLS_SNI must be a DNS name, got '$KEYWARD_TLS_SNI'" ;;
esac

# keyward's dynamic-module filter before ext_authz: off (the default) or on. With on,
# KEYWARD_MODULE_PATH is the built module (cargo build --release -p keyward-envoy-module:
# target/release/libkeyward_envoy_module.so), and the feed timings may be tuned (milliseconds:
# how long keyward holds a poll, how long after the last answer hits are still served).
: "${KEYWARD_MODULE:=off}"
: "${KEYWARD_MODULE_PATH:=/usr/local/lib/libkeyward_envoy_module.so}"
: "${KEYWARD_MODULE_FEED_WAIT_MS:=1000}"
: "${KEYWARD_MODULE_FEED_STALE_MS:=1500}"
: "${KEYWARD_MODULE_MAX_TTL_MS:=60000}"
case $KEYWARD_MODULE in
off) module_block='/# BEGIN KEYWARD_MODULE/,/# END KEYWARD_MODULE/d' ;;
on) module_block='/# BEGIN KEYWARD_MODULE/d;/# END KEYWARD_MODULE/d' ;;
*) fail "KEYWARD_MODULE must be off or on, got '$KEYWARD_MODULE'" ;;
esac
for name in KEYWARD_MODULE_FEED_WAIT_MS KEYWARD_MODULE_FEED_STALE_MS KEYWARD_MODULE_MAX_TTL_MS; do
	eval "value=\$$name"
	case $value in
	'' | *[!0-9]*) fail "$name must be a whole number of milliseconds, got '$value'" ;;
	esac
done
[ "$KEYWARD_MODULE_FEED_STALE_MS" -gt "$KEYWARD_MODULE_FEED_WAIT_MS" ] ||
	fail "KEYWARD_MODULE_FEED_STALE_MS must be above KEYWARD_MODULE_FEED_WAIT_MS"
case $KEYWARD_MODULE_PATH in
/*) ;;
*) fail "KEYWARD_MODULE_PATH must be an absolute path, got '$KEYWARD_MODULE_PATH'" ;;
esac

# How long Envoy waits for keyward's decision before failing closed (503). Keep it short in
# production (a cached key is decided in microseconds; a new key's first argon2 check in ~10 ms
# on an idle core): it bounds what a stalled keyward costs each request.
: "${EXT_AUTHZ_TIMEOUT:=0.5s}"
timeout_ok=$(printf '%s' "$EXT_AUTHZ_TIMEOUT" | sed -n -e '/^[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}s$/p' -e '/^[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}ms$/p')
[ -n "$timeout_ok" ] || fail "EXT_AUTHZ_TIMEOUT must be a duration such as 0.5s or 250ms, got '$EXT_AUTHZ_TIMEOUT'"
# The module's own Check (on the routes it serves) waits as long, in whole milliseconds (at least 1).
KEYWARD_MODULE_CHECK_TIMEOUT_MS=$(printf '%s' "$EXT_AUTHZ_TIMEOUT" | awk '{ if (sub(/ms$/, "")) ms = $0 + 0; else { sub(/s$/, ""); ms = $0 * 1000 } ms = int(ms); if (ms < 1) ms = 1; print ms }')

# Escape a value for the replacement side of a sed s||| command.
escape() {
	printf '%s' "$1" | sed 's/[\\|&]/\\&/g'
}

script=
for name in LISTEN_HOST ADMIN_HOST PUBLIC_PORT PRIVATE_PORT ADMIN_PORT \
	KEYWARD_ENDPOINTS BACKEND_HOST BACKEND_PORT CERT_DIR \
	RATE_LIMIT_PER_CLIENT_RPS RATE_LIMIT_PER_CLIENT_BURST ENCODE_RAW_HEADERS \
	KEYWARD_TLS_SNI KEYWARD_TLS_CA KEYWARD_TLS_CLIENT_CERT KEYWARD_TLS_CLIENT_KEY \
	KEYWARD_MODULE_PATH KEYWARD_MODULE_FEED_WAIT_MS KEYWARD_MODULE_FEED_STALE_MS \
	KEYWARD_MODULE_MAX_TTL_MS KEYWARD_MODULE_CHECK_TIMEOUT_MS EXT_AUTHZ_TIMEOUT; do
	eval "value=\$$name"
	case $value in
	*"$newline"*) fail "$name must not contain a newline" ;;
	esac
	script="${script}s|{{$name}}|$(escape "$value")|g$newline"
done

rendered=$(sed -e "$rate_limit_block" -e "$tls_block" -e "$module_block" -e "$script" "$template") || fail "sed failed on $template"

left=$(printf '%s\n' "$rendered" | sed -n 's/.*\({{[^}]*}}\).*/\1/p')
if [ -n "$left" ]; then
	fail "unrendered placeholder(s) in $template:$newline$left"
fi

printf '%s\n' "$rendered"
