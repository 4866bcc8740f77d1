"""Builds bench/results/latest.{md,json} from the raw results of one bench/run.sh run:
`report.py RAW_DIR OUT_DIR N LIVE_SECS HTTP_SECS`."""
import datetime
import json
import os
import platform
import subprocess
import sys

from plots import sweep_figures, sweep_lines

raw, out, n, live_secs, http_secs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])


def load(name):
    path = os.path.join(raw, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def version(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
    except OSError:
        return "unknown"


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def ratio(ours, theirs, higher_is_better=True):
    if not ours or not theirs:
        return None
    return round(ours / theirs if higher_is_better else theirs / ours, 2)


live, relay, relay_ack = load("live"), load("relay"), load("relay-ack")


def kernel_share(figures):
    """The part of the server's CPU the kernel spent, 0 to 1 (0 when not recorded)."""
    server = figures and figures.get("server") or {}
    cpu, sys_s = server.get("cpu_s"), server.get("cpu_sys_s")
    return sys_s / cpu if cpu and sys_s is not None else 0.0
rows = []


def row(scenario, what, ours, peer_name, theirs, unit, higher_is_better=True, goal=None):
    rows.append({
        "scenario": scenario, "what": what, "hexmarket": ours, "peer": peer_name,
        "peer_value": theirs, "unit": unit,
        "ratio": ratio(ours, theirs, higher_is_better), "goal": goal,
    })


if live and relay:
    ours = live["location_frames_delivered"] / live["server"]["cpu_s"]
    theirs = relay.get("delivered_frames_per_server_cpu_s")
    row("1 live fan-out", "frames delivered per server CPU-second", round(ours), "Node ws relay",
        theirs and round(theirs), "frames/CPU-s")
    if relay_ack:
        acked = relay_ack.get("delivered_frames_per_server_cpu_s")
        row("1 live fan-out", "frames delivered per server CPU-second",
            round(ours), "Node ws relay, acknowledging each position", acked and round(acked),
            "frames/CPU-s", goal="≥ 1.5×")
        row("1 live fan-out", "ping → watcher p99", live["ping_to_watcher_latency"]["p99_us"] / 1000,
            "Node ws relay, acknowledging", relay_ack["publish_to_subscriber_latency"]["p99_us"] / 1000,
            "ms", higher_is_better=False, goal="≤ 25 ms")
    row("1 live fan-out", "ping → watcher p99", live["ping_to_watcher_latency"]["p99_us"] / 1000,
        "Node ws relay", relay["publish_to_subscriber_latency"]["p99_us"] / 1000, "ms",
        higher_is_better=False)
    row("1 live fan-out", "ping → watcher p50", live["ping_to_watcher_latency"]["p50_us"] / 1000,
        "Node ws relay", relay["publish_to_subscriber_latency"]["p50_us"] / 1000, "ms",
        higher_is_better=False)
    # Where the CPU goes: a frame costs both servers system calls and wake-ups in the kernel
    # whatever their own code does, so the kernel's share bounds the ratio hexmarket can reach.
    ours_kernel = kernel_share(live) * 1e6 / ours if ours else None
    theirs_kernel = kernel_share(relay) * 1e6 / theirs if theirs else None
    ours_kernel, theirs_kernel = ours_kernel or None, theirs_kernel or None
    row("1 live fan-out", "server CPU per delivered frame", round(1e6 / ours, 1) if ours else None,
        "Node ws relay", round(1e6 / theirs, 1) if theirs else None, "CPU-µs", higher_is_better=False)
    row("1 live fan-out", "… of it in the kernel (system calls, TCP, wake-ups)",
        ours_kernel and round(ours_kernel, 1), "Node ws relay",
        theirs_kernel and round(theirs_kernel, 1), "CPU-µs", higher_is_better=False)
    row("1 live fan-out", "ceiling: frames per CPU-second counting hexmarket's kernel time only "
        "(the most it could reach if its own code cost nothing)",
        ours_kernel and round(1e6 / ours_kernel), "Node ws relay", theirs and round(theirs),
        "frames/CPU-s")
    idle = load("idle")
    row("1 live fan-out", "resident memory per connection",
        idle and idle["rss_per_connection_kib"], "Node ws relay", relay.get("rss_per_connection_kib"),
        "KiB", higher_is_better=False)

for what, ours, theirs in [("GET /api/v1/products/{id}", "hex-product", "peer-product"),
                           ("text search", "hex-search", "peer-search")]:
    o, t = load(ours), load(theirs)
    if o and t:
        row("2 catalog HTTP", f"{what}: server CPU per request", round(o["server_cpu_us_per_request"], 1),
            "FastAPI + uvicorn", round(t["server_cpu_us_per_request"], 1), "CPU-µs",
            higher_is_better=False, goal=None if "products" in what else "≥ 8×")
        row("2 catalog HTTP", f"{what}: p99 at 64 connections", o["p99_ms"], "FastAPI + uvicorn",
            t["p99_ms"], "ms", higher_is_better=False)
        row("2 catalog HTTP", f"{what}: throughput", round(o["requests_per_s"]), "FastAPI + uvicorn",
            round(t["requests_per_s"]), "req/s")
health, product = load("hex-health"), load("hex-product")
if health and product:
    row("2 catalog HTTP", "GET /api/v1/products/{id} vs /health (ceiling)",
        round(product["requests_per_s"]), "hexmarket /health", round(health["requests_per_s"]),
        "req/s", goal="≥ 0.85×")

# The same catalog requests at one fixed offered rate (`loadgen http`, open loop): CPU per
# request where neither server is saturated, and the latency each gives at that load.
def fixed_rate(figures):
    return figures and figures.get("offered_rate")


def cpu_per_request(figures):
    value = figures and figures.get("server_cpu_us_per_request")
    return round(value, 1) if value is not None else None


def p99_ms(figures):
    return figures and figures["latency"]["count"] and figures["latency"]["p99_us"] / 1000


http_rate = None
for what, ours, theirs in [("GET /api/v1/products/{id}", "hex-product-fixed", "peer-product-fixed"),
                           ("text search", "hex-search-fixed", "peer-search-fixed")]:
    o, t = load(ours), load(theirs)
    if not (o or t):
        continue
    http_rate = fixed_rate(o) or fixed_rate(t)
    at = f"at {http_rate:,} req/s offered"
    row("2 catalog HTTP", f"{what}: server CPU per request {at}", cpu_per_request(o),
        "FastAPI + uvicorn", cpu_per_request(t), "CPU-µs", higher_is_better=False,
        goal=None if "products" in what else "≥ 6×")
    ours_kernel = (o and cpu_per_request(o) or 0) * kernel_share(o) or None
    theirs_kernel = (t and cpu_per_request(t) or 0) * kernel_share(t) or None
    row("2 catalog HTTP", f"{what}: … of it in the kernel {at}", ours_kernel and round(ours_kernel, 1),
        "FastAPI + uvicorn", theirs_kernel and round(theirs_kernel, 1), "CPU-µs",
        higher_is_better=False)
    row("2 catalog HTTP", f"{what}: ceiling {at}: hexmarket's kernel time only against FastAPI's "
        "whole CPU per request (the most it could reach if its own code cost nothing)",
        ours_kernel and round(ours_kernel, 1), "FastAPI + uvicorn", t and cpu_per_request(t),
        "CPU-µs", higher_is_better=False)
    row("2 catalog HTTP", f"{what}: p99 {at}", p99_ms(o), "FastAPI + uvicorn", p99_ms(t), "ms",
        higher_is_better=False)
    row("2 catalog HTTP", f"{what}: achieved rate {at}", o and round(o["achieved_rate"]),
        "FastAPI + uvicorn", t and round(t["achieved_rate"]), "req/s")
health, product = load("hex-health-fixed"), load("hex-product-fixed")
if health and product:
    at = f"at {fixed_rate(health):,} req/s offered"
    row("2 catalog HTTP", f"GET /api/v1/products/{{id}} vs /health (ceiling): server CPU per request {at}",
        cpu_per_request(product), "hexmarket /health", cpu_per_request(health), "CPU-µs",
        higher_is_better=False)
    row("2 catalog HTTP", f"GET /api/v1/products/{{id}} vs /health (ceiling): p99 {at}",
        p99_ms(product), "hexmarket /health", p99_ms(health), "ms", higher_is_better=False)

nearby, geo = load("nearby"), load("geosearch")
if nearby and geo:
    row("3 nearby couriers", "nearest 5 within 3 km of 10,000: queries/s",
        round(nearby["queries_per_s"]), "Redis GEOSEARCH", round(geo["queries_per_s"]),
        "queries/s", goal="≥ 30×")
    row("3 nearby couriers", "p99", nearby["query_latency_us"]["p99"],
        "Redis GEOSEARCH", geo["query_latency_us"]["p99"], "µs", higher_is_better=False)
    row("3 nearby couriers", "hits per answer", nearby["mean_candidates"], "Redis GEOSEARCH",
        geo["mean_candidates"], "couriers")
combined = (nearby or {}).get("combined")
if combined:
    # The same moves and queries, in the same order, against an R-tree in the same process.
    h3, tree, w, agree = combined["h3"], combined["rtree"], combined["workload"], combined["agreement"]
    rtree = "rstar R-tree (in-process)"
    mix = (f"{w['couriers']:,} couriers moving once per simulated second among "
           f"{w['queries_per_simulated_second']:,} queries; answers identical in "
           f"{agree['identical']:,} of {agree['queries_compared']:,}")
    row("3 nearby couriers", f"combined updates + queries, ops/s ({mix})", round(h3["ops_per_s"]),
        rtree, round(tree["ops_per_s"]), "ops/s", goal="≥ 1×")
    row("3 nearby couriers", "combined: query p99", h3["query_latency_us"]["p99"], rtree,
        tree["query_latency_us"]["p99"], "µs", higher_is_better=False)
    row("3 nearby couriers", "combined: update p99", h3["update_latency_us"]["p99"], rtree,
        tree["update_latency_us"]["p99"], "µs", higher_is_better=False)
    row("3 nearby couriers", "combined: queries/s one core answers beside every courier's 1 Hz "
        "update (from the mean costs)", round(h3["queries_per_s_beside_1hz_updates"] or 0), rtree,
        round(tree["queries_per_s_beside_1hz_updates"] or 0), "queries/s")

checkout, peer_checkout = load("checkout"), load("peer-checkout")
if checkout:
    # The peer: FastAPI + asyncpg over PostgreSQL (synchronous_commit on), the same loadgen
    # run; its server CPU is the Python worker's plus every PostgreSQL process's.
    pc = peer_checkout or {}
    peer = "FastAPI + PostgreSQL" if peer_checkout else None

    def theirs(value, digits=None):
        return None if value is None else round(value, digits)

    def p99(figures, key):
        latency = figures.get(key) or {}
        return latency["p99_us"] / 1000 if latency.get("count") else None

    row("4 checkout", f"uncontended checkouts/s ({checkout['concurrency']} customers at once, "
        "one-unit cart add before each)", round(checkout["uncontended_checkouts_per_s"]),
        peer, theirs(pc.get("uncontended_checkouts_per_s")), "checkouts/s")
    row("4 checkout", "uncontended checkout p99", checkout["checkout_latency"]["p99_us"] / 1000,
        peer, p99(pc, "checkout_latency"), "ms", higher_is_better=False)
    row("4 checkout", "uncontended cart add p99", checkout["cart_add_latency"]["p99_us"] / 1000,
        peer, p99(pc, "cart_add_latency"), "ms", higher_is_better=False)
    if checkout.get("server_cpu_us_per_checkout") is not None:
        ours_us = checkout["server_cpu_us_per_checkout"]
        theirs_us = pc.get("server_cpu_us_per_checkout")
        row("4 checkout", "checkouts per server CPU-second (its cart add included; the peer's "
            "server is the Python worker and every PostgreSQL process)",
            round(1e6 / ours_us) if ours_us else None, peer,
            round(1e6 / theirs_us) if theirs_us else None, "checkouts/CPU-s", goal="≥ 3×")
        row("4 checkout", "server CPU per checkout (its cart add included)", round(ours_us), peer,
            theirs(theirs_us), "CPU-µs", higher_is_better=False)
    stock, sold = checkout["flash_sale_stock"], checkout["flash_sale_sold"]
    row("4 checkout", f"flash sale, {stock} units: successful checkouts/s",
        round(checkout["flash_sale_checkouts_per_s"]), peer,
        theirs(pc.get("flash_sale_checkouts_per_s")), "checkouts/s")
    row("4 checkout", f"flash sale, {stock} units: from first request to last answer",
        round(checkout["flash_sale_seconds"], 3), peer, theirs(pc.get("flash_sale_seconds"), 3),
        "s", higher_is_better=False)

    def verdict(figures):
        return ("sold == stock, stock 0 after payment" if figures["flash_sale_ok"]
                else "MISMATCH: " + figures.get("flash_sale_verdict", "?"))

    row("4 checkout", "flash sale: units sold (" + verdict(checkout) + ")"
        + (f"; peer: {verdict(pc)}" if peer_checkout else ""),
        sold, peer, pc.get("flash_sale_sold"), "units", goal=f"= {stock}")
    refused = checkout["flash_sale_refused"]
    peer_refused = pc.get("flash_sale_refused") or {}
    row("4 checkout", "flash sale: checkouts refused (" + (", ".join(refused) or "none") + ")"
        + (f"; peer: {', '.join(peer_refused) or 'none'}" if peer_checkout else ""),
        sum(refused.values()), peer, sum(peer_refused.values()) if peer_checkout else None,
        "checkouts")

for batch in (1, 50):
    ingest = load(f"ingest-{batch}")
    if ingest:
        points = ingest["points_accepted"]
        row("5 ingest", f"acknowledged points/s, {batch} per frame", round(ingest["acked_points_per_s"]),
            None, None, "points/s")
        row("5 ingest", f"server CPU per point, {batch} per frame",
            round(ingest["server"]["cpu_s"] * 1e6 / points, 1) if points else None, None, None,
            "CPU-µs")

orders, drained = load("orders"), load("notifications")
if orders and drained:
    row("6 notifications", f"backlog of {orders['paid_orders']:,} paid orders delivered: notifications/s "
        "(in-app entries written + emails sent to an SMTP sink on loopback)",
        round(drained["notifications_per_s"]), None, None, "notifications/s", goal="≥ 2,000")
    row("6 notifications", "server CPU per notification",
        round(drained["server_cpu_us_per_notification"], 1) if drained.get("server_cpu_us_per_notification") else None,
        None, None, "CPU-µs")
    row("6 notifications", "paid orders placed (cart add, checkout, payment) with notifications off",
        round(orders["orders_per_s"]), None, None, "orders/s")

hot = load("hot_paths")
if hot:
    for name, ns in sorted(hot["mean_ns"].items()):
        row("hot paths", name, round(ns / 1000, 3), None, None, "µs per call")

machine = {
    "cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
    "rustc": version("rustc", "--version"), "node": version("node", "--version"),
    "python": platform.python_version(), "redis": version("redis-server", "--version"),
    "hexmarket": version("git", "-C", os.path.dirname(os.path.dirname(out)), "rev-parse", "--short", "HEAD"),
}
result = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": machine,
    "parameters": {"couriers_and_watchers": n, "live_seconds": live_secs, "http_seconds": http_secs,
                   "http_fixed_rate": http_rate,
                   "pinning": "server under test on core 0, load generator on core 1"},
    "figures": rows,
    # How costs grow with load and catalog size (bench/run.sh's sweep; plots.py draws it).
    "sweeps": sweep_figures(raw),
    "raw": {name[:-5]: load(name[:-5]) for name in sorted(os.listdir(raw)) if name.endswith(".json")},
}
json.dump(result, open(os.path.join(out, "latest.json"), "w"), indent=2)


def cell(value):
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")


lines = [
    "# hexmarket benchmarks, side by side",
    "",
    f"Run {result['date']} on {machine['cpu']} ({machine['cores']} cores, Linux {machine['kernel']}); "
    f"{machine['rustc']}, node {machine['node']}, Python {machine['python']}; hexmarket {machine['hexmarket']}.",
    f"Server under test pinned to core 0, load generator to core 1; {n:,} couriers and watchers, "
    f"live runs {live_secs} s, HTTP runs {http_secs} s at 64 connections"
    + (f" (wrk, as fast as it goes; then open loop at {http_rate:,} req/s offered, latency from "
       "each request's due time)" if http_rate else "")
    + ". Produced by `bench/run.sh`.",
    "",
    "| scenario | what | hexmarket | peer | peer's | ratio | goal |",
    "|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(
        f"| {r['scenario']} | {r['what']} ({r['unit']}) | {cell(r['hexmarket'])} | {r['peer'] or '—'} | "
        f"{cell(r['peer_value'])} | {cell(r['ratio']) + '×' if r['ratio'] else '—'} | {r['goal'] or ''} |"
    )
lines += ["", "Ratios are hexmarket's advantage (higher is better for hexmarket) in every row."]
lines += sweep_lines(result["sweeps"])
open(os.path.join(out, "latest.md"), "w").write("\n".join(lines) + "\n")
