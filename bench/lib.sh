# Sourced by the bench/*.sh scripts (from the repository root): a scratch directory, the
# processes to stop when the script exits, and a readiness poll.
#
#   work     a fresh temporary directory, removed on exit (kept, and named, with KEEP_WORK=1:
#            logs, results and PROFILE's perf.data files to dig into)
#   pids     background processes started with `cmd & pids+=($!)`, killed and reaped on exit
#   wait_for WHAT COMMAND...   polls COMMAND every 0.1 s for up to 30 s, or exits naming WHAT
#   flood_generator URL LABEL [OPTIONS...]   starts examples/check_load flooding URL with FLOOD
#            streams of wrong secrets from a process of its own for DURATION + 2 s (the caller
#            sets bin, FLOOD and DURATION and has written $work/tokens.txt); its pid is flood_pid

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() {
	local what=$1 i
	shift
	for i in $(seq 300); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for $what" >&2
	exit 1
}

flood_generator() {
	"$bin/examples/check_load" --target "$1" --tokens "$work/tokens.txt" --connections 2 \
		--concurrency 0 --warmup 1 --duration $((DURATION + 2)) --flood "$FLOOD" --label "$2" \
		"${@:3}" >>"$work/results.txt" &
	flood_pid=$!
}
