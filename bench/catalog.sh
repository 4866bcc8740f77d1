#!/usr/bin/env bash
# Catalog benchmark: seeds a demo city with PRODUCTS products (default 100,000) on the
# embedded store, times `reindex`, then measures with wrk against the release binary:
#   - search at 32 connections (latency percentiles),
#   - GET /api/v1/products/{id} and GET /health in the same run (throughput ratio),
#   - the server's resident memory and the index size on disk.
# The server is pinned to core 0 and wrk to core 1 (UNPINNED=1: the server may use both cores
# and wrk is not pinned either). Everything runs on 127.0.0.1 and stops by
# itself. Usage: bench/catalog.sh [PRODUCTS] [DURATION_SECONDS]
set -euo pipefail

PRODUCTS=${1:-100000}
DURATION=${2:-10}
PORT=${PORT:-18181}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/hexmarket
WORK=$(mktemp -d /tmp/hexmarket-bench.XXXXXX)
# BENCH_DATA=dir keeps the seeded data there (and reuses it on the next run).
DATA=${BENCH_DATA:-$WORK/data}
SERVER_PID=

cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)

export HEXMARKET_DATA_DIR=$DATA HEXMARKET_LOG=warn HEXMARKET_LISTEN=127.0.0.1:$PORT
vendors=$(( PRODUCTS / 100 )); (( vendors < 50 )) && vendors=50

echo "== seed-demo: $vendors vendors, $PRODUCTS products"
[[ -d $DATA/store ]] && echo "(reusing $DATA: seed-demo only adds what is missing)"
/usr/bin/time -f "seed-demo took %e s, max RSS %M KiB" \
  "$BIN" seed-demo --vendors "$vendors" --products "$PRODUCTS" --couriers 200 --customers 100

echo "== reindex"
/usr/bin/time -f "reindex took %e s, max RSS %M KiB" "$BIN" reindex
echo "index size on disk: $(du -sh "$DATA/search" | cut -f1)"

if [[ -n ${UNPINNED:-} ]]; then SERVER_CPUS=0-1; WRK_CPUS=0-1; else SERVER_CPUS=0; WRK_CPUS=1; fi
taskset -c $SERVER_CPUS "$BIN" serve &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.2
done

# Product ids for the product-read mix, from a first page of search results.
ids=$(curl -fsS "http://127.0.0.1:$PORT/api/v1/products?limit=100&sort=newest" \
  | python3 -c 'import json,sys; print(" ".join(h["id"] for h in json.load(sys.stdin)["items"]))')
{
  echo 'local ids = {'
  for id in $ids; do echo "  \"$id\","; done
  echo '}'
  echo 'local i = 0'
  echo 'request = function() i = i + 1; return wrk.format("GET", "/api/v1/products/" .. ids[(i % #ids) + 1]) end'
} > "$WORK/product.lua"

# Warm up every path once.
wrk -t1 -c8 -d2s -s "$ROOT/bench/catalog/search.lua" "http://127.0.0.1:$PORT" >/dev/null

echo "== search (answers cached per index generation), 32 connections, ${DURATION}s"
taskset -c $WRK_CPUS wrk -t1 -c32 -d"${DURATION}s" --latency -s "$ROOT/bench/catalog/search.lua" "http://127.0.0.1:$PORT"
echo "== search (every request computed), 32 connections, ${DURATION}s"
taskset -c $WRK_CPUS wrk -t1 -c32 -d"${DURATION}s" --latency -s "$ROOT/bench/catalog/search-uncached.lua" "http://127.0.0.1:$PORT"
echo "== GET /health, 64 connections, ${DURATION}s"
taskset -c $WRK_CPUS wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/health"
echo "== GET /api/v1/products/{id}, 64 connections, ${DURATION}s"
taskset -c $WRK_CPUS wrk -t1 -c64 -d"${DURATION}s" --latency -s "$WORK/product.lua" "http://127.0.0.1:$PORT"

echo "== server memory: $(grep VmRSS /proc/$SERVER_PID/status | awk '{print $2, $3}') resident"
