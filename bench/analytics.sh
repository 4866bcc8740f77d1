#!/usr/bin/env bash
# Analytics benchmark, the two figures of the README's Analytics section:
#   1. report latency: `seed-analytics` writes STORES stores' ORDERS orders over DAYS days into
#      the rollups, then `hexmarket-loadgen analytics` asks every report over the whole range,
#      one request at a time, against a node that folds nothing;
#   2. cost on the order path: ORDERS_PAID paid orders (`hexmarket-loadgen orders`) placed on a
#      fresh copy of one demo city with analytics off (the server's CPU while placing them and
#      for 8 s after), then the node restarted with analytics
#      on to fold that backlog, against a restart with nothing to fold (the server's CPU from
#      /proc over WINDOW seconds each), ROUNDS times; `rebuild-analytics --check` afterwards
#      must find no difference.
# The server is pinned to core 0 and the load generator to core 1. Everything runs on
# 127.0.0.1 and stops by itself; what it starts is stopped by pid.
# Usage: bench/analytics.sh   (STORES=1000 ORDERS=1000000 DAYS=365 SECS=15 ORDERS_PAID=2000
#                              ROUNDS=3 WINDOW=20; BENCH_DATA=dir keeps the seeded history)
set -euo pipefail

STORES=${STORES:-1000}
ORDERS=${ORDERS:-1000000}
DAYS=${DAYS:-365}
SECS=${SECS:-15}
ORDERS_PAID=${ORDERS_PAID:-2000}
ROUNDS=${ROUNDS:-3}
WINDOW=${WINDOW:-20}
PORT=${PORT:-18282}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/hexmarket
LOADGEN=$ROOT/target/release/hexmarket-loadgen
WORK=$(mktemp -d /tmp/hexmarket-analytics.XXXXXX)
HISTORY=${BENCH_DATA:-$WORK/history}
SERVER_PID=

cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet -p hexmarket -p hexmarket-loadgen)
export HEXMARKET_LOG=warn HEXMARKET_LISTEN=127.0.0.1:$PORT HEXMARKET_NOTIFICATIONS=false \
  HEXMARKET_JWT_SECRET=${HEXMARKET_JWT_SECRET:-bench-analytics-secret-0123456789abcdef0123}
BASE=http://127.0.0.1:$PORT

# Starts the server on data directory $1 with analytics $2 (true/false), pinned to core 0.
serve() {
  HEXMARKET_DATA_DIR=$1 HEXMARKET_ANALYTICS=$2 taskset -c 0 "$BIN" serve &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -fsS "$BASE/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers at $BASE" >&2
  exit 1
}

halt() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# CPU ticks (user + system) the server has used so far.
ticks() {
  awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"
}

echo "== 1. reports over $DAYS days of $STORES stores and $ORDERS orders"
if [[ -d $HISTORY/store ]]; then
  echo "(reusing the history in $HISTORY)"
else
  /usr/bin/time -f "seed-analytics took %e s, max RSS %M KiB" env HEXMARKET_DATA_DIR="$HISTORY" \
    "$BIN" seed-analytics --stores "$STORES" --orders "$ORDERS" --days "$DAYS"
fi
serve "$HISTORY" false
taskset -c 1 "$LOADGEN" analytics --url "$BASE" --server-pid "$SERVER_PID" --stores "$STORES" \
  --days "$DAYS" --concurrency 1 --duration-secs "$SECS"
halt

echo "== 2. the consumer's cost per paid order ($ORDERS_PAID orders, $ROUNDS rounds)"
CITY=$WORK/city
HEXMARKET_DATA_DIR=$CITY "$BIN" seed-demo --vendors 20 --products 200 --couriers 10 \
  --customers 300 >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  for backlog in yes no; do
    rm -rf "$WORK/run" && cp -a "$CITY" "$WORK/run"
    if [[ $backlog == yes ]]; then
      serve "$WORK/run" false
      before=$(ticks)
      HEXMARKET_DATA_DIR=$WORK/run taskset -c 1 "$LOADGEN" orders --url "$BASE" --customers 300 \
        --orders "$ORDERS_PAID" --concurrency 64 --json "$WORK/orders.json" >/dev/null
      # What the node does for them in the seconds after (the ledger's bookings) counts too.
      sleep 8
      placed=$(( $(ticks) - before ))
      paid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["paid_orders"])' \
        "$WORK/orders.json")
      halt
    fi
    serve "$WORK/run" true
    before=$(ticks)
    sleep "$WINDOW"
    if [[ $backlog == yes ]]; then folding=$(( $(ticks) - before )); else idle=$(( $(ticks) - before )); fi
    halt
    if [[ $backlog == yes ]]; then
      HEXMARKET_DATA_DIR=$WORK/run "$BIN" rebuild-analytics --check >"$WORK/check.json" \
        || { echo "rebuild-analytics --check found differences:" >&2; cat "$WORK/check.json" >&2; exit 1; }
    fi
  done
  python3 - "$placed" "$folding" "$idle" "$paid" "$round" "$(getconf CLK_TCK)" <<'EOF'
import sys
placed, folding, idle, paid, rnd, hz = map(int, sys.argv[1:])
tick_ms = 1000.0 / hz
order_ms = placed * tick_ms / paid
fold_ms = (folding - idle) * tick_ms / paid
print(f"round {rnd}: placing and paying {order_ms:.3f} CPU-ms per order; folding "
      f"{fold_ms:.3f} CPU-ms per order ({fold_ms / order_ms * 100:.1f} %)")
EOF
done
echo "(each round's backlog was folded exactly: rebuild-analytics --check found no difference)"
