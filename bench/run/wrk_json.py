"""Turns wrk's `--latency` output and the server's CPU ticks around the run into JSON:
`wrk_json.py WRK_OUTPUT TICKS_BEFORE TICKS_AFTER`."""
import json
import os
import re
import sys

text = open(sys.argv[1]).read()
ticks = int(sys.argv[3]) - int(sys.argv[2])
cpu_s = ticks / os.sysconf("SC_CLK_TCK")


def duration_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


percentiles = {
    p: duration_ms(v) for p, v in re.findall(r"^\s+(50|90|99)(?:\.000)?%\s+(\S+)", text, re.M)
}
requests = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({
    "requests": requests,
    "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
    "p50_ms": percentiles.get("50"),
    "p90_ms": percentiles.get("90"),
    "p99_ms": percentiles.get("99"),
    "non_2xx": int(errors.group(1)) if errors else 0,
    "server_cpu_s": cpu_s,
    "server_cpu_us_per_request": cpu_s * 1e6 / requests if requests else None,
}))
