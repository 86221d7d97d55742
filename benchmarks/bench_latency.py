"""Latency calibration benchmark: kernel predictor vs a FLOPs-only line, on this machine.

Run from the repository root:

    .venv/bin/python benchmarks/bench_latency.py [--test 200] [--calib 30] [--max-kernels 400]

1. Calibration: ``--calib`` released configurations are timed whole (ONNX Runtime,
   1 thread, one fresh process each) together with up to ``--max-kernels`` of
   their distinct kernels; a kernel predictor and a FLOPs-only line
   (``a * FLOPs + b``) are fitted on the same timings.
2. ``--test`` other released configurations (all five families) are timed and
   predicted: share within +-10 % of the measured median, RMSPE.
   Both are repeated for the thread CPU-time median, which the machine's other
   load disturbs less.
3. Time to predict all 1,617 released configurations.
4. Released Raspberry Pi timings: 5-fold cross-validated whole-network cost
   model vs the FLOPs-only line.
5. Noise: one model timed 5 times with the protocol; spread of its median.

Prints Markdown tables. Uses the released data in ../shared/data (or $IOTNAS_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from iotnas.cost import cost
from iotnas.latency.calibrate import (
    calibrate,
    cross_validate_released,
    fit_kernel_predictor,
    released_timings,
    time_networks,
)
from iotnas.latency.kernels import arch_kernels
from iotnas.latency.measure import Protocol, environment
from iotnas.latency.predictor import FlopsPredictor, score
from iotnas.latency.runtimes import OrtSettings

#: Networks: >= 50 runs and >= 0.2 s, capped at 1 s (so every model gets >= 50 runs or >= 1 s).
NETWORK_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.1, warmup_max_s=1.0, min_runs=50, min_s=0.2, max_s=1.0)
#: The default protocol, for the noise check.
NOISE_PROTOCOL = Protocol()


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--calib", type=int, default=30)
    parser.add_argument("--max-kernels", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-json", type=Path, default=None, help="Also write every timing and prediction here.")
    parser.add_argument("--released-limit", type=int, default=None, help="Use only this many released configs (dry run).")
    args = parser.parse_args()
    data = Path(os.environ.get("IOTNAS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    rows = released_timings(data / "iotnets" / "results_RaspPi.json")
    if args.released_limit is not None:
        rows = rows[:: max(1, len(rows) // args.released_limit)]
    settings = OrtSettings(threads=1)
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    calib = [rows[i][0] for i in order[: args.calib]]
    test = [rows[i][0] for i in order[args.calib: args.calib + args.test]]
    t_start = time.perf_counter()
    load_before = os.getloadavg()

    log(f"calibrating on {len(calib)} networks")
    predictor, calibration = calibrate(
        calib, settings=settings, network_protocol=NETWORK_PROTOCOL, max_kernels=args.max_kernels, seed=args.seed,
        progress=lambda stage, i, n: log(f"  {stage} {i}/{n}") if i == n or i % 64 == 0 else None,
    )
    traced_calib = {key: arch_kernels(key) for key in calibration.networks}
    cpu_predictor = fit_kernel_predictor(calibration, traced_calib, settings=settings, environment={},
                                         statistic="cpu_median_ms", seed=args.seed)
    flops_of = {key: cost(key).flops for key in [*calib, *test]}
    lines = {
        stat: FlopsPredictor.fit([flops_of[k] for k in calibration.networks],
                                 [getattr(m, stat) for m in calibration.networks.values()])
        for stat in ("median_ms", "cpu_median_ms")
    }

    log(f"timing {len(test)} held-out networks")
    timed = time_networks(test, device=None, settings=settings, protocol=NETWORK_PROTOCOL,
                          progress=lambda _, i, n: log(f"  networks {i}/{n}") if i % 25 == 0 else None)
    keys = list(timed)
    traced_test = {key: arch_kernels(key) for key in keys}
    results = {}
    for stat, kernel_model in (("median_ms", predictor), ("cpu_median_ms", cpu_predictor)):
        measured = [getattr(timed[k], stat) for k in keys]
        results[stat] = (
            score([kernel_model.predict_kernels(traced_test[k]) for k in keys], measured),
            score([lines[stat].predict_flops(flops_of[k]) for k in keys], measured),
        )
    medians = [timed[k].median_ms for k in keys]
    cvs = [timed[k].cv for k in keys]

    log("predicting all released configurations")
    t0 = time.perf_counter()
    traced_all = {key: arch_kernels(key) for key, _, _ in rows}
    all_predictions = [predictor.predict_kernels(traced_all[key]) for key, _, _ in rows]
    predict_s = time.perf_counter() - t0

    log("cross-validating on the released Raspberry Pi timings")
    cv = cross_validate_released([(traced_all[key], ms, flops) for key, ms, flops in rows], seed=args.seed)
    pi_cost, pi_flops = score(cv["cost"], cv["measured"]), score(cv["flops"], cv["measured"])

    noise_key = min(keys, key=lambda k: abs(timed[k].median_ms - 5.0))
    log(f"noise: {noise_key} x5")
    repeats = [time_networks([noise_key], device=None, settings=settings, protocol=NOISE_PROTOCOL)[noise_key]
               for _ in range(5)]
    total_s = time.perf_counter() - t_start
    if args.save_json is not None:
        import json

        args.save_json.write_text(json.dumps({
            "calibration_networks": {k: m.to_dict() for k, m in calibration.networks.items()},
            "calibration_kernels": {k: m.to_dict() for k, m in calibration.kernels.items()},
            "test_networks": {k: m.to_dict() for k, m in timed.items()},
            "noise": [m.to_dict() for m in repeats],
        }))
    load_after = os.getloadavg()

    env = environment()
    print(f"## Latency benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"CPU: {env['cpu']} ({env['cpu_count']} cores, shared), ONNX Runtime {env['onnxruntime']}, "
          f"1 intra-op thread, 1 inter-op thread; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after; total {total_s / 60:.1f} min.\n")
    print(f"Calibration: {len(calibration.networks)} networks + {len(calibration.kernels)} kernels timed in "
          f"{calibration.seconds:.0f} s. Held-out: {len(keys)} networks, median latency {min(medians):.2f}–"
          f"{max(medians):.1f} ms (median {statistics.median(medians):.2f} ms); their CV: median "
          f"{pct(statistics.median(cvs))}, {pct(np.mean(np.array(cvs) > 0.10))} above 10 %.\n")
    print("| target statistic | predictor | within ±10 % | RMSPE | median error |")
    print("| --- | --- | --- | --- | --- |")
    for stat, (kernel_score, flops_score) in results.items():
        for name, s in (("kernel sum + correction", kernel_score), ("FLOPs-only line (baseline)", flops_score)):
            print(f"| {stat} | {name} | {pct(s.within_10)} | {pct(s.rmspe)} | {pct(s.median_ape)} |")
    print(f"\nPredicting all {len(rows)} released configurations (trace + predict): {predict_s:.1f} s "
          f"({1000 * predict_s / len(rows):.0f} ms each); predicted range {min(all_predictions):.2f}–"
          f"{max(all_predictions):.1f} ms.\n")
    print("Released Raspberry Pi 3B+ timings, 5-fold cross-validation:\n")
    print("| model | within ±10 % | RMSPE | median error |")
    print("| --- | --- | --- | --- |")
    for name, s in (("cost-feature trees", pi_cost), ("FLOPs-only line (baseline)", pi_flops)):
        print(f"| {name} | {pct(s.within_10)} | {pct(s.rmspe)} | {pct(s.median_ape)} |")
    wall = [m.median_ms for m in repeats]
    cpu = [m.cpu_median_ms for m in repeats]
    print(f"\nNoise: {noise_key} timed 5 times with the default protocol (>= 50 runs and >= 1 s each):\n")
    print("| statistic | 5 medians (ms) | spread (max/min - 1) | CV within each run |")
    print("| --- | --- | --- | --- |")
    print(f"| wall median | {', '.join(f'{x:.3f}' for x in wall)} | {pct(max(wall) / min(wall) - 1)} | "
          f"{', '.join(pct(m.cv) for m in repeats)} |")
    print(f"| thread CPU median | {', '.join(f'{x:.3f}' for x in cpu)} | {pct(max(cpu) / min(cpu) - 1)} | – |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
