"""Sample, build and cost the 1,617 released models: iotnas against fvcore on the same models.

iotnas: sample the arguments (fresh RandomState per model), then ``iotnas.cost.cost`` (build with
random init skipped, one forward pass on an empty batch with counting hooks). Baseline: build the
same network the ordinary way (PyTorch initialisation) and count it with fvcore's
``FlopCountAnalysis`` (a JIT trace plus one real batch-1 forward pass) and ``parameter_count``.
Both sides' figures are also checked against the released ``params`` and ``flops`` fields.

    python benchmarks/bench_spaces.py [--every K] [--no-baseline] [--released-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import torch

from iotnas import arch as arch_module
from iotnas import cost as cost_module
from iotnas.cost import cost
from iotnas.released import load_released
from iotnas.spaces import build


class Clock:
    """Wall and process CPU seconds of a block (the CPU figure is steadier on a shared machine)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def fmt(c: Clock) -> str:
    return f"{c.wall:.1f} s ({c.cpu:.1f} s CPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="use every K-th released record (1 = all 1,617)")
    parser.add_argument("--released-dir", default=None, help="folder with NetConfigs.json [default: ../shared/data/iotnets]")
    parser.add_argument("--no-baseline", action="store_true", help="time iotnas only (fvcore takes ~1 s CPU per model)")
    ns = parser.parse_args()

    from fvcore.nn import FlopCountAnalysis, parameter_count

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    models = load_released(ns.released_dir)[:: ns.every]
    n = len(models)
    archs = [m.arch for m in models]

    arch_module._sampled_json.cache_clear()
    cost_module._cost.cache_clear()
    sample_t, cost_t = Clock(), Clock()
    with sample_t:
        for a in archs:
            a.args
    with cost_t:
        costs = [cost(a) for a in archs]

    build_t, fv_t = Clock(), Clock()
    fv_flops, fv_params = [], []
    x = torch.zeros(1, 3, 32, 32)
    for a in [] if ns.no_baseline else archs:
        with build_t:
            model = build(a, seed=0).eval()
        with fv_t, torch.no_grad():
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            fv_flops.append(int(analysis.total()))
            fv_params.append(int(parameter_count(model)[""]))

    ours_params = sum(c.n_values == m.params for c, m in zip(costs, models))
    ours_flops = sum(c.flops == m.flops for c, m in zip(costs, models))
    fv_params_ok = sum(p == m.params for p, m in zip(fv_params, models))
    fv_flops_ok = sum(f == m.flops for f, m in zip(fv_flops, models))
    fv_macs_ok = sum(f == c.macs for f, c in zip(fv_flops, costs))
    ours_total = sample_t.wall + cost_t.wall
    if ns.no_baseline:
        print(f"Released models: {n}; torch {torch.__version__}\n")
        print("| step | iotnas |\n| --- | --- |")
        print(f"| sample arguments | {fmt(sample_t)} |\n| build and cost | {fmt(cost_t)} |")
        print(f"| values = released `params` | {ours_params} / {n} |\n| count = released `flops` | {ours_flops} / {n} |")
        return
    base_total = sample_t.wall + build_t.wall + fv_t.wall

    print(f"Released models: {n}; torch {torch.__version__}; Python {platform.python_version()}; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})\n")
    print("| step | iotnas | fvcore baseline |")
    print("| --- | --- | --- |")
    print(f"| sample arguments | {fmt(sample_t)} | (same iotnas sampling) |")
    print(f"| build | inside cost (random init skipped) | {fmt(build_t)} (PyTorch init) |")
    print(f"| count values, MACs/FLOPs, peak activations | {fmt(cost_t)} | {fmt(fv_t)} (no peak activations) |")
    print(f"| **total, wall** | **{ours_total:.1f} s** | **{base_total:.1f} s** ({base_total / ours_total:.1f}x iotnas) |")
    print(f"| per model, wall | {1000 * ours_total / n:.1f} ms | {1000 * base_total / n:.1f} ms |")
    print(f"| values = released `params` | {ours_params} / {n} | {fv_params_ok} / {n} (`parameter_count` omits BN buffers) |")
    print(f"| count = released `flops` | {ours_flops} / {n} | {fv_flops_ok} / {n} |")
    print(f"| fvcore total = iotnas `macs` | | {fv_macs_ok} / {n} |")


if __name__ == "__main__":
    main()
