# Sourced by the bench/*.sh scripts (from the repository root): a scratch directory, the
# processes to stop when the script exits, and a readiness poll.
#
#   work     a fresh temporary directory, removed on exit
#   pids     background processes started with `cmd & pids+=($!)`, killed and reaped on exit
#   wait_for WHAT COMMAND...   polls COMMAND every 0.1 s for up to 30 s, or exits naming WHAT

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
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
