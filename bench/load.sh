#!/usr/bin/env bash
# End-to-end load benchmark, one command, one machine, one Envoy build, one load generator per
# protocol. Prints every run as it goes, then a table of medians and the ratios the targets are
# about (docs/performance.md explains them).
#
#   bench/load.sh                 # ~8-10 minutes on 2 cores
#   ROUNDS=5 DURATION=10 bench/load.sh
#
# Environment (defaults in brackets):
#   ENVOY_BIN      Envoy 1.40 binary [.tools/venv/bin/envoy, as scripts/test installs it]
#   ROUNDS [3]     interleaved rounds per scenario; the table shows medians
#   DURATION [5]   measuring seconds per run (gRPC runs add 2 s of warm-up)
#   CONNECTIONS [32]  wrk connections to Envoy;  CONCURRENCY [32] in-flight gRPC requests
#   FLOOD [256]    flood tasks sending wrong secrets with real key ids, at full speed
#   KEYWARD_VERIFY_WORKERS / KEYWARD_VERIFY_QUEUE  passed to keyward when set
#   PORT_BASE [28080]  fixed loopback ports PORT_BASE..PORT_BASE+20 must be free
#   SCENARIOS ["grpc http flood memory"]  which groups to run, e.g. SCENARIOS=flood ROUNDS=7;
#                  "module" runs only the module's HTTP scenarios and what they are compared to
#                  (no auth, api_key_auth, ext_authz -> keyward and -> the no-op server)
#   PROFILE        set (PROFILE=1): each HTTP run is also recorded by `perf record -a` (cpu-clock,
#                  one sample per 100 µs of CPU) and `perf stat` (syscalls, context switches), and a
#                  PROFILE line per run says where the two cores went per request: Envoy's user and
#                  kernel time, the Check server's, wrk's, idle, and Envoy's top functions.
#                  perf's own cost lowers throughput a little: read ratios from runs without it.
#
# Scenarios:
#   gRPC Check (examples/check_load, HTTP/2, 2 connections): keyward on a cache hit vs the no-op
#     ext_authz server (examples/noop_ext_authz), the floor every ext_authz server pays, and vs
#     the no-op server giving keyward's answer (the floor for a server that names the caller).
#   HTTP through Envoy (wrk) to a direct_response route: no auth; native api_key_auth with the
#     same 64 keys; keyward over TCP; keyward over a Unix socket; keyward over TCP with every
#     request header sent to it (no allowed_headers); keyward over TCP with encode_raw_headers
#     (headers as raw bytes in header_map); the no-op server behind ext_authz, answering nothing
#     or (--identity-answer) keyward's identity headers, credential removal and metadata.
#     Then no auth, api_key_auth and keyward over TCP once more, each proxied to the stand-in
#     backend (keyward-standin-backend, HTTP/1.1): what one upstream exchange costs Envoy, and
#     the ratio as deployed, where every request reaches a backend.
#   Flood: valid cached keys' p99 with and without a concurrent flood of wrong secrets, the flood
#     sent from the measuring process itself and from a process of its own; and the same load and
#     flood (from its own process) against the no-op server: what the flood's requests cost any
#     Check server on these cores, argon2 or not (the flood's floor).
#   Memory: examples/memory_100k, resident memory with 100 000 keys cached.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
CONCURRENCY=${CONCURRENCY:-32}
FLOOD=${FLOOD:-256}
PORT_BASE=${PORT_BASE:-28080}
source bench/tools.sh # Envoy and wrk, installed when missing
SCENARIOS=${SCENARIOS:-grpc http flood memory}
for group in $SCENARIOS; do
	case $group in grpc | http | module | flood | memory) ;; *) echo "SCENARIOS: unknown group '$group' (grpc http module flood memory)" >&2; exit 1 ;; esac
done
runs() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if [ -n "${PROFILE:-}" ]; then
	command -v perf >/dev/null || { echo "PROFILE needs perf: apt-get install -y linux-perf" >&2; exit 1; }
	perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1 ||
		{ echo "PROFILE: perf cannot count syscalls here (needs root or perf_event_paranoid <= 1)" >&2; exit 1; }
fi

port_noauth=$PORT_BASE port_apikey=$((PORT_BASE + 1)) port_tcp=$((PORT_BASE + 2))
port_uds=$((PORT_BASE + 3)) port_tcp_all=$((PORT_BASE + 4)) port_envoy_admin=$((PORT_BASE + 5))
port_envoy_noop=$((PORT_BASE + 6)) port_tcp_raw=$((PORT_BASE + 7)) port_envoy_noop_identity=$((PORT_BASE + 8))
port_check=$((PORT_BASE + 10)) port_admin=$((PORT_BASE + 11)) port_health=$((PORT_BASE + 12))
port_noop=$((PORT_BASE + 13)) port_noop_identity=$((PORT_BASE + 14))
port_noauth_upstream=$((PORT_BASE + 15)) port_apikey_upstream=$((PORT_BASE + 16))
port_tcp_upstream=$((PORT_BASE + 17)) port_backend=$((PORT_BASE + 18))
port_module=$((PORT_BASE + 9)) port_module_miss=$((PORT_BASE + 19)) port_check_module=$((PORT_BASE + 20))

echo "== building (release)"
cargo build --release --quiet --bin keyward --bin keyward-standin-backend --example bench_seed --example noop_ext_authz \
	--example check_load --example memory_100k
cargo build --release --quiet -p keyward-envoy-module
bin=${CARGO_TARGET_DIR:-target}/release
module_lib=$(cd "$bin" && pwd)/libkeyward_envoy_module.so

source bench/lib.sh # work, pids (stopped on exit), wait_for

echo "== seeding 64 keys (argon2id default parameters)"
"$bin/examples/bench_seed" --database "$work/kw.db" --keys 64 --tokens-out "$work/tokens.txt"
token=$(head -n1 "$work/tokens.txt")

echo "== starting keyward, the no-op ext_authz server and Envoy"
KEYWARD_DATABASE_URL="sqlite://$work/kw.db" KEYWARD_CHECK_ADDR="127.0.0.1:$port_check" \
	KEYWARD_ADMIN_ADDR="127.0.0.1:$port_admin" KEYWARD_HEALTH_ADDR="127.0.0.1:$port_health" \
	KEYWARD_CHECK_UNIX="$work/check.sock" KEYWARD_LOG=${KEYWARD_LOG:-info} \
	"$bin/keyward" serve 2>"$work/keyward.log" &
pids+=($!)
"$bin/examples/noop_ext_authz" --listen "127.0.0.1:$port_noop" >"$work/noop.log" 2>&1 &
pids+=($!)
"$bin/examples/noop_ext_authz" --listen "127.0.0.1:$port_noop_identity" --identity-answer \
	>"$work/noop_identity.log" 2>&1 &
pids+=($!)
"$bin/keyward-standin-backend" --listen "127.0.0.1:$port_backend" >"$work/backend.log" 2>&1 &
pids+=($!)
api_keys=$(awk '{printf "%s{key: \"%s\", client: \"k%d\"}", (NR > 1 ? ", " : "["), $1, NR} END {print "]"}' "$work/tokens.txt")
sed -e "s|{{ADMIN_PORT}}|$port_envoy_admin|; s|{{PORT_NOAUTH}}|$port_noauth|; s|{{PORT_APIKEY}}|$port_apikey|" \
	-e "s|{{PORT_TCP}}|$port_tcp|; s|{{PORT_UDS}}|$port_uds|; s|{{PORT_TCP_ALL}}|$port_tcp_all|" \
	-e "s|{{KEYWARD_PORT}}|$port_check|; s|{{KEYWARD_SOCKET}}|$work/check.sock|" \
	-e "s|{{PORT_NOOP}}|$port_envoy_noop|; s|{{NOOP_PORT}}|$port_noop|; s|{{PORT_TCP_RAW}}|$port_tcp_raw|" \
	-e "s|{{PORT_NOOP_IDENTITY}}|$port_envoy_noop_identity|; s|{{NOOP_IDENTITY_PORT}}|$port_noop_identity|" \
	-e "s|{{PORT_NOAUTH_UPSTREAM}}|$port_noauth_upstream|; s|{{PORT_APIKEY_UPSTREAM}}|$port_apikey_upstream|" \
	-e "s|{{PORT_TCP_UPSTREAM}}|$port_tcp_upstream|; s|{{BACKEND_PORT}}|$port_backend|" \
	-e "s|{{PORT_MODULE}}|$port_module|; s|{{PORT_MODULE_MISS}}|$port_module_miss|" \
	-e "s|{{KEYWARD_MODULE_PORT}}|$port_check_module|; s|{{MODULE_PATH}}|$module_lib|g" \
	-e "s|{{API_KEYS}}|$api_keys|g" bench/envoy/bench.yaml.tmpl >"$work/envoy.yaml"
! grep -n '{{' "$work/envoy.yaml" || { echo "unrendered placeholder" >&2; exit 1; }
"$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn \
	>"$work/envoy.log" 2>&1 &
pids+=($!)
# The module listeners' keyward: the same database, module.enabled (its allows carry what the
# module learns), so the other listeners measure keyward's answer without those fields.
KEYWARD_DATABASE_URL="sqlite://$work/kw.db" KEYWARD_CHECK_ADDR="127.0.0.1:$port_check_module" \
	KEYWARD_ADMIN_ADDR="127.0.0.1:0" KEYWARD_HEALTH_ADDR="127.0.0.1:0" KEYWARD_MODULE_ENABLED=true \
	KEYWARD_LOG=${KEYWARD_LOG:-info} "$bin/keyward" serve 2>"$work/keyward_module.log" &
pids+=($!)
keyward_pid=${pids[0]} noop_pid=${pids[1]} noop_identity_pid=${pids[2]} backend_pid=${pids[3]} envoy_pid=${pids[4]}
keyward_module_pid=${pids[5]}
wait_for "keyward (module)" grep -q "keyward serving" "$work/keyward_module.log"
wait_for "keyward" curl -sf "http://127.0.0.1:$port_health/readyz"
wait_for "the no-op server" grep -q listening "$work/noop.log"
wait_for "the no-op server (identity answer)" grep -q listening "$work/noop_identity.log"
wait_for "the stand-in backend" grep -q listening "$work/backend.log"
wait_for "Envoy" curl -sf "http://127.0.0.1:$port_envoy_admin/ready"

load() { # load LABEL TARGET [FLOOD]
	"$bin/examples/check_load" --target "http://127.0.0.1:$2" --tokens "$work/tokens.txt" \
		--connections 2 --concurrency "$CONCURRENCY" --warmup 2 --duration "$DURATION" \
		--flood "${3:-0}" --label "$1" | tee -a "$work/results.txt"
}
# wrk's latency units (us, ms, s) to microseconds.
to_us='function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }'
# The profile behind the HTTP ratios: CPU time each process spent per request (utime + stime
# from /proc, in clock ticks), so the cost of Envoy's ext_authz hop is seen apart from keyward's.
tick_us=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
http() { # http LABEL PORT [CHECK_SERVER_PID]
	local out e0 k0 n0 b0 e1 k1 n1 b1 run=(wrk)
	# keyward: both processes (the module's listeners ask the one with module.enabled).
	e0=$(cpu_ticks "$envoy_pid") b0=$(cpu_ticks "$backend_pid")
	k0=$(($(cpu_ticks "$keyward_pid") + $(cpu_ticks "$keyward_module_pid")))
	n0=$(($(cpu_ticks "$noop_pid") + $(cpu_ticks "$noop_identity_pid")))
	if [ -n "${PROFILE:-}" ]; then # perf counts and samples exactly while wrk runs
		run=(perf stat -x, -o "$work/$1.envoy.stat" -e raw_syscalls:sys_enter,context-switches -p "$envoy_pid" --)
		[ -z "${3:-}" ] || run+=(perf stat -x, -o "$work/$1.server.stat" -e raw_syscalls:sys_enter,context-switches -p "$3" --)
		run+=(perf record -a -q -e cpu-clock -c 100000 -o "$work/$1.perf" -- wrk)
	fi
	out=$("${run[@]}" -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "x-api-key: $token" \
		-H "user-agent: openai-python/1.40.0" -H "content-type: application/json" \
		-H "accept: application/json" -H "x-request-id: 0f8fad5b-d9cb-469f-a165-70867728950e" \
		-H "x-stainless-lang: python" -H "x-stainless-package-version: 1.40.0" \
		"http://127.0.0.1:$2/v1/chat/completions")
	e1=$(cpu_ticks "$envoy_pid") b1=$(cpu_ticks "$backend_pid")
	k1=$(($(cpu_ticks "$keyward_pid") + $(cpu_ticks "$keyward_module_pid")))
	n1=$(($(cpu_ticks "$noop_pid") + $(cpu_ticks "$noop_identity_pid")))
	echo "$out" | awk -v label="$1" -v tick="$tick_us" -v envoy=$((e1 - e0)) \
		-v keyward=$((k1 - k0)) -v noop=$((n1 - n0)) -v backend=$((b1 - b0)) "$to_us"'
		/^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } /^Requests\/sec/ { rps = $2 }
		/requests in/ { n = $1 } /Non-2xx/ { bad = $NF }
		END { if (n < 1) n = 1
		      printf "RESULT label=%s rps=%.0f p50_us=%.1f p99_us=%.1f non2xx=%d envoy_cpu_us=%.1f keyward_cpu_us=%.1f noop_cpu_us=%.1f backend_cpu_us=%.1f\n",
		             label, rps, p50, p99, bad, envoy * tick / n, keyward * tick / n, noop * tick / n, backend * tick / n }' |
		tee -a "$work/results.txt"
	[ -z "${PROFILE:-}" ] || profile_summary "$1" "$(echo "$out" | awk '/requests in/ { print $1 }')" "${3:-}"
}

# profile_summary LABEL REQUESTS [CHECK_SERVER_PID]: per request, the microseconds of CPU each
# part of the machine spent while LABEL's wrk ran (perf samples x 100 µs), split into user and
# kernel; syscalls and context switches of Envoy and of the Check server; and the functions
# Envoy spent most in (its binary is stripped: only kernel and libc functions have names, the
# rest of Envoy's own code is one "[unknown]").
profile_summary() {
	local counts
	counts=$(awk -F, 'FNR == 1 { part = (FILENAME ~ /envoy.stat$/ ? "envoy" : "server") }
		$3 ~ /sys_enter/ { printf " %s_syscalls=%s", part, $1 } $3 ~ /context-switches/ { printf " %s_cswitches=%s", part, $1 }' \
		"$work/$1".*.stat)
	perf script -i "$work/$1.perf" -F pid,ip,sym,dso 2>/dev/null | awk -v label="$1" -v n="$2" \
		-v envoy="$envoy_pid" -v server="${3:--1}" -v counts="$counts" '
		{ kernel = ($NF == "([kernel.kallsyms])")
		  part = ($1 == envoy ? "envoy" : $1 == server ? "server" : $1 == 0 ? "idle" : "other")
		  samples[part "_" (kernel ? "kernel" : "user")]++
		  if (part == "envoy") { sym = $3; for (i = 4; i < NF; i++) sym = sym "_" $i; top[(kernel ? "k:" : "u:") sym]++ } }
		END { if (n < 1) n = 1
		      printf "PROFILE label=%s requests=%d", label, n
		      split("envoy_user envoy_kernel server_user server_kernel other_user other_kernel idle_kernel", keys, " ")
		      for (i = 1; i in keys; i++) printf " %s_us=%.2f", keys[i], samples[keys[i]] * 100 / n
		      # counts are totals over the run: divide by the requests
		      m = split(counts, c, " ")
		      for (i = 1; i <= m; i++) { split(c[i], kv, "="); printf " %s=%.2f", kv[1], kv[2] / n }
		      printf "\n"
		      printf "PROFILE_TOP label=%s envoy:", label
		      for (shown = 0; shown < 8; shown++) {
		          best = ""; for (s in top) if (best == "" || top[s] > top[best]) best = s
		          if (best == "") break
		          printf " %s=%.2fus", best, top[best] * 100 / n; delete top[best] }
		      printf "\n" }' | tee -a "$work/profile.txt"
}

flood_apart() { # flood_apart PREFIX PORT: PREFIX_apart measured while PREFIX_generator floods
	flood_generator "http://127.0.0.1:$2" "$1_generator"
	load "$1_apart" "$2"
	wait "$flood_pid"
}

echo "== warming keyward's caches (every key verified once)"
load warmup "$port_check" >/dev/null
curl -sf -o /dev/null -w "envoy->keyward tcp: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_tcp/"
curl -sf -o /dev/null -w "envoy->keyward tcp, raw headers: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_tcp_raw/"
curl -sf -o /dev/null -w "envoy->keyward uds: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_uds/"
curl -sf -o /dev/null -w "envoy api_key_auth: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_apikey/"
curl -sf -o /dev/null -w "envoy+module->keyward tcp: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_module/"
curl -sf -o /dev/null -w "envoy+module (miss)->keyward tcp: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_module_miss/"
code=$(curl -s -o /dev/null -w "%{http_code}" -H "x-api-key: nope" "http://127.0.0.1:$port_module/")
[ "$code" = 401 ] || { echo "the module's path let a bad key through ($code)" >&2; exit 1; }
curl -sf -o /dev/null -w "envoy->keyward tcp->backend: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_tcp_upstream/v1/chat/completions"
curl -sf -o /dev/null -w "envoy api_key_auth->backend: %{http_code}\n" -H "x-api-key: $token" "http://127.0.0.1:$port_apikey_upstream/v1/chat/completions"
code=$(curl -s -o /dev/null -w "%{http_code}" -H "x-api-key: nope" "http://127.0.0.1:$port_tcp/")
[ "$code" = 401 ] || { echo "keyward let a bad key through ($code)" >&2; exit 1; }
for port in $port_noauth $port_apikey $port_tcp $port_uds $port_tcp_all $port_envoy_noop $port_tcp_raw $port_envoy_noop_identity \
	$port_module $port_module_miss \
	$port_noauth_upstream $port_apikey_upstream $port_tcp_upstream; do
	wrk -t1 -c"$CONNECTIONS" -d1s -H "x-api-key: $token" "http://127.0.0.1:$port/" >/dev/null
done

for round in $(seq "$ROUNDS"); do
	echo "== round $round/$ROUNDS"
	if runs grpc; then
		load grpc_keyward "$port_check"
		load grpc_noop "$port_noop"
		load grpc_noop_identity "$port_noop_identity"
	fi
	if runs module && ! runs http; then
		http http_noauth "$port_noauth"
		http http_api_key_auth "$port_apikey"
		http http_keyward_tcp "$port_tcp" "$keyward_pid"
		http http_noop_ext_authz "$port_envoy_noop" "$noop_pid"
		http http_keyward_module "$port_module" "$keyward_module_pid"
		http http_keyward_module_miss "$port_module_miss" "$keyward_module_pid"
	fi
	if runs http; then
		http http_noauth "$port_noauth"
		http http_api_key_auth "$port_apikey"
		http http_keyward_tcp "$port_tcp" "$keyward_pid"
		http http_keyward_uds "$port_uds" "$keyward_pid"
		http http_keyward_tcp_all_headers "$port_tcp_all" "$keyward_pid"
		http http_keyward_tcp_raw_headers "$port_tcp_raw" "$keyward_pid"
		http http_noop_ext_authz "$port_envoy_noop" "$noop_pid"
		http http_noop_identity_ext_authz "$port_envoy_noop_identity" "$noop_identity_pid"
		http http_keyward_module "$port_module" "$keyward_module_pid"
		http http_keyward_module_miss "$port_module_miss" "$keyward_module_pid"
		# The same three with one upstream exchange each, as every proxied inference request has.
		http http_noauth_upstream "$port_noauth_upstream"
		http http_api_key_auth_upstream "$port_apikey_upstream"
		http http_keyward_tcp_upstream "$port_tcp_upstream" "$keyward_pid"
	fi
	runs flood || continue
	load flood_off "$port_check"
	load flood_on "$port_check" "$FLOOD"
	# The same flood from a process of its own, as an attacker's would be: in one process the
	# valid requests also queue behind the flood tasks in the load generator's own runtime.
	flood_apart flood "$port_check"
	# The floor: the no-op server answers the flood's requests as cheaply as any server can.
	load flood_floor_off "$port_noop"
	flood_apart flood_floor "$port_noop"
done
shed_logged=$(grep -c "shedding" "$work/keyward.log" || true)

echo "== stopping the servers; memory with 100 000 keys cached"
cleanup_servers() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
cleanup_servers
if runs memory; then "$bin/examples/memory_100k" --keys 100000 | tee -a "$work/results.txt"; fi

# ---- table --------------------------------------------------------------------------------
field() { # field LABEL NAME [FILE]: the median of NAME over LABEL's runs [in results.txt]
	awk -v label="$1" -v name="$2" '$2 == "label=" label {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) print kv[2] } }' \
		"${3:-$work/results.txt}" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'
}
# paired A B NAME: A's NAME over B's, round by round (the nth run of each), then their median:
# a round that ran slower on the shared cores slows both, and the per-round ratio cancels that.
paired() {
	awk -v a="$1" -v b="$2" -v name="$3" '
		function get(    i, kv) { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] } }
		$2 == "label=" a { va[++na] = get() } $2 == "label=" b { vb[++nb] = get() }
		END { n = (na < nb ? na : nb); for (i = 1; i <= n; i++) { r[i] = (vb[i] > 0 ? va[i] / vb[i] : 0); printf "%s%.2f", (i > 1 ? " " : "rounds "), r[i] }
		      if (!n) { print "nan"; exit }
		      for (i = 2; i <= n; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
		      printf "; median %.2f\n", r[int((n + 1) / 2)] }' "$work/results.txt"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "nan" && b + 0 > 0) printf "%.2f", a / b; else print "nan" }'; }

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "envoy: $("$ENVOY_BIN" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -n1)  rounds: $ROUNDS x ${DURATION}s  (medians)"
printf '\n%-34s %10s %10s %10s  %s\n' scenario "req/s" "p50 µs" "p99 µs" notes
for label in grpc_noop grpc_noop_identity grpc_keyward http_noauth http_api_key_auth http_keyward_tcp \
	http_keyward_uds http_keyward_tcp_all_headers http_keyward_tcp_raw_headers http_noop_ext_authz http_noop_identity_ext_authz \
	http_keyward_module http_keyward_module_miss http_noauth_upstream http_api_key_auth_upstream http_keyward_tcp_upstream flood_off flood_on \
	flood_apart flood_floor_off flood_floor_apart; do
	notes=""
	case $label in
	http_*) notes="non-2xx=$(field "$label" non2xx)" ;;
	flood_on) notes="flood: $(field flood_on flood_rps) req/s, denied=$(field flood_on flood_denied), shed=$(field flood_on flood_shed), errors=$(field flood_on flood_errors); hot errors=$(field flood_on errors)" ;;
	flood_apart) notes="flood from its own process: $(field flood_generator flood_rps) req/s, shed=$(field flood_generator flood_shed); hot errors=$(field flood_apart errors)" ;;
	flood_floor_apart) notes="no-op server; flood from its own process: $(field flood_floor_generator flood_rps) req/s" ;;
	flood_floor_off) notes="no-op server" ;;
	grpc_keyward | flood_off) notes="allowed=$(field "$label" allowed) errors=$(field "$label" errors)" ;;
	esac
	printf '%-34s %10s %10s %10s  %s\n' "$label" "$(field "$label" rps)" "$(field "$label" p50_us)" \
		"$(field "$label" p99_us)" "$notes"
done
echo
echo "CPU per request (µs, medians; the profile behind the HTTP ratios):"
printf '%-34s %12s %12s %12s %12s\n' scenario envoy keyward no-op backend
for label in http_noauth http_api_key_auth http_keyward_tcp http_keyward_uds http_keyward_tcp_raw_headers \
	http_noop_ext_authz http_noop_identity_ext_authz http_keyward_module http_keyward_module_miss \
	http_noauth_upstream http_api_key_auth_upstream http_keyward_tcp_upstream; do
	printf '%-34s %12s %12s %12s %12s\n' "$label" "$(field "$label" envoy_cpu_us)" \
		"$(field "$label" keyward_cpu_us)" "$(field "$label" noop_cpu_us)" "$(field "$label" backend_cpu_us)"
done
if [ -n "${PROFILE:-}" ]; then
	echo
	echo "perf, per request (µs of CPU from samples; Envoy's and the Check server's syscalls and context switches):"
	printf '%-30s %8s %8s %8s %8s %8s %6s %8s %8s %8s %8s\n' scenario envoy-usr envoy-sys server-usr server-sys \
		wrk+rest idle e-sysc e-cswch s-sysc s-cswch
	pf() { field "$1" "$2" "$work/profile.txt"; }
	for label in http_noauth http_api_key_auth http_keyward_tcp http_keyward_uds http_noop_ext_authz \
		http_noop_identity_ext_authz http_noauth_upstream http_api_key_auth_upstream http_keyward_tcp_upstream; do
		printf '%-30s %8s %8s %8s %8s %8s %6s %8s %8s %8s %8s\n' "$label" "$(pf "$label" envoy_user_us)" \
			"$(pf "$label" envoy_kernel_us)" "$(pf "$label" server_user_us)" "$(pf "$label" server_kernel_us)" \
			"$(awk -v a="$(pf "$label" other_user_us)" -v b="$(pf "$label" other_kernel_us)" 'BEGIN { printf "%.2f", a + b }')" \
			"$(pf "$label" idle_kernel_us)" "$(pf "$label" envoy_syscalls)" "$(pf "$label" envoy_cswitches)" \
			"$(pf "$label" server_syscalls)" "$(pf "$label" server_cswitches)"
	done
	echo "Envoy's top functions per request (last round; k: kernel, u: user):"
	grep '^PROFILE_TOP' "$work/profile.txt" | awk '{ last[$2] = $0 } END { for (l in last) print "  " last[l] }' | sort
fi
echo
echo "ratios (targets in brackets):"
echo "  gRPC throughput keyward / no-op            $(ratio "$(field grpc_keyward rps)" "$(field grpc_noop rps)")  [>= 0.90]"
echo "  gRPC keyward / no-op giving keyward's answer $(ratio "$(field grpc_keyward rps)" "$(field grpc_noop_identity rps)")  (keyward's own work)"
echo "  gRPC no-op giving keyward's answer / no-op $(ratio "$(field grpc_noop_identity rps)" "$(field grpc_noop rps)")  (what the answer costs)"
echo "  gRPC p50 keyward / no-op                   $(ratio "$(field grpc_keyward p50_us)" "$(field grpc_noop p50_us)")"
echo "  gRPC p99 keyward / no-op                   $(ratio "$(field grpc_keyward p99_us)" "$(field grpc_noop p99_us)")"
echo "  HTTP Envoy+keyward TCP / Envoy+api_key_auth $(ratio "$(field http_keyward_tcp rps)" "$(field http_api_key_auth rps)")  [>= 0.50]"
echo "  HTTP Envoy+keyward UDS / Envoy+api_key_auth $(ratio "$(field http_keyward_uds rps)" "$(field http_api_key_auth rps)")  [>= 0.50]"
echo "  HTTP Envoy+keyward TCP / Envoy+no-op ext_authz $(ratio "$(field http_keyward_tcp rps)" "$(field http_noop_ext_authz rps)")"
echo "  HTTP Envoy+keyward TCP / Envoy+no-op giving keyward's answer $(ratio "$(field http_keyward_tcp rps)" "$(field http_noop_identity_ext_authz rps)")"
echo "  HTTP Envoy+no-op ext_authz / Envoy+api_key_auth $(ratio "$(field http_noop_ext_authz rps)" "$(field http_api_key_auth rps)")  (the ext_authz floor)"
echo "  HTTP with an upstream exchange: Envoy+keyward / Envoy+api_key_auth $(ratio "$(field http_keyward_tcp_upstream rps)" "$(field http_api_key_auth_upstream rps)")  (as deployed: proxied to a backend)"
echo "  Envoy CPU per request: the ext_authz hop (no-op) / one upstream exchange $(ratio "$(awk -v a="$(field http_noop_ext_authz envoy_cpu_us)" -v b="$(field http_noauth envoy_cpu_us)" 'BEGIN { print a - b }')" "$(awk -v a="$(field http_noauth_upstream envoy_cpu_us)" -v b="$(field http_noauth envoy_cpu_us)" 'BEGIN { print a - b }')")"
echo "  HTTP keyward UDS / TCP                     $(ratio "$(field http_keyward_uds rps)" "$(field http_keyward_tcp rps)")"
echo "  HTTP keyward trimmed / all headers         $(ratio "$(field http_keyward_tcp rps)" "$(field http_keyward_tcp_all_headers rps)")"
echo "  HTTP keyward raw headers / map, paired     $(paired http_keyward_tcp_raw_headers http_keyward_tcp rps)"
echo "  HTTP Envoy+keyward module (hits) / Envoy+api_key_auth $(ratio "$(field http_keyward_module rps)" "$(field http_api_key_auth rps)")  [>= 0.80]"
echo "  HTTP Envoy+keyward module (hits) / Envoy+api_key_auth, paired $(paired http_keyward_module http_api_key_auth rps)"
echo "  HTTP Envoy+module, every request a miss / Envoy+keyward TCP $(ratio "$(field http_keyward_module_miss rps)" "$(field http_keyward_tcp rps)")  [>= 0.95]"
echo "  HTTP Envoy+module, every request a miss / Envoy+keyward TCP, paired $(paired http_keyward_module_miss http_keyward_tcp rps)"
echo "  Envoy CPU per request: module hit / api_key_auth  $(field http_keyward_module envoy_cpu_us) / $(field http_api_key_auth envoy_cpu_us) µs"
echo "  HTTP api_key_auth / no auth                $(ratio "$(field http_api_key_auth rps)" "$(field http_noauth rps)")"
echo "  flood p99 with / without, flood apart      $(ratio "$(field flood_apart p99_us)" "$(field flood_off p99_us)")  [<= 2.00]"
echo "  flood p99 with / without, flood apart, paired  $(paired flood_apart flood_off p99_us)"
echo "  flood p99 with / without, one process      $(ratio "$(field flood_on p99_us)" "$(field flood_off p99_us)")"
echo "  the same flood against the no-op server, p99 with / without, paired  $(paired flood_floor_apart flood_floor_off p99_us)  (the floor)"
echo "  keyward's flood p99 / the no-op's under the same flood, paired  $(paired flood_apart flood_floor_apart p99_us)"
echo "  memory, 100 000 keys cached                $(field memory rss_mb) MB = $(field memory rss_mib) MiB  [<= 150 MB]"
echo "  keyward log lines about shedding           $shed_logged"
