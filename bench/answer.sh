#!/usr/bin/env bash
# What keyward's allow answer costs Envoy, part by part (issue 18, item 6): one Envoy, one
# listener per Check server, wrk against each in interleaved rounds; medians and ratios to the
# no-op server's bare answer (the floor every ext_authz server pays).
#
#   bench/answer.sh                 # ~3 minutes on 2 cores
#   ROUNDS=5 DURATION=10 bench/answer.sh
#
# Check servers (all over TCP, HTTP/2, the same Envoy ext_authz settings as envoy/envoy.yaml.tmpl):
#   noop_bare          the no-op server, an empty OK
#   noop_headers       + the four x-keyward-* identity headers (overwrite)
#   noop_remove        + only the three credential headers removed
#   noop_metadata      + only the dynamic metadata (5 fields)
#   noop_lean          identity headers + credential removal: keyward's answer without metadata
#   noop_full          all three: keyward's answer with answer.metadata = true
#   noop_lean_learn_md     noop_lean + what the module learns from, as one dynamic metadata field
#   noop_lean_learn_hdr    noop_lean + the same string as a response header (the module removes it)
#   keyward_full       keyward, answer.metadata = true (the default)
#   keyward_lean       keyward, answer.metadata = false
#
# Environment: ENVOY_BIN [.tools/venv/bin/envoy], ROUNDS [3], DURATION [5], CONNECTIONS [32],
# PORT_BASE [29080] (PORT_BASE..PORT_BASE+30 must be free).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
PORT_BASE=${PORT_BASE:-29080}
source bench/tools.sh # Envoy and wrk, installed when missing

echo "== building (release)"
cargo build --release --quiet --bin keyward --example bench_seed --example noop_ext_authz
bin=${CARGO_TARGET_DIR:-target}/release
source bench/lib.sh # work, pids, wait_for

"$bin/examples/bench_seed" --database "$work/kw.db" --keys 4 --tokens-out "$work/tokens.txt"
token=$(head -n1 "$work/tokens.txt")

# name  check-server-port  envoy-listener-port
servers=(noop_bare noop_headers noop_remove noop_metadata noop_lean noop_full noop_lean_learn_md noop_lean_learn_hdr
	keyward_full keyward_lean)
declare -A answer=([noop_bare]="" [noop_headers]=headers [noop_remove]=remove [noop_metadata]=metadata
	[noop_lean]=headers,remove [noop_full]=headers,remove,metadata
	[noop_lean_learn_md]=headers,remove,module_metadata [noop_lean_learn_hdr]=headers,remove,module_header)
declare -A server_pid
i=0
for name in "${servers[@]}"; do
	check_port=$((PORT_BASE + 10 + i)) listen_port=$((PORT_BASE + i))
	case $name in
	noop_*)
		"$bin/examples/noop_ext_authz" --listen "127.0.0.1:$check_port" --answer "${answer[$name]}" \
			>"$work/$name.log" 2>&1 &
		;;
	keyward_*)
		metadata=true
		[ "$name" = keyward_lean ] && metadata=false
		KEYWARD_DATABASE_URL="sqlite://$work/kw.db" KEYWARD_CHECK_ADDR="127.0.0.1:$check_port" \
			KEYWARD_ADMIN_ADDR="127.0.0.1:0" KEYWARD_HEALTH_ADDR="127.0.0.1:0" \
			KEYWARD_ANSWER_METADATA=$metadata "$bin/keyward" serve >"$work/$name.log" 2>&1 &
		;;
	esac
	pids+=($!)
	server_pid[$name]=$!
	i=$((i + 1))
done

{
	cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $((PORT_BASE + 30)) } } }
static_resources:
  listeners:
YAML
	i=0
	for name in "${servers[@]}"; do
		cat <<YAML
    - name: $name
      address: { socket_address: { address: 127.0.0.1, port_value: $((PORT_BASE + i)) } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: $name
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      grpc_service: { envoy_grpc: { cluster_name: $name }, timeout: 0.5s }
                      transport_api_version: V3
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      allowed_headers:
                        patterns:
                          - { exact: authorization, ignore_case: true }
                          - { exact: x-api-key, ignore_case: true }
                          - { exact: x-auth-token, ignore_case: true }
                          - { exact: user-agent, ignore_case: true }
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: / }
                          direct_response: { status: 200, body: { inline_string: "ok\n" } }
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              check_settings:
                                context_extensions: { plane: data, endpoint: public, deployment: demo/chat }
YAML
		i=$((i + 1))
	done
	echo "  clusters:"
	i=0
	for name in "${servers[@]}"; do
		cat <<YAML
    - name: $name
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: $name
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $((PORT_BASE + 10 + i)) } } } }] }]
YAML
		i=$((i + 1))
	done
} >"$work/envoy.yaml"
"$ENVOY_BIN" -c "$work/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn >"$work/envoy.log" 2>&1 &
pids+=($!)
envoy_pid=$!
wait_for "Envoy" curl -sf "http://127.0.0.1:$((PORT_BASE + 30))/ready"
i=0
for name in "${servers[@]}"; do
	wait_for "$name" curl -sf -o /dev/null -H "x-api-key: $token" "http://127.0.0.1:$((PORT_BASE + i))/"
	wrk -t1 -c"$CONNECTIONS" -d1s -H "x-api-key: $token" "http://127.0.0.1:$((PORT_BASE + i))/" >/dev/null
	i=$((i + 1))
done

tick_us=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
	echo "== round $round/$ROUNDS"
	i=0
	for name in "${servers[@]}"; do
		e0=$(cpu_ticks "$envoy_pid") s0=$(cpu_ticks "${server_pid[$name]}")
		out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "x-api-key: $token" \
			-H "user-agent: openai-python/1.40.0" "http://127.0.0.1:$((PORT_BASE + i))/v1/chat/completions")
		e1=$(cpu_ticks "$envoy_pid") s1=$(cpu_ticks "${server_pid[$name]}")
		echo "$out" | awk -v label="$name" -v tick="$tick_us" -v envoy=$((e1 - e0)) -v server=$((s1 - s0)) '
			/^Requests\/sec/ { rps = $2 } /requests in/ { n = $1 } /Non-2xx/ { bad = $NF }
			END { if (n < 1) n = 1
			      printf "RESULT label=%s rps=%.0f non2xx=%d envoy_cpu_us=%.1f server_cpu_us=%.1f\n",
			             label, rps, bad, envoy * tick / n, server * tick / n }' | tee -a "$work/results.txt"
		i=$((i + 1))
	done
done

field() {
	awk -v label="$1" -v name="$2" '$2 == "label=" label {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) print kv[2] } }' "$work/results.txt" |
		sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "nan" && b + 0 > 0) printf "%.2f", a / b; else print "nan" }'; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); shared: read ratios, not absolutes"
echo "rounds: $ROUNDS x ${DURATION}s (medians)"
printf '%-20s %9s %8s %13s %14s %8s\n' server "req/s" "/ bare" "envoy µs/req" "+µs vs bare" "non-2xx"
base_rps=$(field noop_bare rps) base_cpu=$(field noop_bare envoy_cpu_us)
for name in "${servers[@]}"; do
	cpu=$(field "$name" envoy_cpu_us)
	printf '%-20s %9s %8s %13s %14s %8s\n' "$name" "$(field "$name" rps)" "$(ratio "$(field "$name" rps)" "$base_rps")" \
		"$cpu" "$(awk -v a="$cpu" -v b="$base_cpu" 'BEGIN { printf "%+.1f", a - b }')" "$(field "$name" non2xx)"
done
echo
echo "  keyward (default answer, answer.metadata=false) / no-op floor $(ratio "$(field keyward_lean rps)" "$base_rps")  [>= 0.90]"
echo "  keyward (answer.metadata=true) / no-op floor $(ratio "$(field keyward_full rps)" "$base_rps")"
echo "  what the module learns from, as metadata / as a response header $(ratio "$(field noop_lean_learn_md rps)" "$(field noop_lean_learn_hdr rps)")"
echo "  lean + the module's metadata field / lean  $(ratio "$(field noop_lean_learn_md rps)" "$(field noop_lean rps)")"
echo "  lean + the module's response header / lean $(ratio "$(field noop_lean_learn_hdr rps)" "$(field noop_lean rps)")"
echo "  keyward lean / keyward default             $(ratio "$(field keyward_lean rps)" "$(field keyward_full rps)")"
