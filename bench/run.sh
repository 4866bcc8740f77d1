#!/usr/bin/env bash
# Every speed claim of the README, measured side by side with a peer in one run, by one command.
#
#   bench/run.sh            # full run (≈ 17 minutes once the demo city is seeded)
#   QUICK=1 bench/run.sh    # smaller and shorter, to check the harness itself
#
# Builds the release binary, seeds a demo city (BENCH_DATA=dir keeps it for the next run:
# seeding thousands of accounts is slow because password hashing is slow on purpose), installs
# the peers on demand (Node `ws` relay from npm, FastAPI + uvicorn and redis-py from pip; they
# are never build or test dependencies), and runs each scenario with the server under test
# pinned to core 0 and the load generator to core 1. Loopback only; every scenario is bounded
# in time; everything it starts is stopped by pid on exit. Writes bench/results/latest.md and
# bench/results/latest.json (machine, versions, date, every figure with its peer and ratio).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Cargo's target directory, wherever the environment puts it.
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=$TARGET/release/hexmarket
LOADGEN=$TARGET/release/hexmarket-loadgen
if [[ -n ${QUICK:-} ]]; then
  N=${N:-500}; LIVE_SECS=${LIVE_SECS:-15}; HTTP_SECS=${HTTP_SECS:-4}; INGEST_SECS=${INGEST_SECS:-8}
  CHECKOUT_SECS=${CHECKOUT_SECS:-5}; NOTIFY_ORDERS=${NOTIFY_ORDERS:-300}
else
  N=${N:-5000}; LIVE_SECS=${LIVE_SECS:-60}; HTTP_SECS=${HTTP_SECS:-15}; INGEST_SECS=${INGEST_SECS:-20}
  CHECKOUT_SECS=${CHECKOUT_SECS:-15}; NOTIFY_ORDERS=${NOTIFY_ORDERS:-3000}
fi
# Offered rate of the fixed-rate catalog runs, the same for hexmarket and the FastAPI peer: one
# the peer (one uvicorn worker on one core) sustains on search as well as on product reads.
HTTP_RATE=${HTTP_RATE:-2000}
# Flash sale: units of the one product on sale, and how many customers try to buy one.
FLASH_STOCK=${FLASH_STOCK:-200}
FLASH_BUYERS=${FLASH_BUYERS:-$(( N < 2000 ? N : 2000 ))}
PORT=${PORT:-18484}
RELAY_PORT=${RELAY_PORT:-18485}
PEER_PORT=${PEER_PORT:-18486}
WORK=$(mktemp -d /tmp/hexmarket-run.XXXXXX)
DATA=${BENCH_DATA:-$WORK/data}
RAW=$WORK/raw
OUT=$ROOT/bench/results
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$RAW" "$OUT"

# --- tools and peers -------------------------------------------------------------------------
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
command -v node >/dev/null || { echo "node and npm are needed for the relay peer" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet -p hexmarket -p hexmarket-loadgen)
npm install --no-audit --no-fund --silent --prefix "$ROOT/bench/peers/relay" >/dev/null
python3 -m pip install --quiet --root-user-action=ignore -r "$ROOT/bench/peers/requirements.txt"
ulimit -n "$(ulimit -Hn)"

export HEXMARKET_DATA_DIR=$DATA HEXMARKET_LOG=warn HEXMARKET_LISTEN=127.0.0.1:$PORT \
  HEXMARKET_JWT_SECRET=${HEXMARKET_JWT_SECRET:-bench-run-secret-0123456789abcdef0123456789}
BASE=http://127.0.0.1:$PORT

echo "== seed-demo: 200 stores, 2,000 products, $N couriers, $N customers"
"$BIN" seed-demo --vendors 200 --products 2000 --couriers "$N" --customers "$N" >/dev/null

# Starts a command pinned to core 0, remembers its pid in $STARTED.
start() {
  taskset -c 0 "$@" &
  STARTED=$!
  PIDS+=("$STARTED")
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

wait_http() {
  for _ in $(seq 1 200); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  exit 1
}

start_hexmarket() {
  start "$BIN" serve
  HEX=$STARTED
  wait_http "$BASE/health"
}

loadgen() {
  taskset -c 1 "$LOADGEN" "$@"
}

# CPU ticks (user + system) a process has used so far.
ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# wrk against one URL with the server's CPU measured around it: writes RAW/$name.json.
http_run() {
  local name=$1 pid=$2 url=$3 script=${4:-}
  local before after
  before=$(ticks "$pid")
  if [[ -n $script ]]; then
    taskset -c 1 wrk -t1 -c64 -d"${HTTP_SECS}s" --latency -s "$script" "$url" >"$RAW/$name.wrk"
  else
    taskset -c 1 wrk -t1 -c64 -d"${HTTP_SECS}s" --latency "$url" >"$RAW/$name.wrk"
  fi
  after=$(ticks "$pid")
  python3 "$ROOT/bench/run/wrk_json.py" "$RAW/$name.wrk" "$before" "$after" >"$RAW/$name.json"
}

# `loadgen http` at the fixed offered rate $HTTP_RATE (open loop, latency from each request's
# due time, server CPU from /proc) against one base URL and a file of paths: RAW/$name.json.
fixed_run() {
  local name=$1 pid=$2 base=$3 paths=$4
  loadgen http --url "$base" --server-pid "$pid" --paths "$paths" --rate "$HTTP_RATE" \
    --duration-secs "$HTTP_SECS" --warmup-secs 2 --connections 64 --json "$RAW/$name.json" \
    >"$RAW/$name.txt"
}

# --- 1. live fan-out: hexmarket vs a zero-logic relay ----------------------------------------
echo "== idle sockets: $N authenticated courier sockets on a fresh node"
start_hexmarket
loadgen idle --url "$BASE" --server-pid "$HEX" --connections "$N" --hold-secs 5 \
  --json "$RAW/idle.json" >"$RAW/idle.txt"
stop "$HEX"
echo "== live fan-out: hexmarket, $N couriers and $N watchers, ${LIVE_SECS}s at 1 Hz"
start_hexmarket
loadgen live --url "$BASE" --server-pid "$HEX" --couriers "$N" --watchers "$N" \
  --duration-secs "$LIVE_SECS" --rate-hz 1 --json "$RAW/live.json" >"$RAW/live.txt"
stop "$HEX"
# relay_run NAME [--ack]: the Node relay (acknowledging each position with --ack) under the
# same load as hexmarket's live run; figures in $RAW/NAME.json.
relay_run() {
  local name=$1
  shift
  start node "$ROOT/bench/peers/relay/relay.js" "$RELAY_PORT" "$@"
  RELAY=$STARTED
  sleep 1
  loadgen relay --url "ws://127.0.0.1:$RELAY_PORT" --server-pid "$RELAY" --publishers "$N" \
    --subscribers "$N" --duration-secs "$LIVE_SECS" --rate-hz 1 --json "$RAW/$name.json" \
    >"$RAW/$name.txt"
  stop "$RELAY"
}
echo "== live fan-out: relay (Node ws), $N publishers and $N subscribers"
relay_run relay
echo "== live fan-out: acknowledging relay (Node ws, reads and acknowledges each position)"
relay_run relay-ack --ack

# --- 2. catalog HTTP: hexmarket vs FastAPI -----------------------------------------------------
echo "== catalog HTTP: hexmarket"
start_hexmarket
curl -fsS "$BASE/api/v1/products?limit=100" \
  | python3 -c 'import json,sys; print("\n".join(p["id"] for p in json.load(sys.stdin)["items"]))' \
  >"$WORK/ids.txt"
python3 - "$BASE" "$WORK/ids.txt" "$WORK/products.json" <<'PY'
import json, sys, urllib.request
base, ids, out = sys.argv[1:]
bodies = [json.load(urllib.request.urlopen(f"{base}/api/v1/products/{i.strip()}"))
          for i in open(ids) if i.strip()]
json.dump(bodies, open(out, "w"))
PY
export IDS_FILE=$WORK/ids.txt
# The same requests as ids.lua and words.lua, as path files for the fixed-rate runs.
sed 's|^|/api/v1/products/|' "$WORK/ids.txt" >"$WORK/product-paths.txt"
grep -o '"[a-z]*"' "$ROOT/bench/run/words.lua" | tr -d '"' | sed 's|^|/api/v1/products?q=|' \
  >"$WORK/search-paths.txt"
echo /health >"$WORK/health-paths.txt"
http_run hex-health "$HEX" "$BASE/health"
http_run hex-product "$HEX" "$BASE" "$ROOT/bench/run/ids.lua"
http_run hex-search "$HEX" "$BASE" "$ROOT/bench/run/words.lua"
echo "== catalog HTTP: hexmarket at $HTTP_RATE req/s offered"
fixed_run hex-health-fixed "$HEX" "$BASE" "$WORK/health-paths.txt"
fixed_run hex-product-fixed "$HEX" "$BASE" "$WORK/product-paths.txt"
fixed_run hex-search-fixed "$HEX" "$BASE" "$WORK/search-paths.txt"
stop "$HEX"
echo "== catalog HTTP: FastAPI + uvicorn"
# The interpreter itself, not a wrapper such as a pyenv shim: its pid is the one whose CPU counts.
start "$(python3 -c 'import sys; print(sys.executable)')" "$ROOT/bench/peers/catalog_app.py" \
  "$WORK/products.json" --port "$PEER_PORT"
PEER=$STARTED
wait_http "http://127.0.0.1:$PEER_PORT/health"
http_run peer-product "$PEER" "http://127.0.0.1:$PEER_PORT" "$ROOT/bench/run/ids.lua"
http_run peer-search "$PEER" "http://127.0.0.1:$PEER_PORT" "$ROOT/bench/run/words.lua"
echo "== catalog HTTP: FastAPI + uvicorn at $HTTP_RATE req/s offered"
fixed_run peer-product-fixed "$PEER" "http://127.0.0.1:$PEER_PORT" "$WORK/product-paths.txt"
fixed_run peer-search-fixed "$PEER" "http://127.0.0.1:$PEER_PORT" "$WORK/search-paths.txt"
stop "$PEER"

# --- 3. nearby couriers: in-process H3 index vs Redis GEOSEARCH --------------------------------
echo "== nearby couriers: 10,000 online"
taskset -c 1 "$LOADGEN" nearby --couriers 10000 --queries 100000 --json "$RAW/nearby.json" \
  >"$RAW/nearby.txt"
redis-cli -h 127.0.0.1 ping >/dev/null
GEO_QUERIES=${QUICK:+2000}
taskset -c 1 python3 "$ROOT/bench/peers/geosearch.py" --json --couriers 10000 \
  --queries "${GEO_QUERIES:-20000}" >"$RAW/geosearch.json"

# --- 4. checkout: uncontended checkouts, then a flash sale ------------------------------------
echo "== checkout: 64 customers at once for ${CHECKOUT_SECS}s, then $FLASH_BUYERS buyers for $FLASH_STOCK units"
start_hexmarket
# A non-zero exit (an oversell) still writes RAW/checkout.json, which the report shows.
loadgen checkout --url "$BASE" --server-pid "$HEX" --customers "$N" --concurrency 64 \
  --duration-secs "$CHECKOUT_SECS" --products 100 --stock "$FLASH_STOCK" --buyers "$FLASH_BUYERS" \
  --json "$RAW/checkout.json" >"$RAW/checkout.txt" \
  || echo "loadgen checkout failed; see $RAW/checkout.txt" >&2
stop "$HEX"

# --- 5. ingest on hexmarket ---------------------------------------------------------------------
echo "== ingest: 1 point per frame and 50 points per frame"
start_hexmarket
loadgen ingest --url "$BASE" --server-pid "$HEX" --couriers "$(( N < 3000 ? N : 3000 ))" \
  --duration-secs "$INGEST_SECS" --batch 1 --json "$RAW/ingest-1.json" >"$RAW/ingest-1.txt"
loadgen ingest --url "$BASE" --server-pid "$HEX" --couriers "$(( N < 3000 ? N : 3000 ))" \
  --duration-secs "$INGEST_SECS" --batch 50 --json "$RAW/ingest-50.json" >"$RAW/ingest-50.txt"
stop "$HEX"

# --- 6. notifications: a backlog of paid orders, delivered --------------------------------------
echo "== notifications: $NOTIFY_ORDERS paid orders with notifications off, then the backlog drained"
SMTP_PORT=${SMTP_PORT:-18487}
taskset -c 1 "$LOADGEN" smtp-sink --port "$SMTP_PORT" --max-secs 900 >"$RAW/smtp-sink.txt" &
SINK=$!
PIDS+=("$SINK")
# A first start with notifications on gives the consumer its cursor before the backlog.
start_hexmarket
sleep 1
stop "$HEX"
HEXMARKET_NOTIFICATIONS=false start_hexmarket
loadgen orders --url "$BASE" --customers "$N" --orders "$NOTIFY_ORDERS" --concurrency 64 \
  --json "$RAW/orders.json" >"$RAW/orders.txt"
stop "$HEX"
# Each paid order: the customer's "paid" entry and receipt, the store's entry and "new order"
# email ("created" is nobody's news in-app, and its email is off by default).
HEXMARKET_SMTP_URL=smtp://127.0.0.1:$SMTP_PORT start_hexmarket
PAID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["paid_orders"])' "$RAW/orders.json")
loadgen drain --url "$BASE" --server-pid "$HEX" --expect "$(( PAID * 4 ))" --timeout-secs 300 \
  --json "$RAW/notifications.json" >"$RAW/notifications.txt" \
  || echo "loadgen drain failed; see $RAW/notifications.txt" >&2
stop "$HEX"
stop "$SINK"

# --- hot paths on their own -------------------------------------------------------------------
echo "== hot paths (criterion)"
(cd "$ROOT" && taskset -c 1 cargo bench --quiet --bench hot_paths --bench identity -- --quick >"$RAW/hot_paths.txt" 2>&1) \
  || echo "criterion benches failed; see $RAW/hot_paths.txt" >&2
python3 - "$ROOT/target/criterion" "$RAW/hot_paths.json" <<'PY'
import json, pathlib, sys
root, out = pathlib.Path(sys.argv[1]), sys.argv[2]
figures = {}
for estimates in root.glob("**/new/estimates.json"):
    name = str(estimates.parent.parent.relative_to(root))
    figures[name] = json.load(open(estimates))["mean"]["point_estimate"]
json.dump({"mean_ns": figures}, open(out, "w"))
PY

echo "== report"
python3 "$ROOT/bench/run/report.py" "$RAW" "$OUT" "$N" "$LIVE_SECS" "$HTTP_SECS"
cat "$OUT/latest.md"
