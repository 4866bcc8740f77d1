#!/usr/bin/env bash
# Live-tracking benchmark on the embedded store: couriers streaming GPS to the customers
# watching their orders over WebSockets, then GPS ingest, idle-socket memory and the dispatch
# index on its own. Every figure comes from `hexmarket-loadgen` (see loadgen/).
#
# Seeds a demo city (COURIERS couriers, WATCHERS customers, 200 stores, 2,000 products), starts
# the release server pinned to core 0, and runs the load generator pinned to core 1
# (UNPINNED=1: neither is pinned). Loopback only; every scenario is bounded in time and stops
# by itself; the server this script started is stopped on exit.
# Usage: bench/live.sh [COURIERS] [WATCHERS] [DURATION_SECONDS] [RATE_HZ]
# Environment: BENCH_DATA=dir keeps the seeded city there and reuses it (seeding thousands of
# accounts is slow: password hashing is expensive on purpose); RESULTS=dir gets the JSON
# (default target/bench-live); IDLE (connections, default COURIERS), INGEST (couriers, 200).
set -euo pipefail

COURIERS=${1:-5000}
WATCHERS=${2:-5000}
DURATION=${3:-60}
RATE=${4:-1}
IDLE=${IDLE:-$COURIERS}
INGEST=${INGEST:-200}
PORT=${PORT:-18383}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/hexmarket
LOADGEN=$ROOT/target/release/hexmarket-loadgen
WORK=$(mktemp -d /tmp/hexmarket-live.XXXXXX)
DATA=${BENCH_DATA:-$WORK/data}
RESULTS=${RESULTS:-$ROOT/target/bench-live}
SERVER_PID=

cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Each side holds one socket per courier and watcher: raise the descriptor limit to the hard
# limit for this shell and everything it starts.
ulimit -n "$(ulimit -Hn)"
need=$(( COURIERS + WATCHERS + 1024 ))
if (( $(ulimit -n) < need )); then
  echo "warning: open-file limit $(ulimit -n) is below the ~$need sockets this run needs" >&2
fi

(cd "$ROOT" && cargo build --release --quiet -p hexmarket -p hexmarket-loadgen)
mkdir -p "$RESULTS"

# The loadgen mints tokens with the server's key, so both get the same environment.
export HEXMARKET_DATA_DIR=$DATA HEXMARKET_LOG=warn HEXMARKET_LISTEN=127.0.0.1:$PORT \
  HEXMARKET_JWT_SECRET=${HEXMARKET_JWT_SECRET:-bench-live-secret-0123456789abcdef0123456789}
BASE=http://127.0.0.1:$PORT
seed_couriers=$COURIERS
(( IDLE > seed_couriers )) && seed_couriers=$IDLE
(( INGEST > seed_couriers )) && seed_couriers=$INGEST

echo "== seed-demo: 200 stores, 2000 products, $seed_couriers couriers, $WATCHERS customers"
[[ -d $DATA/store ]] && echo "(reusing $DATA: seed-demo only adds what is missing)"
/usr/bin/time -f "seed-demo took %e s" \
  "$BIN" seed-demo --vendors 200 --products 2000 --couriers "$seed_couriers" --customers "$WATCHERS"

if [[ -n ${UNPINNED:-} ]]; then SERVER_CPUS=0-1; LOAD_CPUS=0-1; else SERVER_CPUS=0; LOAD_CPUS=1; fi
taskset -c $SERVER_CPUS "$BIN" serve &
SERVER_PID=$!
for _ in $(seq 1 150); do
  curl -fsS "$BASE/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "$BASE/health" >/dev/null

loadgen() {
  local name=$1; shift
  taskset -c $LOAD_CPUS "$LOADGEN" "$@" --url "$BASE" --server-pid "$SERVER_PID" \
    --json "$RESULTS/$name.json"
}

# Idle first, on the fresh server: memory freed by earlier load stays in the allocator and
# would hide what new sessions cost.
echo "== idle: $IDLE sockets held 10 s"
loadgen idle idle --connections "$IDLE" --hold-secs 10
echo "== live: $COURIERS couriers, $WATCHERS watchers, ${DURATION}s at ${RATE} Hz"
loadgen live live --couriers "$COURIERS" --watchers "$WATCHERS" --duration-secs "$DURATION" --rate-hz "$RATE"
echo "== ingest: $INGEST couriers, 20 s, 1 point per frame"
loadgen ingest-1 ingest --couriers "$INGEST" --duration-secs 20 --batch 1
echo "== ingest: $INGEST couriers, 20 s, 50 points per frame"
loadgen ingest-50 ingest --couriers "$INGEST" --duration-secs 20 --batch 50
echo "== server memory at the end: $(grep VmRSS /proc/$SERVER_PID/status | awk '{print $2, $3}') resident"

echo "== nearby (in-process, no server): 10000 couriers, 100000 queries"
taskset -c $LOAD_CPUS "$LOADGEN" nearby --couriers 10000 --queries 100000 --json "$RESULTS/nearby.json"
echo "JSON figures in $RESULTS"
