# Shared by the probe scripts (sourced): the tools they install, and a hexmarket node on a
# loopback port with a data directory of its own, stopped by pid on exit.

PROBE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$PROBE_DIR/../.." && pwd)"

# Pinned versions of what the probes install.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1
AIOSMTPD_VERSION=1.4.6
WEBSOCKETS_VERSION=17.4
CRYPTOGRAPHY_VERSION=48.0.0

log() { printf '[probe %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Everything started here is stopped by pid when the script exits.
PROBE_PIDS=()
stop_started() {
  local pid
  for pid in "${PROBE_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  PROBE_PIDS=()
}

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The debug binary (built by `cargo test` already, so this is quick).
hexmarket_bin() {
  (cd "$REPO_DIR" && cargo build --quiet --bin hexmarket) >&2
  printf '%s\n' "$REPO_DIR/target/debug/hexmarket"
}

# start_node BIN DATA_DIR LOG: sets NODE_BASE (its URL) and NODE_PID, which joins PROBE_PIDS.
# Not in a subshell, or the pid would be lost to the trap.
start_node() {
  local bin=$1 data=$2 logfile=$3 port
  port=$(free_port)
  HEXMARKET_LISTEN="127.0.0.1:$port" HEXMARKET_DATA_DIR="$data" HEXMARKET_COOKIE_SECURE=false \
    HEXMARKET_LOG="${HEXMARKET_LOG:-warn}" HEXMARKET_WORKERS=2 HEXMARKET_ACTOR_THREADS=2 \
    "$bin" serve >"$logfile" 2>&1 &
  NODE_PID=$!
  PROBE_PIDS+=("$NODE_PID")
  NODE_BASE="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do
    if curl -fsS --max-time 2 "$NODE_BASE/health" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$NODE_PID" 2>/dev/null || break
    sleep 0.2
  done
  log "hexmarket did not become healthy; its log:"
  tail -50 "$logfile" >&2
  return 1
}
