"""How each cost grows with load and with catalog size: the sweep of one bench/run.sh run, as
figures and as charts.

    plots.py OUT_DIR        draws the charts into OUT_DIR from OUT_DIR/latest.json's "sweeps"

report.py calls `sweep_figures(RAW_DIR)` to put the sweep into latest.json (key "sweeps") and
`sweep_lines(sweeps)` for its table in latest.md; this script then draws from latest.json alone,
so the same figures always give the same files (no date in them, fixed SVG ids):

    live-cpu-per-frame.svg, live-p99.svg, live-memory-per-socket.svg   x: couriers
    checkout-cpu.svg, checkout-p99.svg, search-p99.svg                 x: products (log)

Raw files read from RAW_DIR (written by the sweep section of bench/run.sh):
    sweep-live-N.json, sweep-relay-ack-N.json, sweep-idle-N.json      N couriers (and watchers)
    sweep-search-P.json, sweep-peer-search-P.json                     P products (loadgen http)
    sweep-checkout-P.json, sweep-peer-checkout-P.json                 (loadgen checkout; the
        peer's file, when there is one, with the same keys or `p99_ms` / `cpu_us_per_checkout`)
    sweep-log.tsv                                                     part, size, seconds, note
"""

from __future__ import annotations

import json
import os
import re
import sys

HEX_COLOR = "#1c64b4"
PEER_COLOR = "#d2581e"


# --- figures ----------------------------------------------------------------------------------


def _load(raw: str, name: str):
    path = os.path.join(raw, f"{name}.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _get(figures, *path):
    """figures[path[0]][path[1]]…, or None when any step is missing."""
    value = figures
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def _ms(us):
    return None if us is None else round(us / 1000, 3)


def _percentile_ms(figures, key, percentile):
    """A latency percentile in ms from a loadgen histogram summary; None without samples."""
    summary = _get(figures, key)
    if not isinstance(summary, dict) or not summary.get("count"):
        return None
    return _ms(summary.get(f"{percentile}_us"))


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _sizes(raw: str, prefix: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)\.json$")
    return sorted({int(m.group(1)) for name in os.listdir(raw) if (m := pattern.match(name))})


def _log(raw: str) -> list[dict]:
    """The sweep's own record: what ran at which size, how long it took, what was skipped."""
    path = os.path.join(raw, "sweep-log.tsv")
    entries = []
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            part, size, seconds, note = parts[:4]
            entries.append({
                "part": part,
                "size": int(size) if size.isdigit() else None,
                "seconds": int(seconds) if seconds.isdigit() else None,
                "note": note,
            })
    return entries


def _live_point(raw: str, n: int) -> dict:
    live = _load(raw, f"sweep-live-{n}")
    relay = _load(raw, f"sweep-relay-ack-{n}")
    idle = _load(raw, f"sweep-idle-{n}")
    point: dict = {"couriers": n, "watchers": n, "hexmarket": None, "relay_ack": None}
    if live or idle:
        delivered = _get(live, "location_frames_delivered")
        cpu_s = _get(live, "server", "cpu_s")
        point["hexmarket"] = {
            "cpu_us_per_frame": _round(cpu_s * 1e6 / delivered) if cpu_s and delivered else None,
            "p50_ms": _percentile_ms(live, "ping_to_watcher_latency", "p50"),
            "p99_ms": _percentile_ms(live, "ping_to_watcher_latency", "p99"),
            "rss_kib_per_socket": _round(_get(idle, "rss_per_connection_kib")),
            "frames_delivered": delivered,
            "frames_expected": _get(live, "location_frames_expected"),
            "couriers_online": _get(live, "couriers_online"),
            "orders_assigned": _get(live, "orders_assigned"),
            "idle_sockets": _get(idle, "connections_open"),
        }
    if relay:
        per_cpu_s = _get(relay, "delivered_frames_per_server_cpu_s")
        point["relay_ack"] = {
            "cpu_us_per_frame": _round(1e6 / per_cpu_s) if per_cpu_s else None,
            "p50_ms": _percentile_ms(relay, "publish_to_subscriber_latency", "p50"),
            "p99_ms": _percentile_ms(relay, "publish_to_subscriber_latency", "p99"),
            "rss_kib_per_socket": _round(_get(relay, "rss_per_connection_kib")),
            "frames_delivered": _get(relay, "frames_delivered"),
            "frames_expected": _get(relay, "frames_expected"),
        }
    return point


def _search_figures(figures) -> dict | None:
    if not figures:
        return None
    errors = _get(figures, "errors")
    return {
        "p50_ms": _percentile_ms(figures, "latency", "p50"),
        "p99_ms": _percentile_ms(figures, "latency", "p99"),
        "cpu_us_per_request": _round(_get(figures, "server_cpu_us_per_request")),
        "offered_rate": _get(figures, "offered_rate"),
        "achieved_rate": _round(_get(figures, "achieved_rate")),
        "errors": sum(errors.values()) if isinstance(errors, dict) else None,
    }


def _checkout_figures(figures) -> dict | None:
    if not figures:
        return None
    p99 = _percentile_ms(figures, "checkout_latency", "p99")
    cpu = _get(figures, "server_cpu_us_per_checkout")
    return {
        "cpu_us_per_checkout": _round(cpu if cpu is not None
                                      else _get(figures, "cpu_us_per_checkout")),
        "p99_ms": p99 if p99 is not None else _get(figures, "p99_ms"),
        "checkouts_per_s": _round(_get(figures, "uncontended_checkouts_per_s")
                                  or _get(figures, "checkouts_per_s")),
    }


def sweep_figures(raw: str) -> dict | None:
    """The sweep's figures from RAW_DIR, or None when the run had no sweep."""
    log = _log(raw)
    live_sizes = set(_sizes(raw, "sweep-live")) | set(_sizes(raw, "sweep-relay-ack")) \
        | set(_sizes(raw, "sweep-idle"))
    catalog_sizes = set(_sizes(raw, "sweep-search")) | set(_sizes(raw, "sweep-checkout")) \
        | set(_sizes(raw, "sweep-peer-search")) | set(_sizes(raw, "sweep-peer-checkout"))
    for entry in log:
        if entry["size"] is None:
            continue
        if entry["part"] in ("live", "relay-ack", "idle"):
            live_sizes.add(entry["size"])
        elif entry["part"] in ("search", "peer-search", "checkout", "peer-checkout"):
            catalog_sizes.add(entry["size"])
    if not (live_sizes or catalog_sizes or log):
        return None
    catalog = []
    for p in sorted(catalog_sizes):
        catalog.append({
            "products": p,
            "search": {"hexmarket": _search_figures(_load(raw, f"sweep-search-{p}")),
                       "peer": _search_figures(_load(raw, f"sweep-peer-search-{p}"))},
            "checkout": {"hexmarket": _checkout_figures(_load(raw, f"sweep-checkout-{p}")),
                         "peer": _checkout_figures(_load(raw, f"sweep-peer-checkout-{p}"))},
        })
    # A size with nothing measured (skipped, or every part failed) is only in the log.
    catalog = [point for point in catalog
               if any(point[kind][who] for kind in ("search", "checkout")
                      for who in ("hexmarket", "peer"))]
    live = [point for point in (_live_point(raw, n) for n in sorted(live_sizes))
            if point["hexmarket"] or point["relay_ack"]]
    first_live = _load(raw, f"sweep-live-{live[0]['couriers']}") if live else None
    first_search = _load(raw, f"sweep-search-{catalog[0]['products']}") if catalog else None
    first_checkout = _load(raw, f"sweep-checkout-{catalog[0]['products']}") if catalog else None
    return {
        "parameters": {
            "live_seconds": _get(first_live, "duration_s"),
            "search_offered_rate": _get(first_search, "offered_rate"),
            "checkout_concurrency": _get(first_checkout, "concurrency"),
        },
        "live_fanout": live,
        "catalog": catalog,
        "log": log,
    }


# --- markdown ---------------------------------------------------------------------------------


def _cell(value, unit=""):
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return text + unit


def sweep_lines(sweeps) -> list[str]:
    """latest.md's section on the sweep (empty when there was none)."""
    if not sweeps:
        return []
    lines = ["", "## How costs grow (sweep)", ""]
    live = sweeps.get("live_fanout") or []
    if live:
        lines += [
            "Live fan-out, hexmarket against the acknowledging Node relay (charts: "
            "`live-cpu-per-frame.svg`, `live-p99.svg`, `live-memory-per-socket.svg`):",
            "",
            "| couriers (+ as many watchers) | CPU-µs per frame | relay | p99 (ms) | relay | "
            "KiB per idle socket | relay (per socket) |",
            "|---|---|---|---|---|---|---|",
        ]
        for point in live:
            hexm, relay = point.get("hexmarket") or {}, point.get("relay_ack") or {}
            lines.append(
                f"| {point['couriers']:,} | {_cell(hexm.get('cpu_us_per_frame'))} | "
                f"{_cell(relay.get('cpu_us_per_frame'))} | {_cell(hexm.get('p99_ms'))} | "
                f"{_cell(relay.get('p99_ms'))} | {_cell(hexm.get('rss_kib_per_socket'))} | "
                f"{_cell(relay.get('rss_kib_per_socket'))} |")
        lines.append("")
    catalog = sweeps.get("catalog") or []
    if catalog:
        rate = (sweeps.get("parameters") or {}).get("search_offered_rate")
        lines += [
            "Catalog size: text search"
            + (f" at {rate:,} req/s offered, every answer computed" if rate else "")
            + " (FastAPI peer: a linear scan over the same products) and checkout "
            "(charts: `search-p99.svg`, `checkout-cpu.svg`, `checkout-p99.svg`):",
            "",
            "| products | search p99 (ms) | peer | search CPU-µs | peer | checkout CPU-µs | peer | "
            "checkout p99 (ms) | peer |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for point in catalog:
            s_h = point["search"]["hexmarket"] or {}
            s_p = point["search"]["peer"] or {}
            c_h = point["checkout"]["hexmarket"] or {}
            c_p = point["checkout"]["peer"] or {}
            cells = [_cell(figures.get(key)) for figures, key in [
                (s_h, "p99_ms"), (s_p, "p99_ms"), (s_h, "cpu_us_per_request"),
                (s_p, "cpu_us_per_request"), (c_h, "cpu_us_per_checkout"),
                (c_p, "cpu_us_per_checkout"), (c_h, "p99_ms"), (c_p, "p99_ms")]]
            lines.append(f"| {point['products']:,} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = _not_measured(sweeps, None, "")
    timed = [e for e in sweeps.get("log") or [] if e["seconds"] is not None]
    if notes:
        lines.append("Not measured: " + "; ".join(notes) + ".")
    if timed:
        lines.append("Time taken: " + ", ".join(
            f"{e['part']}{' ' + _tick(e['size']) if e['size'] else ''} {e['seconds']} s"
            for e in timed) + ".")
    return lines


# --- charts -----------------------------------------------------------------------------------


def _series(points, path, key, x_key):
    """(xs, ys) of the points whose figure at path + key exists."""
    xs, ys = [], []
    for point in points:
        value = _get(point, *path, key)
        if value is not None:
            xs.append(point[x_key])
            ys.append(value)
    return xs, ys


def _label(value: float, unit: str) -> str:
    """A value as a point's label: three significant digits, thousands separated."""
    if value >= 1000:
        text = f"{value:,.0f}"
    elif value >= 100:
        text = f"{value:.0f}"
    elif value >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + unit


def _tick(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g}k"
    return f"{n:,}"


def _commas(text: str) -> str:
    """Numbers of four digits or more in a note, with thousands separators."""
    return re.sub(r"\d{4,}", lambda m: f"{int(m.group()):,}", text)


def _not_measured(sweeps, parts, what) -> list[str]:
    """The sweep's notes on these parts (None: all), one per part and reason, sizes gathered."""
    reasons: dict[tuple[str, str], list[int]] = {}
    for entry in sweeps.get("log") or []:
        if (parts is None or entry["part"] in parts) and entry["note"] != "ok" and entry["size"]:
            reasons.setdefault((entry["part"], entry["note"]), []).append(entry["size"])
    return [_commas(f"{part} at {', '.join(_tick(s) for s in sizes)}"
                    + (f" {what}" if what else "") + f": {note}")
            for (part, note), sizes in reasons.items()]


def _saturation(catalog, who) -> list[str]:
    """Per measured search point: "" when the server kept up with the offered rate, else what
    it achieved (its p99 is then a queue's)."""
    suffixes = []
    for point in catalog:
        figures = _get(point, "search", who)
        if not figures or figures.get("p99_ms") is None:
            continue
        offered, achieved = figures.get("offered_rate"), figures.get("achieved_rate")
        kept_up = not offered or achieved is None or achieved >= 0.95 * offered
        suffixes.append("" if kept_up else f"\n(served {achieved:,.0f} of {offered:,}/s)")
    return suffixes


# Layout, in inches: every chart has the same width and the same plot area, so charts side by
# side in the README line up; notes add lines at the bottom.
WIDTH, PLOT_HEIGHT = 7.2, 2.9
LEFT, RIGHT = 0.9, 0.3
TITLE, SUBTITLE_LINE, LEGEND = 0.42, 0.2, 0.34
AXIS, NOTE_LINE = 0.62, 0.17


def _chart(plt, path, *, title, subtitle, xlabel, ylabel, lines, xs_all, log_x, unit,
           log_y=None, notes=()):
    """One chart: `lines` is [(label, color, marker, xs, ys[, suffixes])], a suffix being
    added to its point's label; SVG at `path`."""
    import textwrap

    subtitle_lines = textwrap.wrap(subtitle, 100)
    note_lines = [part for note in notes for part in textwrap.wrap(note, 118)]
    top = TITLE + SUBTITLE_LINE * len(subtitle_lines) + LEGEND
    bottom = AXIS + (NOTE_LINE * len(note_lines) + 0.08 if note_lines else 0)
    height = top + PLOT_HEIGHT + bottom
    fig = plt.figure(figsize=(WIDTH, height))
    ax = fig.add_axes((LEFT / WIDTH, bottom / height, (WIDTH - LEFT - RIGHT) / WIDTH,
                       PLOT_HEIGHT / height))
    fig.text(0.15 / WIDTH, 1 - 0.12 / height, title, fontsize=13, fontweight="bold", va="top")
    for i, line in enumerate(subtitle_lines):
        fig.text(0.15 / WIDTH, 1 - (TITLE + SUBTITLE_LINE * i) / height, line, fontsize=9.5,
                 color="#444444", va="top")
    for i, line in enumerate(note_lines):
        fig.text(0.15 / WIDTH, (NOTE_LINE * (len(note_lines) - i) - 0.1) / height, line,
                 fontsize=8.5, color="#666666", va="bottom")

    plotted = [line for line in lines if line[3]]
    values = [y for line in plotted for y in line[4] if y and y > 0]
    if log_y is None:
        log_y = bool(values) and max(values) / min(values) > 30
    # At each x the lowest value is labelled below its point, the others above theirs.
    lowest = {}
    for _, _, _, xs, ys, *_ in plotted:
        for x, y in zip(xs, ys):
            lowest[x] = min(lowest.get(x, y), y)
    several = {x for x in lowest if sum(x in line[3] for line in plotted) > 1}
    for label, color, marker, xs, ys, *extra in plotted:
        ax.plot(xs, ys, marker=marker, color=color, label=label, linewidth=2, markersize=7,
                clip_on=False, zorder=3)
        suffixes = extra[0] if extra else [""] * len(xs)
        for x, y, suffix in zip(xs, ys, suffixes):
            below = x in several and y == lowest[x]
            ax.annotate(_label(y, unit) + suffix, (x, y), textcoords="offset points",
                        xytext=(0, -10 if below else 8), va="top" if below else "baseline",
                        ha="center", fontsize=9, color=color, zorder=4)
    if log_x:
        ax.set_xscale("log")
    if log_y and values:
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 4, max(values) * 4)
    elif values:
        ax.set_ylim(0, max(values) * 1.2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.10g}"))
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ticks = sorted(set(xs_all))
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([_tick(t) for t in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        if log_x:
            ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.5)
        else:
            span = (ticks[-1] - ticks[0]) or ticks[0]
            ax.set_xlim(max(0, ticks[0] - span * 0.07), ticks[-1] + span * 0.07)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [ax.plot([], [], marker=line[2], color=line[1], linewidth=2, markersize=7)[0]
               for line in lines]
    labels = [label if xs else f"{label}: not measured" for label, _, _, xs, *_ in lines]
    for handle, (_, _, _, xs, *_) in zip(handles, lines):
        handle.set_alpha(1.0 if xs else 0.35)
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(-0.01, 1.0), ncol=len(lines),
              frameon=False, fontsize=9.5, handlelength=2.2, borderaxespad=0.25,
              columnspacing=1.6)
    if not plotted:
        ax.text(0.5, 0.5, "not measured in this run", transform=ax.transAxes, ha="center",
                va="center", color="#888888", fontsize=12)
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)


def draw(sweeps, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({
        "svg.hashsalt": "hexmarket-bench",
        "svg.fonttype": "path",
        "font.family": "DejaVu Sans",
        "font.size": 10.5,
        "axes.titlesize": 10,
        "axes.labelsize": 10.5,
    })
    written = []
    params = sweeps.get("parameters") or {}
    live = sweeps.get("live_fanout") or []
    live_secs = params.get("live_seconds")
    live_context = ("1 position/s per courier, one watcher each"
                    + (f", {live_secs:g} s per size" if live_secs else "")
                    + "; server and load generator on a core each")
    couriers = [p["couriers"] for p in live]
    live_notes = _not_measured(sweeps, ("live", "relay-ack", "idle"), "couriers")
    for name, key, title, ylabel, unit, sub in [
        ("live-cpu-per-frame.svg", "cpu_us_per_frame",
         "Live fan-out: server CPU per delivered location frame",
         "server CPU per frame (CPU-µs)", " µs", live_context),
        ("live-p99.svg", "p99_ms", "Live fan-out: courier position → watcher, p99",
         "p99 latency (ms)", " ms", live_context),
        ("live-memory-per-socket.svg", "rss_kib_per_socket",
         "Live fan-out: server memory per socket",
         "resident memory per socket (KiB)", " KiB",
         "hexmarket: idle authenticated courier sockets, fresh node; "
         "relay: its sockets in the run above"),
    ]:
        path = os.path.join(out, name)
        _chart(plt, path, title=title, subtitle=sub,
               xlabel="couriers online (and as many watchers)", ylabel=ylabel, unit=unit,
               xs_all=couriers, log_x=False, notes=live_notes,
               log_y=False if "memory" in name else None,
               lines=[("hexmarket", HEX_COLOR, "o",
                       *_series(live, ("hexmarket",), key, "couriers")),
                      ("Node ws relay, acknowledging each position", PEER_COLOR, "s",
                       *_series(live, ("relay_ack",), key, "couriers"))])
        written.append(path)

    catalog = sweeps.get("catalog") or []
    products = [p["products"] for p in catalog]
    rate = params.get("search_offered_rate")
    search_notes = _not_measured(sweeps, ("search", "peer-search"), "products")
    path = os.path.join(out, "search-p99.svg")
    _chart(plt, path, title="Text search p99 by catalog size",
           subtitle=(f"{rate:,} searches/s offered (open loop), " if rate else "")
           + "one word each, no answer from a cache; server on one core",
           xlabel="products in the catalog", ylabel="p99 latency (ms)", unit=" ms",
           xs_all=products, log_x=True, notes=search_notes,
           lines=[("hexmarket (search index)", HEX_COLOR, "o",
                   *_series(catalog, ("search", "hexmarket"), "p99_ms", "products"),
                   _saturation(catalog, "hexmarket")),
                  ("FastAPI + uvicorn (scan over the same products)", PEER_COLOR, "s",
                   *_series(catalog, ("search", "peer"), "p99_ms", "products"),
                   _saturation(catalog, "peer"))])
    written.append(path)
    concurrency = params.get("checkout_concurrency")
    checkout_context = ((f"{concurrency} customers at once, " if concurrency else "")
                        + "a one-unit cart add before each checkout; server on one core")
    checkout_notes = _not_measured(sweeps, ("checkout", "peer-checkout"), "products")
    for name, key, title, ylabel, unit in [
        ("checkout-cpu.svg", "cpu_us_per_checkout",
         "Checkout: server CPU per checkout by catalog size",
         "server CPU per checkout (CPU-µs)", " µs"),
        ("checkout-p99.svg", "p99_ms", "Checkout p99 by catalog size", "p99 latency (ms)", " ms"),
    ]:
        path = os.path.join(out, name)
        _chart(plt, path, title=title, subtitle=checkout_context,
               xlabel="products in the catalog", ylabel=ylabel, unit=unit, xs_all=products,
               log_x=True, notes=checkout_notes,
               lines=[("hexmarket", HEX_COLOR, "o",
                       *_series(catalog, ("checkout", "hexmarket"), key, "products")),
                      ("FastAPI + PostgreSQL", PEER_COLOR, "s",
                       *_series(catalog, ("checkout", "peer"), key, "products"))])
        written.append(path)
    return written


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    out = sys.argv[1]
    with open(os.path.join(out, "latest.json"), encoding="utf-8") as f:
        sweeps = json.load(f).get("sweeps")
    if not sweeps:
        print("plots.py: no sweep in latest.json (SWEEP=0?); no charts drawn")
        return
    for path in draw(sweeps, out):
        print(f"plots.py: wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
