"""Peer for the "nearby couriers" benchmark: the same query on Redis GEOSEARCH.

`hexmarket-loadgen nearby` fills the in-process courier index with couriers spread uniformly
over an 8 km disc around Berlin and times nearest-courier queries (3 km, 5 results) from random
points of the same disc. This script draws exactly the same points (it reimplements the Rust
side's random stream: rand 0.9's `StdRng::seed_from_u64`, which is ChaCha12 seeded through
PCG32, and the same draws in the same order), loads the couriers into one Redis key under a
unique prefix, and times

    GEOSEARCH key FROMLONLAT lng lat BYRADIUS 3 km ASC COUNT 5

one request at a time (no pipelining, like the in-process index answers one query at a time),
then deletes the key. Same `--couriers`, `--queries` and `--seed` as `loadgen nearby` give the
same couriers and the same origins.

Usage: python3 geosearch.py [--couriers 10000] [--queries 100000] [--seed 42] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
import uuid
from collections import Counter

import redis

# The demo city's disc, as `hexmarket-loadgen nearby` uses it: DEMO_CENTER (Berlin,
# Alexanderplatz) and DEMO_RADIUS_KM of src/seed.rs.
CENTRE = (52.5219, 13.4132)
DISC_M = 8_000.0
KEY_PREFIX = "hexbench:geosearch"
MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class StdRng:
    """rand 0.9's `StdRng` (ChaCha12, 64-bit block counter, stream 0) as far as
    `seed_from_u64` and `random::<f64>()` go."""

    def __init__(self, seed: int) -> None:
        # rand_core's seed_from_u64: PCG32 output words, little-endian, fill the 32-byte key.
        state = seed & MASK64
        key = []
        for _ in range(8):
            state = (state * 6364136223846793005 + 11634580027462260723) & MASK64
            xorshifted = (((state >> 18) ^ state) >> 27) & MASK32
            rot = state >> 59
            key.append(((xorshifted >> rot) | (xorshifted << (32 - rot))) & MASK32)
        self._key = key
        self._counter = 0
        self._words: list[int] = []
        self._at = 0

    def _block(self) -> list[int]:
        c = self._counter
        self._counter += 1
        x = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *self._key,
             c & MASK32, c >> 32, 0, 0]
        s = list(x)

        def quarter(a: int, b: int, c: int, d: int) -> None:
            s[a] = (s[a] + s[b]) & MASK32; s[d] ^= s[a]; s[d] = ((s[d] << 16) | (s[d] >> 16)) & MASK32
            s[c] = (s[c] + s[d]) & MASK32; s[b] ^= s[c]; s[b] = ((s[b] << 12) | (s[b] >> 20)) & MASK32
            s[a] = (s[a] + s[b]) & MASK32; s[d] ^= s[a]; s[d] = ((s[d] << 8) | (s[d] >> 24)) & MASK32
            s[c] = (s[c] + s[d]) & MASK32; s[b] ^= s[c]; s[b] = ((s[b] << 7) | (s[b] >> 25)) & MASK32

        for _ in range(6):  # 12 rounds
            quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15)
            quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14)
        return [(s[i] + x[i]) & MASK32 for i in range(16)]

    def next_u64(self) -> int:
        # Only whole u64s are drawn, so a pair never straddles a block.
        if self._at >= len(self._words):
            self._words = self._block()
            self._at = 0
        lo, hi = self._words[self._at], self._words[self._at + 1]
        self._at += 2
        return lo | (hi << 32)

    def random_f64(self) -> float:
        """`rng.random::<f64>()`: 53 high bits scaled into [0, 1)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def disc_point(rng: StdRng) -> tuple[float, float]:
    """One point of the disc, drawn as loadgen/src/nearby.rs draws it (distance, then bearing,
    then the flat-earth offset of `disc_point` in src/domain/geo.rs). Returns (lat, lng)."""
    lat, lng = CENTRE
    metres = DISC_M * math.sqrt(rng.random_f64())
    bearing = math.radians(rng.random_f64() * 360.0)
    dlat = metres * math.cos(bearing) / 111_320.0
    dlng = metres * math.sin(bearing) / (111_320.0 * math.cos(math.radians(lat)))
    return lat + dlat, lng + dlng


def percentile(sorted_ns: list[int], q: float) -> float:
    """The value at quantile q (nearest rank), in microseconds."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1_000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--couriers", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--radius-km", type=float, default=3.0)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--hits-out", help="write each answer's hit count, one per line, here")
    args = parser.parse_args()
    if not 1 <= args.couriers <= 10_000_000 or not 1 <= args.queries <= 100_000_000:
        parser.error("--couriers and --queries must be positive (at most 1e7 and 1e8)")

    rng = StdRng(args.seed)
    couriers = [disc_point(rng) for _ in range(args.couriers)]
    origins = [disc_point(rng) for _ in range(args.queries)]

    client = redis.Redis.from_url(args.redis)
    key = f"{KEY_PREFIX}:{os.getpid()}:{uuid.uuid4().hex}"
    try:
        fill_started = time.perf_counter()
        with client.pipeline(transaction=False) as pipe:
            for start in range(0, len(couriers), 1_000):
                values = []
                for i, (lat, lng) in enumerate(couriers[start:start + 1_000], start):
                    values += [lng, lat, f"c{i}"]
                pipe.geoadd(key, values)
            pipe.execute()
        fill_s = time.perf_counter() - fill_started
        stored = client.zcard(key)

        latencies = [0] * len(origins)
        hits = [0] * len(origins)
        command = ("GEOSEARCH", key, "FROMLONLAT")
        tail = ("BYRADIUS", args.radius_km, "km", "ASC", "COUNT", args.limit)
        clock = time.perf_counter_ns
        started = time.perf_counter()
        for n, (lat, lng) in enumerate(origins):
            asked = clock()
            answer = client.execute_command(*command, lng, lat, *tail)
            latencies[n] = max(clock() - asked, 1)
            hits[n] = len(answer)
        elapsed = time.perf_counter() - started
    finally:
        client.delete(key)

    if args.hits_out:
        with open(args.hits_out, "w", encoding="utf-8") as f:
            f.writelines(f"{h}\n" for h in hits)

    latencies.sort()
    info = client.info("server")
    report = {
        "scenario": "nearby_redis_geosearch",
        "redis_version": info.get("redis_version"),
        "seed": args.seed,
        "couriers": args.couriers,
        "couriers_stored": stored,
        "fill_geoadds_per_s": args.couriers / max(fill_s, 1e-9),
        "queries": args.queries,
        "radius_km": args.radius_km,
        "limit": args.limit,
        "queries_per_s": args.queries / elapsed,
        "query_latency_us": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": latencies[-1] / 1_000.0,
        },
        "mean_candidates": sum(hits) / len(hits),
        "hits_per_answer": {str(k): v for k, v in sorted(Counter(hits).items())},
        # So the Rust side's points can be checked against these.
        "first_courier": {"lat": couriers[0][0], "lng": couriers[0][1]},
        "first_origin": {"lat": origins[0][0], "lng": origins[0][1]},
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        lat = report["query_latency_us"]
        print(f"{args.couriers} couriers ({stored} stored) under {key}")
        print(f"{report['queries_per_s']:.0f} queries/s, one at a time "
              f"(radius {args.radius_km} km, limit {args.limit})")
        print(f"p50 {lat['p50']:.1f} µs, p90 {lat['p90']:.1f} µs, p99 {lat['p99']:.1f} µs, "
              f"max {lat['max']:.1f} µs")
        print(f"{report['mean_candidates']:.2f} couriers per answer; "
              f"hits per answer: {report['hits_per_answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
