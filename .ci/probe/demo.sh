#!/usr/bin/env bash
# demo.sh BASE_URL SEED.json WORK_DIR: `hexmarket demo` as a newcomer meets it. Starts the demo
# (not the probes' node: BASE_URL and SEED.json are not used) on a free loopback port with its
# temporary data directory under a TMPDIR of its own, and checks through the public API alone
# that within 60 s of the start the city moves: simulated customers' orders (customer1 to
# customer3, the first to order) go through their states to `delivered`, and a courier's
# position on an order's tracking changes. Then SIGINT: the process exits 0 within 20 s and its
# data directory is gone. The demo is started and stopped by pid.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

work=${3:-$(mktemp -d /tmp/hexmarket-demo-probe.XXXXXX)}
bin=$(hexmarket_bin)
rm -rf "$work/demo"
mkdir -p "$work/demo/tmp"
timeout 180 python3 - "$bin" "$work/demo" "$(free_port)" <<'PY'
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN, WORK, PORT = sys.argv[1], sys.argv[2], sys.argv[3]
BASE = f"http://127.0.0.1:{PORT}"
PASSWORD = "hexmarket-demo-2026"
CUSTOMERS = [f"customer{n}@demo.hexmarket.dev" for n in (1, 2, 3)]
WITHIN_S = 60
STOP_WITHIN_S = 20
TMP = os.path.join(WORK, "tmp")


def say(text):
    print(f"[probe {time.strftime('%H:%M:%S', time.gmtime())}] demo: {text}", file=sys.stderr, flush=True)


class Refused(Exception):
    pass


def call(method, path, token=None, body=None):
    """(status, JSON answer or None); a refused connection is status 0."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
            return answer.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def banner_data_dir(stdout_path):
    with open(stdout_path, encoding="utf-8") as f:
        found = re.search(r"data directory: (\S+) \(removed on exit\)", f.read())
    return found.group(1) if found else None


def watch(started):
    """Until WITHIN_S after the start: orders of simulated customers placed and delivered, a
    courier moving on an order's tracking. Returns what was seen, with when."""
    deadline = started + WITHIN_S
    tokens = {}
    seen = {}  # what → seconds after the start
    statuses = {}  # order id → statuses seen, in order
    first_fix = {}  # order id → the courier's first position seen on its tracking

    def note(what):
        if what not in seen:
            seen[what] = time.time() - started
            say(f"{what} after {seen[what]:.0f} s")

    while time.time() < deadline:
        for email in CUSTOMERS:
            if email not in tokens:
                status, answer = call("POST", "/api/v1/auth/login", body={"email": email, "password": PASSWORD})
                if status == 200:
                    tokens[email] = answer["access_token"]
                continue
            status, page = call("GET", "/api/v1/orders?limit=50", tokens[email])
            if status != 200:
                continue
            for order in page["items"]:
                trail = statuses.setdefault(order["id"], [])
                if not trail or trail[-1] != order["status"]:
                    trail.append(order["status"])
                note("an order placed")
                if order["status"] not in ("pending_payment", "paid"):
                    note("an order accepted by its store")
                if order["status"] == "delivered":
                    note("an order delivered")
                if order["status"] in ("courier_assigned", "picked_up") or (
                    order.get("courier_id") and order["status"] in ("accepted", "preparing", "ready_for_pickup")
                ):
                    status, tracking = call("GET", f"/api/v1/orders/{order['id']}/tracking", tokens[email])
                    fix = (tracking or {}).get("courier") if status == 200 else None
                    if fix:
                        where = (fix["lat"], fix["lng"])
                        first = first_fix.setdefault(order["id"], where)
                        if where != first:
                            note("a courier moving on an order's tracking")
        if {"an order delivered", "a courier moving on an order's tracking"} <= seen.keys():
            return seen, statuses
        time.sleep(1)
    delivered = [o for o, trail in statuses.items() if "delivered" in trail]
    raise Refused(
        f"within {WITHIN_S} s: seen {sorted(seen)}; signed in as {sorted(tokens)}; "
        f"orders and their statuses: {statuses}; delivered: {delivered}; tracking fixes: {first_fix}"
    )


def main():
    stdout_path, stderr_path = os.path.join(WORK, "stdout.log"), os.path.join(WORK, "stderr.log")
    env = dict(os.environ, TMPDIR=TMP, HEXMARKET_LOG="warn")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.time()
        demo = subprocess.Popen([BIN, "demo", "--port", PORT], stdout=out, stderr=err, env=env)
    say(f"hexmarket demo started (pid {demo.pid}) at {BASE}")
    try:
        seen, statuses = watch(started)
        data_dir = banner_data_dir(stdout_path)
        if not data_dir:
            raise Refused("the banner names no temporary data directory")
        if not data_dir.startswith(TMP + os.sep) or not os.path.isdir(data_dir):
            raise Refused(f"the data directory {data_dir} is not a directory under TMPDIR {TMP}")
        delivered = next(trail for trail in statuses.values() if "delivered" in trail)
        say(f"a delivered order went through {' → '.join(delivered)}")
        if demo.poll() is not None:
            raise Refused(f"the demo ended by itself with {demo.returncode}")
        demo.send_signal(signal.SIGINT)
        stopping = time.time()
        try:
            code = demo.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise Refused(f"still running {STOP_WITHIN_S} s after SIGINT")
        say(f"stopped {time.time() - stopping:.1f} s after SIGINT with exit code {code}")
        if code != 0:
            raise Refused(f"exit code {code} after SIGINT")
        if os.path.exists(data_dir):
            raise Refused(f"the temporary data directory {data_dir} is still there")
        if os.listdir(TMP):
            raise Refused(f"left in TMPDIR: {os.listdir(TMP)}")
        with open(stderr_path, encoding="utf-8", errors="replace") as f:
            if "panicked" in f.read():
                raise Refused("the demo panicked (see stderr.log)")
        with open(stdout_path, encoding="utf-8") as f:
            first = re.search(r"first order delivered, (\d+) s after", f.read())
        say(
            "passed: "
            + ", ".join(f"{what} after {secs:.0f} s" for what, secs in sorted(seen.items(), key=lambda i: i[1]))
            + (f"; the demo counted its first delivery after {first.group(1)} s" if first else "")
        )
    except Refused as e:
        say(f"FAILED: {e}")
        for path in (stdout_path, stderr_path):
            with open(path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-4000:]
            print(f"--- {path} (end) ---\n{tail}", file=sys.stderr)
        sys.exit(1)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


main()
PY
