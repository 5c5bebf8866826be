#!/usr/bin/env bash
# Valid keys' latency through Envoy -> keyward while one client floods wrong secrets, with and
# without Envoy's per-client rate limit in front of ext_authz (the filter envoy/render.sh adds
# with RATE_LIMIT_PER_CLIENT_RPS). One command, interleaved rounds, medians:
#
#   ENVOY_BIN=/path/to/envoy bench/flood_envoy.sh      # ~3 minutes on 2 cores
#
# Environment (defaults in brackets): ENVOY_BIN [.tools/venv/bin/envoy], ROUNDS [3],
# DURATION [5] seconds per run, CONNECTIONS [32] valid wrk connections, FLOOD [128] flood wrk
# connections, FLOOD_PAUSE_MS [10] pause of each flood connection between requests (so the
# flood offers at most FLOOD * 1000 / FLOOD_PAUSE_MS requests a second, limit or not: a flood
# at full speed on the same two cores would just take whatever CPU the limit frees; 0 = full
# speed), RATE_LIMIT_RPS [100] per client, PORT_BASE [29180] (PORT_BASE..+12 free).
#
# Client identities: on loopback every connection comes from 127.0.0.1, so the bench Envoy
# (bench/envoy/flood.yaml.tmpl) takes the client from X-Forwarded-For, as an Envoy behind a
# trusted load balancer would; the valid load (bench/lua/valid_clients.lua) spreads its requests
# over 10 000 addresses (a few requests a second each, under the limit),
# the flood (bench/lua/flood.lua) is one address sending a fresh wrong secret each request.
#
# Scenarios: valid alone | valid + flood | valid + flood, rate limit on | valid alone, rate limit
# on (the filter's own cost). Each line also shows the Checks Envoy sent keyward a second.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
FLOOD=${FLOOD:-128}
FLOOD_PAUSE_MS=${FLOOD_PAUSE_MS:-10}
RATE_LIMIT_RPS=${RATE_LIMIT_RPS:-100}
PORT_BASE=${PORT_BASE:-29180}
source bench/tools.sh # Envoy and wrk, installed when missing
case $RATE_LIMIT_RPS in '' | *[!0-9]* | 0) echo "RATE_LIMIT_RPS must be a number above 0" >&2; exit 1 ;; esac

port_open=$PORT_BASE port_limited=$((PORT_BASE + 1)) port_envoy_admin=$((PORT_BASE + 2))
port_check=$((PORT_BASE + 10)) port_admin=$((PORT_BASE + 11)) port_health=$((PORT_BASE + 12))

echo "== building (release)"
cargo build --release --quiet --bin keyward --example bench_seed
bin=${CARGO_TARGET_DIR:-target}/release

source bench/lib.sh # work, pids (stopped on exit), wait_for

echo "== seeding 64 keys (argon2id default parameters) and 200 000 wrong-secret tokens"
"$bin/examples/bench_seed" --database "$work/kw.db" --keys 64 --tokens-out "$work/tokens.txt" \
	--wrong-out "$work/wrong.txt" --wrong 200000
token=$(head -n1 "$work/tokens.txt")

echo "== starting keyward and Envoy"
KEYWARD_DATABASE_URL="sqlite://$work/kw.db" KEYWARD_CHECK_ADDR="127.0.0.1:$port_check" \
	KEYWARD_ADMIN_ADDR="127.0.0.1:$port_admin" KEYWARD_HEALTH_ADDR="127.0.0.1:$port_health" \
	KEYWARD_LOG=${KEYWARD_LOG:-info} "$bin/keyward" serve 2>"$work/keyward.log" &
pids+=($!)
sed -e "s|{{ADMIN}}|$port_envoy_admin|; s|{{OPEN}}|$port_open|; s|{{LIMITED}}|$port_limited|" \
	-e "s|{{KEYWARD_PORT}}|$port_check|; s|{{RATE_LIMIT_RPS}}|$RATE_LIMIT_RPS|g" \
	bench/envoy/flood.yaml.tmpl >"$work/envoy.yaml"
! grep -n '{{' "$work/envoy.yaml" || { echo "unrendered placeholder" >&2; exit 1; }
"$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn \
	>"$work/envoy.log" 2>&1 &
pids+=($!)
wait_for "keyward" curl -sf "http://127.0.0.1:$port_health/readyz"
wait_for "Envoy" curl -sf "http://127.0.0.1:$port_envoy_admin/ready"

stat() { curl -s "http://127.0.0.1:$port_envoy_admin/stats" | awk -v n="$1:" '$1 == n { v = $2 } END { print v + 0 }'; }
to_us='function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }'
run() { # run LABEL PORT FLOOD?
	local out flood_out="" c0 c1 l0 l1 flood_pid=""
	c0=$(stat cluster.keyward.upstream_rq_total) l0=$(stat per_client.http_local_rate_limit.rate_limited)
	if [ "${3:-}" = flood ]; then
		wrk -t1 -c"$FLOOD" -d"$((DURATION + 1))s" -H "user-agent: flood/1.0" \
			-s bench/lua/flood.lua "http://127.0.0.1:$2/v1/chat/completions" -- "$work/wrong.txt" "$FLOOD_PAUSE_MS" \
			>"$work/flood.out" &
		flood_pid=$!
	fi
	out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "x-api-key: $token" \
		-H "user-agent: openai-python/1.40.0" -H "content-type: application/json" \
		-s bench/lua/valid_clients.lua "http://127.0.0.1:$2/v1/chat/completions")
	c1=$(stat cluster.keyward.upstream_rq_total) l1=$(stat per_client.http_local_rate_limit.rate_limited)
	if [ -n "$flood_pid" ]; then
		wait "$flood_pid"
		flood_out=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$work/flood.out")
	fi
	echo "$out" | awk -v label="$1" -v checks=$((c1 - c0)) -v limited=$((l1 - l0)) \
		-v dur="$DURATION" -v flood="${flood_out:-0}" "$to_us"'
		/^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
		/Non-2xx/ { bad = $NF }
		END { printf "RESULT label=%s rps=%.0f p50_us=%.1f p99_us=%.1f non2xx=%d flood_rps=%d checks_per_s=%.0f rate_limited_per_s=%.0f\n",
		             label, rps, p50, p99, bad, flood, checks / dur, limited / dur }' |
		tee -a "$work/results.txt"
}

echo "== warming keyward's caches (every key verified once through Envoy)"
# Through the open listener only: keyward's caches are shared, and these come from one client.
while read -r t; do
	curl -sf -o /dev/null -H "x-api-key: $t" "http://127.0.0.1:$port_open/"
done <"$work/tokens.txt"
for port in $port_open $port_limited; do
	wrk -t1 -c"$CONNECTIONS" -d1s -H "x-api-key: $token" -s bench/lua/valid_clients.lua \
		"http://127.0.0.1:$port/" >/dev/null
done

runs=(
	"run valid_alone $port_open"
	"run valid_with_flood $port_open flood"
	"run valid_with_flood_rate_limited $port_limited flood"
	"run valid_alone_rate_limited $port_limited"
)
for round in $(seq "$ROUNDS"); do
	echo "== round $round/$ROUNDS"
	for i in "${!runs[@]}"; do
		${runs[$(((i + round - 1) % ${#runs[@]}))]}
	done
done

field() {
	awk -v label="$1" -v name="$2" '$2 == "label=" label {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) print kv[2] } }' \
		"$work/results.txt" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "rounds: $ROUNDS x ${DURATION}s (medians); flood: $FLOOD connections, ${FLOOD_PAUSE_MS} ms pause; limit: $RATE_LIMIT_RPS/s per client"
printf '\n%-32s %9s %8s %8s %7s %9s %9s %9s %8s\n' scenario "req/s" "p50 µs" "p99 µs" non2xx \
	"flood/s" "checks/s" "429/s" "p99/ref"
for label in valid_alone valid_with_flood valid_with_flood_rate_limited valid_alone_rate_limited; do
	printf '%-32s %9s %8s %8s %7s %9s %9s %9s %8s\n' "$label" "$(field "$label" rps)" \
		"$(field "$label" p50_us)" "$(field "$label" p99_us)" "$(field "$label" non2xx)" \
		"$(field "$label" flood_rps)" "$(field "$label" checks_per_s)" \
		"$(field "$label" rate_limited_per_s)" "$(ratio "$(field "$label" p99_us)" "$(field valid_alone p99_us)")"
done
echo "(non2xx is the valid traffic's; p99/ref is to valid_alone; checks/s are all Checks Envoy sent keyward, valid and flood)"
