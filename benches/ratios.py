#!/usr/bin/env python3
"""Pilotfish against the better of HAProxy and nginx, from one or more JSON
results of the shared harness (benches/peers.sh writes them): for each run
and each load (h1, h2), throughput as a ratio of the better peer's and
proxy CPU per request as a ratio of the better peer's, then the median of
each over the runs. Runs on this shared machine move by 20% and more, so
several runs and their medians say more than any one.

    benches/ratios.py benches/results/latest.json
    benches/ratios.py /tmp/run*.json
"""

import json
import statistics
import sys

SHAPES = {"pair": ("ours-pair", ["haproxy-pair", "nginx-pair"]),
          "one hop": ("ours-1hop", ["haproxy-1hop", "nginx-1hop"])}


def ratios(run):
    by_name = {s["scenario"]: s["loads"] for s in run["scenarios"]}
    out = {}
    for shape, (ours, peers) in SHAPES.items():
        for load in ("h1", "h2"):
            try:
                mine = by_name[ours][load]
                theirs = [by_name[p][load] for p in peers if p in by_name]
            except KeyError:
                continue
            if not theirs:
                continue
            rps = mine["rps"] / max(t["rps"] for t in theirs)
            cpu = mine["proxy_cpu_us_per_req"] / min(t["proxy_cpu_us_per_req"] for t in theirs)
            out[(shape, load)] = (rps, cpu)
    return out


def main(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        runs.append((run["meta"]["started"], ratios(run)))
    keys = sorted({k for _, r in runs for k in r})
    print("| run | " + " | ".join(f"{s} {l}: req/s, CPU" for s, l in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for started, r in runs:
        cells = [f"{r[k][0]:.2f}x, {r[k][1]:.2f}x" if k in r else "-" for k in keys]
        print(f"| {started} | " + " | ".join(cells) + " |")
    medians = []
    for k in keys:
        values = [r[k] for _, r in runs if k in r]
        medians.append(f"{statistics.median(v[0] for v in values):.2f}x, "
                       f"{statistics.median(v[1] for v in values):.2f}x")
    print(f"| median of {len(runs)} | " + " | ".join(medians) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
