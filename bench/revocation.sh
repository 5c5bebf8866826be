#!/usr/bin/env bash
# Revocation propagation between two keyward replicas: p50 / p99 / max over 200 revocations.
#   bench/revocation.sh                       # PostgreSQL (fresh database on 127.0.0.1:5432)
#   bench/revocation.sh --database sqlite:///tmp/kw-bench.db   # SQLite, polling
#   bench/revocation.sh --mode stalled        # B's LISTEN connections frozen (a stalled middlebox)
#   bench/revocation.sh --mode after-outage   # B cut from the database for 1 s before every 20
#   bench/revocation.sh --mode module         # B behind Envoy + keyward's module: revoke -> the
#                                             # module's first denial (ENVOY_BIN, or .tools)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p keyward-envoy-module
exec cargo run --quiet --release --example revocation_propagation -- "$@"
