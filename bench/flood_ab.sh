#!/usr/bin/env bash
# The flood benchmark of bench/load.sh, A/B: two keyward builds side by side in one run, their
# rounds interleaved (A B, then B A, ...), each build's valid cached-key p99 measured with and
# without a flood of wrong secrets sent from a process of its own. Prints every run, then per
# build the median of the per-round ratios (flood p99 / no-flood p99, the issue's <= 2x) and the
# medians themselves. The no-flood runs also send COLD (16) keys never checked before, one after
# the other: what a cold verification (lookup and argon2) takes while cached keys keep the
# cores busy.
#
#   bench/flood_ab.sh OLD_KEYWARD_BINARY [NEW_KEYWARD_BINARY]   # new: target/release/keyward
#   ROUNDS=7 DURATION=5 FLOOD=256 CONCURRENCY=32 bench/flood_ab.sh /tmp/keyward-old
#
# Extra environment for one side only: A_ENV / B_ENV, e.g. B_ENV="KEYWARD_VERIFY_NICE=0".
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: bench/flood_ab.sh OLD_BINARY [NEW_BINARY]" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-32}
FLOOD=${FLOOD:-256}
COLD=${COLD:-16}
bin_a=$1
echo "== building (release)"
cargo build --release --quiet --bin keyward --example bench_seed --example check_load
bin=${CARGO_TARGET_DIR:-target}/release
bin_b=${2:-$bin/keyward}
for b in "$bin_a" "$bin_b"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done

source bench/lib.sh # work, pids (stopped on exit), wait_for

echo "== seeding $((64 + 3 * COLD * ROUNDS)) keys (argon2id default parameters)"
"$bin/examples/bench_seed" --database "$work/kw.db" --keys $((64 + 3 * COLD * ROUNDS)) --tokens-out "$work/all.txt"
head -n 64 "$work/all.txt" >"$work/tokens.txt"
for round in $(seq "$ROUNDS"); do
	# Keys never checked before: cold_R for round R's no-flood runs, cold1_R for its one-key-id
	# floods, cold2_R for its floods on every key id (each build has caches of its own, so both
	# builds use the same sets).
	first=$((65 + 3 * COLD * (round - 1)))
	sed -n "$first,$((first + COLD - 1))p" "$work/all.txt" >"$work/cold_$round.txt"
	sed -n "$((first + COLD)),$((first + 2 * COLD - 1))p" "$work/all.txt" >"$work/cold1_$round.txt"
	sed -n "$((first + 2 * COLD)),$((first + 3 * COLD - 1))p" "$work/all.txt" >"$work/cold2_$round.txt"
done

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A check_port
for side in A B; do
	binary=bin_${side,,} extra=${side}_ENV
	check_port[$side]=$(free_port)
	health=$(free_port)
	env ${!extra:-} KEYWARD_DATABASE_URL="sqlite://$work/kw.db" \
		KEYWARD_CHECK_ADDR="127.0.0.1:${check_port[$side]}" KEYWARD_ADMIN_ADDR="127.0.0.1:$(free_port)" \
		KEYWARD_HEALTH_ADDR="127.0.0.1:$health" KEYWARD_LOG=warn \
		"${!binary}" serve 2>"$work/keyward_$side.log" &
	pids+=($!)
	wait_for "keyward $side" curl -sf "http://127.0.0.1:$health/readyz"
done

load() { # load LABEL SIDE [FLOOD [MORE OPTIONS]]
	"$bin/examples/check_load" --target "http://127.0.0.1:${check_port[$2]}" --tokens "$work/tokens.txt" \
		--connections 2 --concurrency "$CONCURRENCY" --warmup 2 --duration "$DURATION" \
		--flood "${3:-0}" --label "$1" "${@:4}" | tee -a "$work/results.txt"
}
flood_round() { # flood_round SIDE ROUND
	load "off_$1" "$1" 0 --cold "$work/cold_$2.txt"
	flood_generator "http://127.0.0.1:${check_port[$1]}" "generator_$1"
	load "flood_$1" "$1" 0 --cold "$work/cold2_$2.txt"
	wait "$flood_pid"
	flood_generator "http://127.0.0.1:${check_port[$1]}" "onekey_generator_$1" --flood-keys 1
	load "onekey_$1" "$1" 0 --cold "$work/cold1_$2.txt"
	wait "$flood_pid"
}

echo "== warming both builds' caches"
load warmup A >/dev/null
load warmup B >/dev/null
for round in $(seq "$ROUNDS"); do
	echo "== round $round/$ROUNDS"
	if ((round % 2)); then flood_round A "$round"; flood_round B "$round"; else flood_round B "$round"; flood_round A "$round"; fi
done

summary() { # summary SIDE
	awk -v side="$1" '
		function get(name,    i, kv) { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] } }
		function median(a, n,    i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } return a[int((n + 1) / 2)] }
		$2 == "label=off_" side { off[++n_off] = get("p99_us"); rps_off[n_off] = get("rps") }
		$2 == "label=flood_" side { on[++n_on] = get("p99_us"); rps_on[n_on] = get("rps"); f50[n_on] = get("cold_p50_us"); fmax[n_on] = get("cold_max_us"); fok += get("cold_allowed"); fn_ += get("cold") }
		$2 == "label=generator_" side { fl[++n_fl] = get("flood_rps") }
		$2 == "label=off_" side { c50[++n_c] = get("cold_p50_us"); cmax[n_c] = get("cold_max_us"); cok += get("cold_allowed"); cn += get("cold") }
		$2 == "label=onekey_" side { o50[++n_o] = get("cold_p50_us"); omax[n_o] = get("cold_max_us"); ook += get("cold_allowed"); on_ += get("cold"); op99[n_o] = get("p99_us") }
		$2 == "label=onekey_generator_" side { oshed += get("flood_shed"); odenied += get("flood_denied") }
		END {
			n = (n_off < n_on ? n_off : n_on)
			for (i = 1; i <= n; i++) { r[i] = on[i] / off[i]; rounds = rounds sprintf(" %.2f", r[i]) }
			printf "%s: p99 no flood %.0f µs, with flood %.0f µs; valid req/s %.0f -> %.0f; flood %.0f req/s\n", side, median(off, n_off), median(on, n_on), median(rps_off, n_off), median(rps_on, n_on), median(fl, n_fl)
			printf "%s: flood p99 / no-flood p99 per round%s; median %.2f  [<= 2.00]\n", side, rounds, median(r, n)
			printf "%s: keys never checked before, under the no-flood load: p50 %.0f µs, worst %.0f µs (medians over rounds); %d of %d allowed\n", side, median(c50, n_c), median(cmax, n_c), cok, cn
			printf "%s: keys never checked before, during the flood on every key id: p50 %.0f µs, worst %.0f µs (medians over rounds); %d of %d allowed\n", side, median(f50, n_on), median(fmax, n_on), fok, fn_
			printf "%s: keys never checked before, during a flood on one key id: p50 %.0f µs, worst %.0f µs (medians over rounds); %d of %d allowed; the flood: %d denied, %d shed; cached keys p99 %.0f µs\n", side, median(o50, n_o), median(omax, n_o), ook, on_, odenied, oshed, median(op99, n_o)
		}' "$work/results.txt"
}
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "A = $bin_a ${A_ENV:-}"
echo "B = $bin_b ${B_ENV:-}"
summary A
summary B
for side in A B; do echo "$side: shedding lines logged: $(grep -c shedding "$work/keyward_$side.log" || true)"; done
