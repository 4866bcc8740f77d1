#!/usr/bin/env bash
# Every speed claim of the README, measured side by side with a peer in one run, by one command.
#
#   bench/run.sh            # full run (≈ 17 minutes once the demo city is seeded, and ≈ 15–20
#                           # more for the sweep of section 7, drawn as SVG charts)
#   SWEEP=0 bench/run.sh    # without the sweep
#   QUICK=1 bench/run.sh    # smaller and shorter, to check the harness itself
#
# Builds the release binary, seeds a demo city (BENCH_DATA=dir keeps it for the next run:
# seeding thousands of accounts is slow because password hashing is slow on purpose), installs
# the peers on demand (Node `ws` relay from npm, FastAPI + uvicorn, asyncpg, PyJWT, redis-py
# and matplotlib from pip; they are never build or test dependencies; the checkout peer's
# PostgreSQL is the installed server's binaries, a cluster of its own in the run's directory),
# and runs each scenario with the server under test pinned to core 0 and the load generator to
# core 1. Loopback only; every scenario is bounded in time; everything it starts is stopped by
# pid on exit. Writes bench/results/latest.md and bench/results/latest.json (machine, versions,
# date, every figure with its peer and ratio) and the sweep's charts, bench/results/*.svg.
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
# The checkout peer's own PostgreSQL (never the system's), on loopback.
PG_PORT=${PG_PORT:-18488}
PG_PID=
WORK=$(mktemp -d /tmp/hexmarket-run.XXXXXX)
DATA=${BENCH_DATA:-$WORK/data}
RAW=$WORK/raw
OUT=$ROOT/bench/results
PIDS=()

cleanup() {
  # PostgreSQL's fast shutdown first: on SIGTERM it would wait for its clients to leave.
  if [[ -n $PG_PID ]]; then kill -INT "$PG_PID" 2>/dev/null || true; fi
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

# The checkout peer's PostgreSQL: a fresh cluster in the run's directory, pinned to core 0 like
# every server under test, durable commits (synchronous_commit and fsync on), TCP on loopback
# only. initdb refuses root, so as root the cluster belongs to the postgres user. Sets $PG_PID.
start_postgres() {
  local bin pgdata=$WORK/pg as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $bin && -x $bin/postgres ]] \
    || { echo "PostgreSQL's server is needed for the checkout peer (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$pgdata"
  if [[ $(id -u) == 0 ]]; then
    chmod 711 "$WORK"
    chown postgres: "$pgdata"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  (cd "$pgdata" && "${as[@]}" "$bin/initdb" -D "$pgdata" -U bench --auth=trust -E UTF8 \
    --locale=C >/dev/null)
  start "${as[@]}" "$bin/postgres" -D "$pgdata" -c listen_addresses=127.0.0.1 -c port="$PG_PORT" \
    -c unix_socket_directories= -c synchronous_commit=on -c fsync=on 2>"$RAW/postgres.log"
  PG_PID=$STARTED
  for _ in $(seq 1 100); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && return 0
    sleep 0.1
  done
  echo "PostgreSQL did not start; see $RAW/postgres.log" >&2
  exit 1
}

# Fast shutdown (clients disconnected, a checkpoint, then exit).
stop_postgres() {
  kill -INT "$PG_PID" 2>/dev/null || true
  wait "$PG_PID" 2>/dev/null || true
  PG_PID=
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
# Queries alone, then the combined load against an in-process R-tree (rstar) as well: every
# courier moves once per simulated second among 1,000 queries a second, the same operations in
# the same order on both, every answer compared.
echo "== nearby couriers: 10,000 online; combined with 10,000 moves a second vs an R-tree"
taskset -c 1 "$LOADGEN" nearby --couriers 10000 --queries 100000 --combined-secs 5 \
  --combined-queries 1000 --json "$RAW/nearby.json" >"$RAW/nearby.txt"
redis-cli -h 127.0.0.1 ping >/dev/null
GEO_QUERIES=${QUICK:+2000}
taskset -c 1 python3 "$ROOT/bench/peers/geosearch.py" --json --couriers 10000 \
  --queries "${GEO_QUERIES:-20000}" >"$RAW/geosearch.json"

# --- 4. checkout: uncontended checkouts, then a flash sale ------------------------------------
echo "== checkout: 64 customers at once for ${CHECKOUT_SECS}s, then $FLASH_BUYERS buyers for $FLASH_STOCK units"
start_hexmarket
# What the checkout peer starts from, read through the node's public API: its listed products
# (stock = available units), their stores, and the demo customers.
python3 "$ROOT/bench/peers/checkout_export.py" "$BASE" "$WORK/checkout-export.json"
# A non-zero exit (an oversell) still writes RAW/checkout.json, which the report shows.
loadgen checkout --url "$BASE" --server-pid "$HEX" --customers "$N" --concurrency 64 \
  --duration-secs "$CHECKOUT_SECS" --products 100 --stock "$FLASH_STOCK" --buyers "$FLASH_BUYERS" \
  --json "$RAW/checkout.json" >"$RAW/checkout.txt" \
  || echo "loadgen checkout failed; see $RAW/checkout.txt" >&2
stop "$HEX"
# checkout_peer_run NAME EXPORT [loadgen checkout options]: the FastAPI + PostgreSQL peer on a
# fresh PostgreSQL cluster, loaded from EXPORT (checkout_export.py), under `loadgen checkout`
# with the options given; figures in $RAW/NAME.json. Server CPU: the Python worker and every
# process of the PostgreSQL instance (its backends are forked per connection, so the tree is
# read again at each sample).
checkout_peer_run() {
  local name=$1 export=$2 status=0
  shift 2
  rm -rf "$WORK/pg"
  start_postgres
  start "$(python3 -c 'import sys; print(sys.executable)')" "$ROOT/bench/peers/checkout_app.py" \
    "$export" --dsn "postgresql://bench@127.0.0.1:$PG_PORT/postgres" --port "$PEER_PORT"
  PEER=$STARTED
  # Loading a large catalog into PostgreSQL takes a while: wait as long as the peer lives.
  local began=$SECONDS
  until curl -fsS "http://127.0.0.1:$PEER_PORT/health" >/dev/null 2>&1; do
    if (( SECONDS - began > 900 )) || ! kill -0 "$PEER" 2>/dev/null; then
      echo "the checkout peer did not start" >"$RAW/$name.txt"
      status=1
      break
    fi
    sleep 0.2
  done
  (( status == 0 )) && { loadgen checkout --url "http://127.0.0.1:$PEER_PORT" --server-pid "$PEER" \
    --server-tree "$PG_PID" "$@" --json "$RAW/$name.json" >"$RAW/$name.txt" || status=$?; }
  stop "$PEER"
  stop_postgres
  rm -rf "$WORK/pg"
  return "$status"
}
echo "== checkout: FastAPI + asyncpg + PostgreSQL (synchronous_commit=on), the same load"
checkout_peer_run peer-checkout "$WORK/checkout-export.json" --customers "$N" --concurrency 64 \
  --duration-secs "$CHECKOUT_SECS" --products 100 --stock "$FLASH_STOCK" \
  --buyers "$FLASH_BUYERS" || echo "loadgen checkout (peer) failed; see $RAW/peer-checkout.txt" >&2

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

# --- 7. sweep: how each cost grows with load and with catalog size ------------------------------
# SWEEP=0 skips it. Live fan-out at each of SWEEP_COURIERS couriers (and as many watchers):
# hexmarket's live run and idle sockets, and the acknowledging relay under the same load. Then
# catalogs of each of SWEEP_PRODUCTS products (200 stores): text search at SWEEP_SEARCH_RATE
# req/s offered, every answer computed (the same requests on the FastAPI peer, loaded with the
# same products), and checkout. The cities are seeded with `seed-demo --bulk` (one hash of the
# demo password for every account, products in batches of 2,048, one index rebuild) into
# SWEEP_DATA, which BENCH_DATA keeps ($BENCH_DATA.sweep; runs then work on copies of them).
# Raw files: sweep-{live,idle,relay-ack}-N.json, sweep-{search,peer-search,checkout}-P.json and
# sweep-log.tsv (what ran, how long it took, what was skipped and why); bench/run/plots.py draws
# the charts from them.
SWEEP=${SWEEP:-1}
# An empty SWEEP_COURIERS or SWEEP_PRODUCTS leaves that half out.
if [[ -n ${QUICK:-} ]]; then
  SWEEP_COURIERS=${SWEEP_COURIERS-200 500}; SWEEP_PRODUCTS=${SWEEP_PRODUCTS-2000 20000}
  SWEEP_SECS=${SWEEP_SECS:-8}; SWEEP_HTTP_SECS=${SWEEP_HTTP_SECS:-5}
  SWEEP_CHECKOUT_SECS=${SWEEP_CHECKOUT_SECS:-4}; SWEEP_CUSTOMERS=${SWEEP_CUSTOMERS:-200}
else
  SWEEP_COURIERS=${SWEEP_COURIERS-1000 5000 10000 20000}
  SWEEP_PRODUCTS=${SWEEP_PRODUCTS-10000 100000 1000000}
  SWEEP_SECS=${SWEEP_SECS:-25}; SWEEP_HTTP_SECS=${SWEEP_HTTP_SECS:-15}
  SWEEP_CHECKOUT_SECS=${SWEEP_CHECKOUT_SECS:-10}; SWEEP_CUSTOMERS=${SWEEP_CUSTOMERS:-1000}
fi
# Offered search rate, the same at every size for both servers.
SWEEP_SEARCH_RATE=${SWEEP_SEARCH_RATE:-50}
SWEEP_DATA=${SWEEP_DATA:-${BENCH_DATA:+${BENCH_DATA%/}.sweep}}
SWEEP_DATA=${SWEEP_DATA:-$WORK/sweep-data}
SWEEP_LOG=$RAW/sweep-log.tsv

# sweep_note PART SIZE SECONDS NOTE: one line of the sweep's record.
sweep_note() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SWEEP_LOG"
}

# sweep_timed PART SIZE FILE COMMAND…: runs COMMAND with its output in $RAW/FILE.txt and notes
# how long it took; a failure is noted and the sweep goes on.
sweep_timed() {
  local part=$1 size=$2 file=$3 began=$SECONDS rc=0
  shift 3
  "$@" >"$RAW/$file.txt" 2>&1 || rc=$?
  if (( rc == 0 )); then
    sweep_note "$part" "$size" $(( SECONDS - began )) ok
  else
    echo "   $part at $size failed; see $RAW/$file.txt" >&2
    sweep_note "$part" "$size" $(( SECONDS - began )) "failed (exit $rc)"
  fi
  return 0
}

# sweep_up NAME URL PID: waits for a server that may take minutes to open (a large catalog: the
# node checks its search index against the store, the peer parses every product), noting how
# long it took; fails if the server died or did not answer in 15 minutes.
sweep_up() {
  local began=$SECONDS
  until curl -fsS "$2" >/dev/null 2>&1; do
    if (( SECONDS - began > 900 )) || ! kill -0 "$3" 2>/dev/null; then
      echo "   $1 did not start" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "   $1 answered after $(( SECONDS - began )) s"
}

# sweep_seed DIR ARGS…: `seed-demo --bulk ARGS` into DIR, unless an earlier run did it.
sweep_seed() {
  local dir=$1
  shift
  local stamp="$dir/.seeded $*"
  [[ -e $stamp ]] && return 0
  mkdir -p "$dir"
  HEXMARKET_DATA_DIR=$dir "$BIN" seed-demo --bulk "$@" || return 1
  touch "$stamp"
}

if [[ $SWEEP != 0 ]]; then
  SWEEP_BEGAN=$SECONDS
  : >"$SWEEP_LOG"
  mkdir -p "$SWEEP_DATA"
  # More sockets than one HTTP worker holds by default (25,000): a pinned node has one worker.
  export HEXMARKET_MAX_CONNECTIONS_PER_WORKER=200000

  # Live fan-out. Each side holds 2n sockets (couriers and watchers, or publishers and
  # subscribers) and its own files under one open-file limit: a size beyond it is measured at
  # the largest that fits instead (once), and the record says so.
  files=$(ulimit -n)
  fit=$(( (files - 1000) / 2 / 500 * 500 ))
  sizes=()
  for n in $SWEEP_COURIERS; do
    if (( n <= fit )); then
      sizes+=("$n")
      continue
    fi
    instead=
    if (( fit > 0 )) && [[ " ${sizes[*]} " != *" $fit "* ]]; then
      sizes+=("$fit")
      instead="; measured at $fit instead"
    fi
    sweep_note live "$n" - "needs $(( 2 * n )) sockets in one process, open files are limited to $files$instead"
  done
  most=$(printf '%s\n' 0 "${sizes[@]}" | sort -n | tail -n 1)
  if (( most > 0 )); then
    echo "== sweep: live fan-out at ${sizes[*]} couriers, as many watchers, ${SWEEP_SECS}s each"
    began=$SECONDS
    if sweep_seed "$SWEEP_DATA/live" --vendors 200 --products 2000 --couriers "$most" \
         --customers "$most" >"$RAW/sweep-seed-live.txt" 2>&1; then
      sweep_note seed-live "$most" $(( SECONDS - began )) ok
      began=$SECONDS
      rm -rf "$WORK/sweep-live"
      cp -a "$SWEEP_DATA/live" "$WORK/sweep-live"
      [[ $SWEEP_DATA == "$WORK"/* ]] || sweep_note copy-live "$most" $(( SECONDS - began )) ok
    else
      sweep_note seed-live "$most" $(( SECONDS - began )) "failed; see sweep-seed-live.txt"
      sizes=()
    fi
    export HEXMARKET_DATA_DIR=$WORK/sweep-live
    for n in "${sizes[@]}"; do
      echo "   $n couriers: idle sockets, live run, acknowledging relay"
      start "$BIN" serve
      HEX=$STARTED
      if sweep_up hexmarket "$BASE/health" "$HEX"; then
        sweep_timed idle "$n" "sweep-idle-$n" loadgen idle --url "$BASE" --server-pid "$HEX" \
          --connections "$n" --hold-secs 5 --json "$RAW/sweep-idle-$n.json"
      fi
      stop "$HEX"
      start "$BIN" serve
      HEX=$STARTED
      if sweep_up hexmarket "$BASE/health" "$HEX"; then
        sweep_timed live "$n" "sweep-live-$n" loadgen live --url "$BASE" --server-pid "$HEX" \
          --couriers "$n" --watchers "$n" --duration-secs "$SWEEP_SECS" --rate-hz 1 \
          --setup-timeout-secs 900 --json "$RAW/sweep-live-$n.json"
      fi
      stop "$HEX"
      N=$n LIVE_SECS=$SWEEP_SECS sweep_timed relay-ack "$n" "sweep-relay-ack-$n-run" \
        relay_run "sweep-relay-ack-$n" --ack
    done
    rm -rf "$WORK/sweep-live"
  fi

  # Catalog size: search and checkout on a catalog of each size.
  search_paths=$WORK/sweep-search-paths.txt
  # One path per request of a run, so no answer repeats (`max_price` is a bound no product
  # reaches, which keeps hexmarket's answer cache out of it; the peer ignores it).
  python3 - "$ROOT/bench/run/words.lua" "$search_paths" \
    $(( SWEEP_SEARCH_RATE * (SWEEP_HTTP_SECS + 3) )) <<'PY'
import re, sys
words, out, count = re.findall(r'"([a-z]+)"', open(sys.argv[1]).read()), sys.argv[2], int(sys.argv[3])
with open(out, "w") as f:
    for i in range(count):
        f.write(f"/api/v1/products?q={words[i % len(words)]}&max_price={1_000_000_000 + i}\n")
PY
  for p in $SWEEP_PRODUCTS; do
    echo "== sweep: a catalog of $p products"
    dir=$SWEEP_DATA/catalog-$p
    began=$SECONDS
    if ! sweep_seed "$dir" --vendors 200 --products "$p" --couriers 0 \
         --customers "$SWEEP_CUSTOMERS" >"$RAW/sweep-seed-catalog-$p.txt" 2>&1; then
      sweep_note seed-catalog "$p" $(( SECONDS - began )) "failed; see sweep-seed-catalog-$p.txt"
      continue
    fi
    sweep_note seed-catalog "$p" $(( SECONDS - began )) ok
    if [[ $SWEEP_DATA == "$WORK"/* ]]; then
      export HEXMARKET_DATA_DIR=$dir
    else
      # Kept for the next run: this run works on a copy.
      began=$SECONDS
      rm -rf "$WORK/sweep-catalog"
      cp -a "$dir" "$WORK/sweep-catalog"
      sweep_note copy-catalog "$p" $(( SECONDS - began )) ok
      export HEXMARKET_DATA_DIR=$WORK/sweep-catalog
    fi
    began=$SECONDS
    start "$BIN" serve
    HEX=$STARTED
    if ! sweep_up hexmarket "$BASE/health" "$HEX"; then
      sweep_note start-hexmarket "$p" $(( SECONDS - began )) "failed"
      stop "$HEX"
      continue
    fi
    sweep_note start-hexmarket "$p" $(( SECONDS - began )) ok
    # The peer's products: every listed product as search lists it (the fields of a hit, the
    # fields the peer searches and answers with), kept next to the seeded catalog. Listed store
    # by store: a page deep into the whole catalog costs the search as much as the pages
    # before it (a million products would take ten minutes), a page of one store's does not.
    products=$dir.products.json
    if [[ ! -s $products ]]; then
      began=$SECONDS
      python3 - "$BASE" "$products" 2>"$RAW/sweep-export-$p.txt" <<'PY' \
        || sweep_note export-products "$p" $(( SECONDS - began )) "failed; see sweep-export-$p.txt"
import json, os, sys, urllib.parse, urllib.request
base, out = sys.argv[1:]

def pages(path):
    cursor = None
    while True:
        page = json.load(urllib.request.urlopen(
            base + path + (f"&cursor={urllib.parse.quote(cursor, safe='')}" if cursor else ""),
            timeout=60))
        yield page["items"]
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            return

items = []
for stores in pages("/api/v1/vendors?limit=100"):
    for store in stores:
        for hits in pages(f"/api/v1/products?vendor={store['id']}&limit=100&sort=newest"):
            items += hits
with open(out + ".part", "w") as f:
    json.dump(items, f)
os.replace(out + ".part", out)
print(f"{len(items)} products exported", file=sys.stderr)
PY
      [[ -s $products ]] && sweep_note export-products "$p" $(( SECONDS - began )) ok
    fi
    sweep_timed search "$p" "sweep-search-$p" loadgen http --url "$BASE" --server-pid "$HEX" \
      --paths "$search_paths" --rate "$SWEEP_SEARCH_RATE" --duration-secs "$SWEEP_HTTP_SECS" \
      --warmup-secs 2 --connections 64 --json "$RAW/sweep-search-$p.json"
    exported=
    if declare -F checkout_peer_run >/dev/null; then
      began=$SECONDS
      rm -f "$WORK/sweep-checkout-export.json"
      if python3 "$ROOT/bench/peers/checkout_export.py" "$BASE" "$WORK/sweep-checkout-export.json" \
           2>"$RAW/sweep-checkout-export-$p.txt"; then
        exported=1
        sweep_note export-checkout "$p" $(( SECONDS - began )) ok
      else
        sweep_note export-checkout "$p" $(( SECONDS - began )) "failed; see sweep-checkout-export-$p.txt"
      fi
    fi
    sweep_timed checkout "$p" "sweep-checkout-$p" loadgen checkout --url "$BASE" \
      --server-pid "$HEX" --customers "$SWEEP_CUSTOMERS" --concurrency 64 \
      --duration-secs "$SWEEP_CHECKOUT_SECS" --products 100 --stock 50 --buyers 100 \
      --json "$RAW/sweep-checkout-$p.json"
    stop "$HEX"
    rm -rf "$WORK/sweep-catalog"
    if [[ -s $products ]]; then
      began=$SECONDS
      start "$(python3 -c 'import sys; print(sys.executable)')" \
        "$ROOT/bench/peers/catalog_app.py" "$products" --port "$PEER_PORT"
      PEER=$STARTED
      if sweep_up "FastAPI peer" "http://127.0.0.1:$PEER_PORT/health" "$PEER"; then
        sweep_note start-peer "$p" $(( SECONDS - began )) ok
        sweep_timed peer-search "$p" "sweep-peer-search-$p" loadgen http \
          --url "http://127.0.0.1:$PEER_PORT" --server-pid "$PEER" --paths "$search_paths" \
          --rate "$SWEEP_SEARCH_RATE" --duration-secs "$SWEEP_HTTP_SECS" --warmup-secs 2 \
          --connections 64 --json "$RAW/sweep-peer-search-$p.json"
      else
        sweep_note start-peer "$p" $(( SECONDS - began )) failed
      fi
      stop "$PEER"
    fi
    # The checkout peer at this size: `checkout_peer_run` (section 4) starts it on what
    # checkout_export.py read from the node of this size, under the same load as hexmarket.
    if [[ -n $exported ]]; then
      sweep_timed peer-checkout "$p" "sweep-peer-checkout-$p-run" \
        checkout_peer_run "sweep-peer-checkout-$p" "$WORK/sweep-checkout-export.json" \
        --customers "$SWEEP_CUSTOMERS" --concurrency 64 --duration-secs "$SWEEP_CHECKOUT_SECS" \
        --products 100 --stock 50 --buyers 100
    elif declare -F checkout_peer_run >/dev/null; then
      sweep_note peer-checkout "$p" - "its starting data could not be exported"
    else
      sweep_note peer-checkout "$p" - "no checkout peer wired into the sweep"
    fi
  done
  export HEXMARKET_DATA_DIR=$DATA
  unset HEXMARKET_MAX_CONNECTIONS_PER_WORKER
  echo "== sweep took $(( SECONDS - SWEEP_BEGAN )) s"
fi

echo "== report"
python3 "$ROOT/bench/run/report.py" "$RAW" "$OUT" "$N" "$LIVE_SECS" "$HTTP_SECS"
# The sweep's charts (SVG), from latest.json.
python3 "$ROOT/bench/run/plots.py" "$OUT"
cat "$OUT/latest.md"
