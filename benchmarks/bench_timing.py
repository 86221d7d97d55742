"""How steady one timing is on this machine, and what a search pays per proposal.

Run from the repository root, the machine otherwise idle:

    .venv/bin/python benchmarks/bench_timing.py --networks 30

1. ``sessions``: ``--networks`` networks drawn from the paper's laws (those of
   ``bench_latency.py``), each measured twice, in two fresh processes back to back
   (alternating which goes first, so a slow minute of the machine hits both alike).
   A measurement is :func:`~iotnas.latency.runtimes.time_onnx` with ``SESSION_PROTOCOL``
   and ``sessions`` = k (1 thread, the search's settings): k ONNX Runtime sessions one
   after another, the figure the mean of their medians (thread CPU time). The table:
   how often the two measurements of a network agree within ±10 % and ±5 %, RMSPE,
   the median disagreement, and the seconds a measurement took, per k. The baseline
   is k = 1: one session per measurement, the default.
2. ``proposal``: the wall time of timing one proposal as a search does
   (:func:`~iotnas.latency.measure_latency`, a fresh process) with the default
   protocol and with ``[device] min_s`` = ``--min-s``, interleaved ``--repeats``
   times, medians.

Prints Markdown, with the load average before and after each part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time

from iotnas.latency import Protocol, measure_latency
from iotnas.latency.calibrate import RELEASED_FAMILIES, sample_archs
from iotnas.spaces import get_space

#: One session: 10 warm-up runs, then >= 20 runs and >= 0.1 s (capped at 5 s).
SESSION_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.0, warmup_max_s=1.0, min_runs=20, min_s=0.1, max_s=5.0)
SESSIONS = (1, 4, 8, 16)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure_child(key: str) -> dict[str, tuple[float, float]]:
    """In this (fresh) process: for each k, the figure of a k-session measurement (ms) and its wall seconds."""
    from iotnas.latency.api import to_onnx
    from iotnas.latency.runtimes import OrtSettings, time_onnx

    onnx, _ = to_onnx(key, num_classes=10, in_channels=3, input_size=32)
    settings = OrtSettings(threads=1)
    out = {}
    for k in SESSIONS:
        t0 = time.perf_counter()
        m = time_onnx(onnx, settings=settings, protocol=dataclasses.replace(SESSION_PROTOCOL, sessions=k))
        out[str(k)] = (m.cpu_median_ms, time.perf_counter() - t0)
    return out


def _measure(key: str) -> dict[str, tuple[float, float]]:
    done = subprocess.run([sys.executable, __file__, "--child", key], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def sessions_table(n: int, seed: int) -> None:
    keys = sample_archs(n, seed=seed, laws={f: get_space(f).laws for f in RELEASED_FAMILIES})
    print(f"## Two measurements of one network, k sessions each ({len(keys)} networks, seed {seed})\n")
    print(f"load average before: {_load()}\n")
    start = time.perf_counter()
    pairs = []
    for i, key in enumerate(keys):
        a, b = _measure(key), _measure(key)
        pairs.append((a, b) if i % 2 == 0 else (b, a))
        print(f"<!-- {i + 1}/{len(keys)} {key} -->", file=sys.stderr)
    print("| sessions per measurement | within ±10 % | within ±5 % | RMSPE | median disagreement "
          "| s per measurement (median) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in SESSIONS:
        errors = [abs(b[str(k)][0] / a[str(k)][0] - 1) for a, b in pairs]
        rmspe = math.sqrt(statistics.fmean(e * e for e in errors))
        seconds = statistics.median(m[str(k)][1] for pair in pairs for m in pair)
        print(f"| {k} | {_share(errors, 0.10)} | {_share(errors, 0.05)} | {100 * rmspe:.1f} % "
              f"| {100 * statistics.median(errors):.1f} % | {seconds:.2f} |")
    print(f"\n{(time.perf_counter() - start) / 60:.1f} min; load average after: {_load()}\n")


def _share(errors: list[float], within: float) -> str:
    return f"{100 * sum(e <= within for e in errors) / len(errors):.1f} %"


def proposal_table(key: str, min_s: float, repeats: int) -> None:
    print(f"## Timing one proposal as a search does ({key}, {repeats} interleaved repeats)\n")
    print(f"load average before: {_load()}\n")
    measure_latency(key)  # the first export in a process pays for torch's ONNX exporter
    walls: dict[str, list[float]] = {"default (1 s)": [], f"min_s = {min_s:g}": []}
    for _ in range(repeats):
        for (name, spent), protocol in zip(walls.items(), (Protocol.timing_for(None), Protocol.timing_for(min_s))):
            t0 = time.perf_counter()
            measure_latency(key, protocol=protocol)
            spent.append(time.perf_counter() - t0)
    print("| protocol | wall s per proposal (median) | each |")
    print("| --- | ---: | --- |")
    for name, spent in walls.items():
        print(f"| {name} | {statistics.median(spent):.2f} | {', '.join(f'{s:.2f}' for s in spent)} |")
    print(f"\nload average after: {_load()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=30, help="Networks measured twice (sessions).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--proposal", default="probenet/s2/3", help="Network timed as a proposal.")
    parser.add_argument("--min-s", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("sessions", "proposal"), default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(args.child)))
        return
    if args.only in (None, "proposal"):
        proposal_table(args.proposal, args.min_s, args.repeats)
    if args.only in (None, "sessions"):
        sessions_table(args.networks, args.seed)


if __name__ == "__main__":
    main()
