#!/usr/bin/env bash
# Checkout benchmark on the embedded store with the simulated payment provider: cart adds and
# uncontended checkouts per second, with latency percentiles, at 64 connections.
# Seeds a demo city, gives 100 in-stock products of nearby stores a large stock (through the
# API, as their vendors), mints CUSTOMERS customer tokens, runs cart adds (customers and
# products round-robin, so no product is hot), then checks every cart out once with its own
# Idempotency-Key. Server pinned to core 0, wrk to core 1; loopback only; stops by itself.
# Usage: bench/checkout.sh [CUSTOMERS] [SECONDS]
set -euo pipefail

CUSTOMERS=${1:-40000}
DURATION=${2:-8}
PORT=${PORT:-18282}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/hexmarket
WORK=$(mktemp -d /tmp/hexmarket-checkout.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
SECRET=bench-secret-0123456789abcdef0123456789abcdef
BASE=http://127.0.0.1:$PORT
export HEXMARKET_DATA_DIR=$WORK/data HEXMARKET_LOG=warn HEXMARKET_LISTEN=127.0.0.1:$PORT \
  HEXMARKET_JWT_SECRET=$SECRET
"$BIN" seed-demo --vendors 50 --products 5000 --couriers 0 --customers 0 >/dev/null

taskset -c 0 "$BIN" serve &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fsS "$BASE/health" >/dev/null 2>&1 && break; sleep 0.2; done

# 100 products of stores within 4 km of the delivery address (every demo store delivers at
# least 5 km), each stocked with a million units by its vendor.
curl -fsS "$BASE/api/v1/products?near=52.5219,13.4132&radius_km=4&limit=100" \
  | python3 -c 'import json,sys; [print(h["id"], h["vendor_id"]) for h in json.load(sys.stdin)["items"]]' \
  > "$WORK/listed"
while read -r product vendor; do
  owner=$(curl -fsS "$BASE/api/v1/vendors/$vendor" | python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"])')
  token=$(python3 "$ROOT/bench/checkout/mint.py" "$SECRET" vendor "$owner")
  curl -fsS -X PUT "$BASE/api/v1/products/$product/inventory" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"stock": 1000000, "reason": "benchmark"}' >/dev/null
  echo "$product"
done < "$WORK/listed" > "$WORK/products"
python3 "$ROOT/bench/checkout/mint.py" "$SECRET" customers "$CUSTOMERS" > "$WORK/tokens"
echo "$(wc -l < "$WORK/products") products, $CUSTOMERS customers"

export TOKENS=$WORK/tokens PRODUCTS=$WORK/products
echo "== cart adds, 64 connections, ${DURATION}s"
taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency -s "$ROOT/bench/checkout/cart.lua" "$BASE"
echo "== checkouts (simulated payment), 64 connections, ${DURATION}s"
taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency -s "$ROOT/bench/checkout/checkout.lua" "$BASE"
echo "== server memory: $(grep VmRSS /proc/$SERVER_PID/status | awk '{print $2, $3}') resident"
curl -fsS "$BASE/metrics" | grep -E '^hexmarket_live_actors' || true
