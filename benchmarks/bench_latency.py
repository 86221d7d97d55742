"""Latency prediction benchmark: the node predictor against its baselines, on this machine and on the Pi timings.

Run from the repository root (the acceptance run; idle machine, load average < 1):

    .venv/bin/python benchmarks/bench_latency.py --calib 200 --test 200 --trace-cache /tmp/released-kernels.json \
        --statistic cpu_median_ms

1. Calibration, timed: ``--calib`` networks drawn from the paper's laws (all five
   families), profiled and timed on this machine in adaptive rounds
   (:func:`~iotnas.latency.calibrate.calibrate_nodes`); the earlier kernel-sum
   predictor is calibrated on ``--kernel-calib`` of them (``--max-kernels`` kernels)
   and a FLOPs line on all of them.
2. ``--test`` held-out networks from the same laws, timed twice, each time in a
   fresh process; the passes are interleaved network by network, in alternating
   order, so a slow period of the machine hits both alike. Pass 1 is what
   predictions are scored against; pass 2 against pass 1 is the noise ceiling (how
   often the device agrees with itself within ±10 %), shown for both statistics.
3. Released Raspberry Pi 3B+ timings (torch eager), 5-fold cross-validation of the
   operator-cost model against the earlier cost-feature trees and a FLOPs line; its
   ceiling is the Pi against itself (the networks the data holds more than once, each
   timed in a session of its own), and ``--tree-seeds`` refits its trees with other
   seeds in the same folds, to show how far the score moves with them alone.
   Tracing the 1,617 released networks takes minutes; ``--trace-cache`` keeps the
   traced kernels for the next run.

``--sessions`` K times every network (calibration and held-out) in K ONNX Runtime
sessions one after another, the mean of their medians (each session lands in a
fast or a slow mode for its life; ``bench_timing.py`` measures what that buys).

``--statistic`` is what every timing is summarised by, in calibration and on the
held-out networks alike: ``median_ms`` (wall clock) or ``cpu_median_ms`` (thread
CPU time, which waiting for a core shared with other work does not inflate).

Prints Markdown tables; ONNX Runtime, 1 intra-op and 1 inter-op thread. Uses the
released data in ../shared/data (or $IOTNAS_SHARED_DATA). ``--save`` writes the
calibration profiles and held-out timings as JSON, for analysis without re-timing (an existing
file is refused before anything is timed, unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

from iotnas.cost import cost
from iotnas.errors import IotnasError
from iotnas.files import check_target, write_new
from iotnas.latency.calibrate import (
    RELEASED_FAMILIES,
    calibrate,
    calibrate_nodes,
    cross_validate_released,
    released_records,
    released_repeats,
    repeat_score,
    sample_archs,
    time_networks,
)
from iotnas.latency.kernels import Kernel, arch_kernels
from iotnas.latency.measure import STATISTICS, Protocol, environment
from iotnas.latency.predictor import FlopsPredictor, score
from iotnas.latency.runtimes import OrtSettings
from iotnas.spaces import get_space

#: Networks: >= 50 runs and >= 0.2 s, capped at 1 s (so every model gets >= 50 runs or >= 1 s).
NETWORK_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.1, warmup_max_s=1.0, min_runs=50, min_s=0.2, max_s=1.0)
#: With ``--sessions`` K > 1, each of the K sessions: 10 warm-up runs, then >= 20 runs and >= 0.1 s, capped at 5 s
#: (``bench_timing.py``'s session).
SESSION_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.0, warmup_max_s=1.0, min_runs=20, min_s=0.1, max_s=5.0)


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def every(n: int):
    return lambda stage, i, total: log(f"  {stage} {i}/{total}") if i == total or i % n == 0 else None


def traced_released(records, cache: Path | None) -> dict[str, list[Kernel]]:
    """Kernels of every released network, read from ``cache`` when it holds them, else traced (and kept there)."""
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if set(stored) == {r.key for r in records}:
            return {key: [Kernel.from_key(k) for k in keys] for key, keys in stored.items()}
    traced = {}
    for i, r in enumerate(records):
        traced[r.key] = arch_kernels(r.key)
        if (i + 1) % 200 == 0:
            log(f"  traced {i + 1}/{len(records)}")
    if cache is not None:
        cache.write_text(json.dumps({key: [k.key for k in ks] for key, ks in traced.items()}))
    return traced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=200, help="Calibration networks of the node predictor.")
    parser.add_argument("--rounds", type=int, default=3, help="Adaptive calibration rounds.")
    parser.add_argument("--test", type=int, default=200, help="Held-out networks, timed twice.")
    parser.add_argument("--kernel-calib", type=int, default=30, help="Calibration networks of the kernel-sum baseline.")
    parser.add_argument("--max-kernels", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace-cache", type=Path, default=None, help="Keep the released networks' kernels here.")
    parser.add_argument("--released-limit", type=int, default=None, help="Use only this many released configs (dry run).")
    parser.add_argument("--tree-seeds", type=int, default=3,
                        help="Fit the operator-cost model's trees with this many seeds in the same folds (spread).")
    parser.add_argument("--skip-device", action="store_true", help="Only the released cross-validation.")
    parser.add_argument("--skip-released", action="store_true", help="Only the predictors on this machine.")
    parser.add_argument("--statistic", choices=STATISTICS, default="median_ms",
                        help="What every timing is summarised by, in calibration and held out.")
    parser.add_argument("--sessions", type=int, default=1,
                        help="ONNX Runtime sessions per timing, the mean of their medians (default 1: one session "
                             "per NETWORK_PROTOCOL; more: each per SESSION_PROTOCOL).")
    parser.add_argument("--save", type=Path, default=None, help="Write profiles and held-out timings here (JSON).")
    parser.add_argument("--overwrite", action="store_true", help="Let --save replace an existing file.")
    args = parser.parse_args()
    if args.save is not None:
        try:  # before the run, not after half an hour of timing
            check_target(args.save, what="--save file", overwrite=args.overwrite)
        except IotnasError as exc:
            parser.error(str(exc))
    data = Path(os.environ.get("IOTNAS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    settings = OrtSettings(threads=1)
    protocol = NETWORK_PROTOCOL if args.sessions == 1 else dataclasses.replace(SESSION_PROTOCOL, sessions=args.sessions)
    laws = [f"{family}/{law}" for family in RELEASED_FAMILIES for law in get_space(family).laws]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    device_rows: list[tuple[str, object]] = []
    notes: list[str] = []

    stat = args.statistic
    if not args.skip_device:
        log(f"calibrating the node predictor on {args.calib} networks ({stat})")
        predictor, calibration = calibrate_nodes(laws, networks=args.calib, held_out=0, rounds=args.rounds,
                                                 settings=settings, protocol=protocol, statistic=stat,
                                                 seed=args.seed, progress=every(25))
        calib_keys = list(calibration.networks)
        log(f"calibrating the kernel-sum baseline on {args.kernel_calib} of them")
        t0 = time.perf_counter()
        kernel_model, _ = calibrate(calib_keys[: args.kernel_calib], settings=settings, statistic=stat,
                                    network_protocol=protocol, max_kernels=args.max_kernels, seed=args.seed)
        kernel_s = time.perf_counter() - t0
        line = FlopsPredictor.fit([cost(k).flops for k in calib_keys],
                                  [getattr(calibration.networks[k], stat) for k in calib_keys])

        test = sample_archs(args.test, seed=args.seed + 1, exclude=set(calib_keys),
                            laws={f: get_space(f).laws for f in RELEASED_FAMILIES})
        log(f"timing {len(test)} held-out networks twice, interleaved")
        first, second = {}, {}
        for i, key in enumerate(test):
            for into in ((first, second) if i % 2 == 0 else (second, first)):
                into.update(time_networks([key], device=None, settings=settings, protocol=protocol))
            every(25)("held-out networks", i + 1, len(test))
        keys = [k for k in first if k in second]
        measured = [getattr(first[k], stat) for k in keys]
        log("predicting")
        t0 = time.perf_counter()
        graphs = [predictor.nodes_of(k) for k in keys]
        node_pred = predictor.predict_graphs(graphs)
        node_s = (time.perf_counter() - t0) / max(len(keys), 1)
        ceiling = {s: score([getattr(second[k], s) for k in keys], [getattr(first[k], s) for k in keys])
                   for s in STATISTICS}
        device_rows = [
            *((f"device itself: pass 2 vs pass 1 (noise ceiling, {s})", ceiling[s]) for s in STATISTICS),
            ("node predictor (optimised-graph nodes in context)", score(node_pred, measured)),
            ("kernel sum + correction (earlier predictor)", score(kernel_model.predict_many(keys), measured)),
            ("FLOPs line (baseline)", score([line.predict_flops(cost(k).flops) for k in keys], measured)),
        ]
        if args.save is not None:
            write_new(args.save, json.dumps({
                "statistic": stat,
                "calibration": {k: p.to_dict() for k, p in calibration.profiles.items()},
                "held_out": {k: {"nodes": [n.to_list() for n in g], "first": first[k].to_dict(),
                                 "second": second[k].to_dict()} for k, g in zip(keys, graphs)},
            }), what="--save file", overwrite=args.overwrite)
        medians = sorted(measured)
        rounds = ", ".join(str(len(r)) for r in calibration.rounds)
        notes.append(
            f"Statistic: {stat}, {protocol.sessions} ONNX Runtime session(s) per timing. Calibration: {len(calib_keys)} networks over {len(laws)} laws in rounds of "
            f"{rounds}, {calibration.seconds:.0f} s ({calibration.seconds / 60:.1f} min) including fitting; "
            f"kernel-sum baseline {kernel_s:.0f} s. Held-out: {len(keys)} networks, {stat} "
            f"{medians[0]:.2f}–{medians[-1]:.1f} ms (median {statistics.median(medians):.2f} ms). Node prediction "
            f"{1000 * node_s:.0f} ms per network (export, optimise, regress).")

    cv, cv_s, records = None, 0.0, []
    if not args.skip_released:
        log("released Raspberry Pi timings: 5-fold cross-validation")
        records = released_records(data / "iotnets" / "results_RaspPi.json")
        if args.released_limit is not None:
            records = records[:: max(1, len(records) // args.released_limit)]
        traced = traced_released(records, args.trace_cache if args.released_limit is None else None)
        t0 = time.perf_counter()
        cv = cross_validate_released([(r, traced[r.key]) for r in records], seed=args.seed,
                                     tree_seeds=range(args.seed, args.seed + args.tree_seeds))
        cv_s = time.perf_counter() - t0
    load_after = os.getloadavg()

    env = environment()
    print(f"## Latency benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"CPU: {env['cpu']} ({env['cpu_count']} cores), ONNX Runtime {env['onnxruntime']}, 1 intra-op and 1 "
          f"inter-op thread; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; total "
          f"{(time.perf_counter() - t_start) / 60:.1f} min.\n")
    for note in notes:
        print(note + "\n")
    if device_rows:
        print("| predictor (held-out networks, this machine) | within ±10 % | RMSPE | median error |")
        print("| --- | --- | --- | --- |")
        for name, s in device_rows:
            print(f"| {name} | {pct(s.within_10)} | {pct(s.rmspe)} | {pct(s.median_ape)} |")
        print()
    if cv is None:
        return 0
    print(f"Released Raspberry Pi 3B+ timings (torch eager, mean of 5 runs), {len(records)} networks, 5-fold "
          f"cross-validation ({cv_s:.0f} s):\n")
    print("| model | within ±10 % | RMSPE | median error |")
    print("| --- | --- | --- | --- |")
    repeats = released_repeats(records)
    pairs = sum(len(g) * (len(g) - 1) for g in repeats)
    itself = f"the Pi itself: one network timed in separate sessions ({len(repeats)} networks, {pairs} ordered pairs)"
    rows = [(itself, repeat_score(repeats))] if repeats else []
    rows += [(name, score(cv[key], cv["measured"])) for name, key in (
        (f"operator-cost model, noise-weighted (tree seed {args.seed})", "ops"),
        ("cost-feature trees (earlier)", "cost"), ("FLOPs line (baseline)", "flops"))]
    for name, s in rows:
        print(f"| {name} | {pct(s.within_10)} | {pct(s.rmspe)} | {pct(s.median_ape)} |")
    spread = {seed: score(p, cv["measured"]) for seed, p in cv["ops_by_tree_seed"].items()}
    if len(spread) > 1:
        hits = [s.within_10 for s in spread.values()]
        print(f"\nOperator-cost model, the same folds, tree seeds {min(spread)}–{max(spread)}: within ±10 % "
              + ", ".join(pct(h) for h in hits) + f" (mean {pct(statistics.mean(hits))}).")
    print_by_spread(records, cv["ops"], cv["measured"])
    return 0


#: Bands of a released mean's run-to-run spread (standard deviation / mean of its 5 runs).
SPREAD_BANDS = ((0.0, 0.05), (0.05, 0.10), (0.10, 0.20), (0.20, 0.40), (0.40, math.inf))


def print_by_spread(records, predicted, measured) -> None:
    """The operator-cost model's score per band of how much the Pi's 5 runs of a network disagreed."""
    print("\n| spread of the 5 runs (std / mean) | networks | operator-cost model within ±10 % | median error |")
    print("| --- | ---: | --- | --- |")
    for lo, hi in SPREAD_BANDS:
        rows = [i for i, r in enumerate(records) if lo <= r.std_ms / r.mean_ms < hi]
        if rows:
            s = score([predicted[i] for i in rows], [measured[i] for i in rows])
            band = f"{lo:.0%}–{hi:.0%}" if math.isfinite(hi) else f"≥ {lo:.0%}"
            print(f"| {band} | {len(rows)} | {pct(s.within_10)} | {pct(s.median_ape)} |")


if __name__ == "__main__":
    sys.exit(main())
