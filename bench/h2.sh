#!/usr/bin/env bash
# HTTP/2 and ext_authz client settings between Envoy and the Check server, A/B in one run: every
# variant is a listener of one Envoy (bench/envoy/h2.yaml.tmpl) or of a second Envoy that differs
# only by a runtime flag, measured with the same wrk load in interleaved rounds; prints every
# run, then medians, Envoy's and the Check server's CPU per request, and ratios to the baseline.
#
#   ENVOY_BIN=/path/to/envoy bench/h2.sh          # ~6 minutes on 2 cores
#   ROUNDS=5 DURATION=10 bench/h2.sh
#   ONLY="base win64k" ROUNDS=8 bench/h2.sh        # a focused A/B of some scenarios
#
# Environment (defaults in brackets): ENVOY_BIN [.tools/venv/bin/envoy], ROUNDS [3],
# DURATION [5] seconds per run, CONNECTIONS [32] wrk connections, CONCURRENCY [32] in-flight
# gRPC requests, PORT_BASE [29080] (loopback ports PORT_BASE..PORT_BASE+44 must be free),
# ONLY [all] the scenario names to run (base is always run: it is the reference).
#
# Noise: on shared cores whole rounds run slower or faster, so besides the medians the table
# shows the median of per-round ratios (variant / reference measured in the same round).
#
# Scenarios (HTTP through Envoy to a direct_response route, ext_authz in front):
#   base         envoy_grpc -> keyward over TCP, http2_protocol_options {} (envoy/envoy.yaml.tmpl)
#   win64k       Envoy's upstream HTTP/2 windows 64 KiB / 1 MiB instead of 256 MiB / 256 MiB
#   mcs8 / mcs1  Envoy's max_concurrent_streams 8 / 1 toward keyward: more upstream connections
#   google_grpc  the gRPC C++ client instead of Envoy's async client
#   lean         ext_authz charge_cluster_response_stats: false
#   oghttp2      base on a second Envoy with envoy.reloadable_features.http2_use_oghttp2 = true
#                (1.40's default codec is nghttp2)
#   noop / noop_adapt  the no-op Check server with keyward's tonic settings / plus
#                http2_adaptive_window (the tonic server option), through Envoy and direct gRPC
#   noauth       no ext_authz (the floor)
#   nostats      base with the cluster's and listener's stats rejected (stats_matcher)
#   retry        base with envoy/envoy.yaml.tmpl's grpc_service retry_policy
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
CONCURRENCY=${CONCURRENCY:-32}
PORT_BASE=${PORT_BASE:-29080}
source bench/tools.sh # Envoy and wrk, installed when missing

p() { echo $((PORT_BASE + $1)); }
port_check=$(p 40) port_admin=$(p 41) port_health=$(p 42) port_noop=$(p 43) port_noop_adapt=$(p 44)

echo "== building (release)"
cargo build --release --quiet --bin keyward --example bench_seed --example noop_ext_authz \
	--example check_load
bin=${CARGO_TARGET_DIR:-target}/release

source bench/lib.sh # work, pids (stopped on exit), wait_for

echo "== seeding 64 keys (argon2id default parameters)"
"$bin/examples/bench_seed" --database "$work/kw.db" --keys 64 --tokens-out "$work/tokens.txt"
token=$(head -n1 "$work/tokens.txt")

echo "== starting keyward, two no-op servers and two Envoys"
KEYWARD_DATABASE_URL="sqlite://$work/kw.db" KEYWARD_CHECK_ADDR="127.0.0.1:$port_check" \
	KEYWARD_ADMIN_ADDR="127.0.0.1:$port_admin" KEYWARD_HEALTH_ADDR="127.0.0.1:$port_health" \
	KEYWARD_LOG=${KEYWARD_LOG:-info} "$bin/keyward" serve 2>"$work/keyward.log" &
pids+=($!)
keyward_pid=$!
"$bin/examples/noop_ext_authz" --listen "127.0.0.1:$port_noop" >"$work/noop.log" 2>&1 &
pids+=($!)
noop_pid=$!
"$bin/examples/noop_ext_authz" --listen "127.0.0.1:$port_noop_adapt" --adaptive-window \
	>"$work/noop_adapt.log" 2>&1 &
pids+=($!)
noop_adapt_pid=$!
render() { # render OFFSET RUNTIME > FILE
	local i script=""
	for i in 10 0 1 2 3 4 5 6 7 8 9; do script="${script}s|{{L$i}}|$(p $(($1 + i)))|g;"; done
	sed -e "$script" -e "s|{{ADMIN}}|$(p $(($1 + 19)))|; s|{{KEYWARD_PORT}}|$port_check|g" \
		-e "s|{{NOOP_PORT}}|$port_noop|; s|{{NOOP_ADAPT_PORT}}|$port_noop_adapt|" \
		-e "s|{{OG_RUNTIME}}|$2|" bench/envoy/h2.yaml.tmpl
}
render 0 '{}' >"$work/envoy.yaml"
render 20 '{ envoy.reloadable_features.http2_use_oghttp2: true }' >"$work/envoy_og.yaml"
! grep -n '{{' "$work/envoy.yaml" "$work/envoy_og.yaml" || { echo "unrendered placeholder" >&2; exit 1; }
for config in envoy envoy_og; do
	"$ENVOY_BIN" -c "$work/$config.yaml" --concurrency 2 --disable-hot-restart --log-level warn \
		--base-id-path "$work/$config.base-id" --use-dynamic-base-id >"$work/$config.log" 2>&1 &
	pids+=($!)
done
envoy_pid=${pids[-2]} envoy_og_pid=${pids[-1]}
wait_for "keyward" curl -sf "http://127.0.0.1:$port_health/readyz"
wait_for "the no-op servers" grep -q listening "$work/noop.log" "$work/noop_adapt.log"
wait_for "Envoy" curl -sf "http://127.0.0.1:$(p 19)/ready"
wait_for "Envoy (oghttp2)" curl -sf "http://127.0.0.1:$(p 39)/ready"

to_us='function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }'
tick_us=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
sys_ticks() { awk '{ print $15 }' "/proc/$1/stat"; } # kernel time only (syscalls, loopback TCP)
http() { # http LABEL PORT ENVOY_PID SERVER_PID
	local out e0 s0 k0 e1 s1 k1 server=${4:-}
	e0=$(cpu_ticks "$3") k0=$(sys_ticks "$3") s0=${server:+$(cpu_ticks "$server")}
	out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "x-api-key: $token" \
		-H "user-agent: openai-python/1.40.0" -H "content-type: application/json" \
		-H "accept: application/json" -H "x-request-id: 0f8fad5b-d9cb-469f-a165-70867728950e" \
		-H "x-stainless-lang: python" -H "x-stainless-package-version: 1.40.0" \
		"http://127.0.0.1:$2/v1/chat/completions")
	e1=$(cpu_ticks "$3") k1=$(sys_ticks "$3") s1=${server:+$(cpu_ticks "$server")}
	echo "$out" | awk -v label="$1" -v tick="$tick_us" -v envoy=$((e1 - e0)) -v ksys=$((k1 - k0)) \
		-v server=$((${s1:-0} - ${s0:-0})) "$to_us"'
		/^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
		/requests in/ { n = $1 } /Non-2xx/ { bad = $NF }
		END { if (n < 1) n = 1
		      printf "RESULT label=%s rps=%.0f p50_us=%.1f p99_us=%.1f non2xx=%d envoy_cpu_us=%.1f envoy_sys_us=%.1f server_cpu_us=%.1f\n",
		             label, rps, p50, p99, bad, envoy * tick / n, ksys * tick / n, server * tick / n }' |
		tee -a "$work/results.txt"
}
load() { # load LABEL PORT
	"$bin/examples/check_load" --target "http://127.0.0.1:$2" --tokens "$work/tokens.txt" \
		--connections 2 --concurrency "$CONCURRENCY" --warmup 2 --duration "$DURATION" \
		--label "$1" | tee -a "$work/results.txt"
}

echo "== warming keyward's caches and every listener"
"$bin/examples/check_load" --target "http://127.0.0.1:$port_check" --tokens "$work/tokens.txt" \
	--connections 2 --concurrency 8 --warmup 0 --duration 1 --label warmup >/dev/null
for port in $(p 0) $(p 1) $(p 2) $(p 3) $(p 4) $(p 5) $(p 6) $(p 7) $(p 8) $(p 9) $(p 10) $(p 20); do
	code=$(curl -s -o /dev/null -w "%{http_code}" -H "x-api-key: $token" "http://127.0.0.1:$port/")
	[ "$code" = 200 ] || { echo "listener on $port answered $code" >&2; exit 1; }
	wrk -t1 -c"$CONNECTIONS" -d1s -H "x-api-key: $token" "http://127.0.0.1:$port/" >/dev/null
done
code=$(curl -s -o /dev/null -w "%{http_code}" -H "x-api-key: nope" "http://127.0.0.1:$(p 0)/")
[ "$code" = 401 ] || { echo "keyward let a bad key through ($code)" >&2; exit 1; }

labels="noauth base win64k mcs8 mcs1 google_grpc lean nostats retry oghttp2 noop noop_adapt grpc_noop grpc_noop_adapt"
runs=(
	"http noauth $(p 8) $envoy_pid"
	"http base $(p 0) $envoy_pid $keyward_pid"
	"http win64k $(p 1) $envoy_pid $keyward_pid"
	"http mcs8 $(p 2) $envoy_pid $keyward_pid"
	"http mcs1 $(p 3) $envoy_pid $keyward_pid"
	"http google_grpc $(p 4) $envoy_pid $keyward_pid"
	"http lean $(p 5) $envoy_pid $keyward_pid"
	"http nostats $(p 9) $envoy_pid $keyward_pid"
	"http retry $(p 10) $envoy_pid $keyward_pid"
	"http oghttp2 $(p 20) $envoy_og_pid $keyward_pid"
	"http noop $(p 6) $envoy_pid $noop_pid"
	"http noop_adapt $(p 7) $envoy_pid $noop_adapt_pid"
	"load grpc_noop $port_noop"
	"load grpc_noop_adapt $port_noop_adapt"
)
if [ -n "${ONLY:-}" ]; then
	kept=()
	for run in "${runs[@]}"; do
		name=$(echo "$run" | awk '{ print $2 }')
		case " base $ONLY " in *" $name "*) kept+=("$run") ;; esac
	done
	runs=("${kept[@]}")
	labels=$(printf '%s\n' "${runs[@]}" | awk '{ printf "%s ", $2 }')
fi
for round in $(seq "$ROUNDS"); do
	echo "== round $round/$ROUNDS" | tee -a "$work/results.txt"
	# Each round starts one scenario later, so no variant always runs first or after the same one.
	for i in "${!runs[@]}"; do
		${runs[$(((i + round - 1) % ${#runs[@]}))]}
	done
done
upstream_cx() { curl -s "http://127.0.0.1:$1/stats" | grep -E "^cluster\.$2\.upstream_cx_total:" | awk '{print $2}'; }

field() { # field LABEL NAME: the median of NAME over LABEL's runs
	awk -v label="$1" -v name="$2" '$2 == "label=" label {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) print kv[2] } }' \
		"$work/results.txt" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
paired() { # paired LABEL REF NAME: median over rounds of LABEL's NAME / REF's NAME in that round
	awk -v label="$1" -v ref="$2" -v name="$3" '/^== round/ { r++ }
		/^RESULT/ { split($2, l, "="); for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) v[r, l[2]] = kv[2] } }
		END { for (i = 1; i <= r; i++) if (v[i, ref] > 0 && v[i, label] != "") print v[i, label] / v[i, ref] }' \
		"$work/results.txt" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", v[int((NR + 1) / 2)]; else print "-" }'
}

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "envoy: $("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n1)  rounds: $ROUNDS x ${DURATION}s  (medians)"
echo "upstream connections opened (Envoy 1): base $(upstream_cx "$(p 19)" kw_base) mcs8 $(upstream_cx "$(p 19)" kw_mcs8) mcs1 $(upstream_cx "$(p 19)" kw_mcs1)"
printf '\n%-16s %9s %8s %8s %7s %11s %9s %11s %8s %9s %13s %15s\n' scenario "req/s" "p50 µs" "p99 µs" non2xx \
	"envoy µs/rq" "(kernel)" "server µs/rq" "rps/ref" "envoy/ref" "paired rps" "paired envoy"
for label in $labels; do
	case $label in
	noop_adapt) ref=noop ;;
	grpc_noop_adapt) ref=grpc_noop ;;
	noop | grpc_noop | noauth) ref=$label ;;
	*) ref=base ;;
	esac
	case $label in grpc_*) envoy_ratio=- ;; *) envoy_ratio=$(ratio "$(field "$label" envoy_cpu_us)" "$(field "$ref" envoy_cpu_us)") ;; esac
	case $label in grpc_*) paired_envoy=- ;; *) paired_envoy=$(paired "$label" "$ref" envoy_cpu_us) ;; esac
	printf '%-16s %9s %8s %8s %7s %11s %9s %11s %8s %9s %13s %15s\n' "$label" "$(field "$label" rps)" \
		"$(field "$label" p50_us)" "$(field "$label" p99_us)" "$(field "$label" non2xx)" \
		"$(field "$label" envoy_cpu_us)" "$(field "$label" envoy_sys_us)" "$(field "$label" server_cpu_us)" \
		"$(ratio "$(field "$label" rps)" "$(field "$ref" rps)")" "$envoy_ratio" \
		"$(paired "$label" "$ref" rps)" "$paired_envoy"
done
echo "(ratios are to base for the keyward variants, to noop / grpc_noop for the adaptive window)"
