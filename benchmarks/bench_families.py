"""Family comparison: each space's best model under one weight budget, found by the same search budget.

    python benchmarks/bench_families.py [--trainings T] [--epochs E] [--images N] [--test-images M]
                                        [--throughput-images P] [--data DIR] [--settings NAME ...]
                                        [--families SPACE ...] [--reference KEY ...]

Settings: 8 KiB float32, 32 KiB 8-bit (int8), 64 KiB 8-bit. For each setting and each registered
space, the candidates are the sampled ids of the space's laws (ids 0-63, as ``iotnas spaces list``
counts them) whose weights fit the budget in the format, under the pool's rule
(``ceil(n_values * bits / 8)``). Every family gets the same search budget: its T candidates with
the most values (the capacity the budget allows) are trained E epochs on the same N CIFAR-10
training images with the default recipe (one torch thread), and scored on the first M test images
with their weights stored in the format (``int8`` emulated); the most accurate is the family's best.

For each best model, in the same run: accuracy; training images/s from a separate pass in which
every best model trains on the same P images, one thread, best of two passes interleaved across
models, so that load on a shared machine hits all of them alike; ONNX Runtime batch-1 latency
(one thread; median per-run CPU time, which being descheduled does not inflate, beside the wall
median); peak activation bytes (float32 activations). The last lines give the ratio of the
compact space's training speed to that of the most accurate of the paper's families, and to each
``--reference`` model (timed in the same interleaved passes; by default the paper families' most
accurate models at 32 KiB under iotnas' own 8-epoch training, BENCHMARKS.md "Headline table").
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.data import load_dataset
from iotnas.latency.measure import Protocol
from iotnas.latency.runtimes import OrtSettings, export_onnx, time_onnx
from iotnas.precision.emulate import emulated
from iotnas.results.limits import Limits
from iotnas.spaces import build, get_space, list_spaces
from iotnas.spaces.yields import YIELD_IDS, law_yield, pool_figures
from iotnas.train import TrainConfig, evaluate, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
KIB = 1024
#: name -> (weight budget in bytes, format name, bits per weight)
SETTINGS = {
    "8KiB-float32": (8 * KIB, "float32", 32),
    "32KiB-int8": (32 * KIB, "int8", 8),
    "64KiB-int8": (64 * KIB, "int8", 8),
}
OWN_SPACES = ("compact",)  # designed by iotnas; every other registered space is one of the paper's families
#: The paper families' best at 32 KiB in iotnas' own training (int8 76.89 %; half-tier best of MobileNetV2).
REFERENCES = ("densenet/s3/97", "mobilenetv2/s4/39")


@dataclass(frozen=True)
class Best:
    family: str
    arch: Arch
    n_values: int
    accuracy: float
    tried: int
    images_per_s: float = 0.0
    latency_cpu_ms: float = 0.0
    latency_wall_ms: float = 0.0
    peak_activation_bytes: int = 0


def candidates(family: str, budget: int, bits: int) -> list[tuple[int, Arch]]:
    """(n_values, arch) of the family's sampled ids that fit ``budget`` at ``bits``, most values first."""
    limits = Limits(max_weight_bytes=budget)
    found = []
    for law in get_space(family).laws:
        for id, figures in enumerate(law_yield(family, law).figures):
            if figures is not None and limits.first_violation(pool_figures(*figures, bits=bits)) is None:
                found.append((figures[0], Arch(family, law, id)))
    return sorted(found, key=lambda c: (-c[0], c[1].key))


def score(arch: Arch, train_set, test_set, *, epochs: float, fmt: str) -> float:
    model = build(arch, seed=0)
    train(model, train_set, TrainConfig(epochs=epochs, threads=1), seed=0)
    with emulated(model, weights=None if fmt == "float32" else fmt) as stored:
        return evaluate(stored, test_set, threads=1)


def images_per_s(arch: Arch, dataset) -> float:
    return train(build(arch, seed=0), dataset, TrainConfig(epochs=1, threads=1), seed=0).images_per_s


def latency(arch: Arch) -> tuple[float, float]:
    onnx = export_onnx(build(arch, seed=0).eval(), input_shape=(1, 3, 32, 32))
    m = time_onnx(onnx, settings=OrtSettings(threads=1), protocol=Protocol(min_runs=50, min_s=0.5, max_s=5.0))
    return m.cpu_median_ms, m.median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainings", type=int, default=2, help="models trained per family and setting (search budget)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs per training")
    parser.add_argument("--images", type=int, default=2048, help="CIFAR-10 training images")
    parser.add_argument("--test-images", type=int, default=1000, help="CIFAR-10 test images scored")
    parser.add_argument("--throughput-images", type=int, default=1024, help="images per throughput pass")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--families", nargs="+", default=list_spaces())
    parser.add_argument("--reference", nargs="*", default=list(REFERENCES), help="models timed beside the bests")
    args = parser.parse_args()

    torch.set_num_threads(1)
    full = load_dataset(args.data, verify=False)
    data = full.subset(train=args.images, test=args.test_images)
    throughput_set = full.subset(train=args.throughput_images, test=1)
    start, load = time.perf_counter(), os.getloadavg()
    print(f"Family comparison on CIFAR-10 (JPEG-decoded copy): {args.trainings} training(s) per family and setting, "
          f"{args.epochs:g} epoch(s) on {args.images} images, scored on {args.test_images} test images; "
          f"candidates: ids 0-{YIELD_IDS - 1} of every law. {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, 1 thread; load average at start {load[0]:.1f}\n")
    for name in args.settings:
        budget, fmt, bits = SETTINGS[name]
        bests: list[Best] = []
        for family in args.families:
            found = candidates(family, budget, bits)
            if not found:
                continue
            tried = found[: args.trainings]
            scored = [(score(a, data, data, epochs=args.epochs, fmt=fmt), n, a) for n, a in tried]
            accuracy, n_values, arch = max(scored, key=lambda s: s[0])
            bests.append(Best(family, arch, n_values, accuracy, len(found)))
        timed = [b.arch for b in bests] + [Arch.parse(key) for key in args.reference]
        speeds: dict[str, list[float]] = {a.key: [] for a in timed}
        for _ in range(2):  # interleaved, so a burst of load slows every model alike
            for a in timed:
                speeds[a.key].append(images_per_s(a, throughput_set))
        rows = []
        for b in bests:
            cpu_ms, wall_ms = latency(b.arch)
            rows.append(Best(b.family, b.arch, b.n_values, b.accuracy, b.tried, max(speeds[b.arch.key]), cpu_ms,
                             wall_ms, cost(b.arch).peak_activation_bytes(32)))
        print(f"### {budget // KIB} KiB, {fmt} (load average now {os.getloadavg()[0]:.1f})\n")
        print("| family | best model | values | candidates | accuracy | train img/s | ORT batch-1 ms (CPU / wall) "
              "| peak activation bytes |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in sorted(rows, key=lambda r: -r.accuracy):
            print(f"| {r.family} | {r.arch.key} | {r.n_values:,} | {r.tried} | {r.accuracy:.2%} | {r.images_per_s:,.0f} "
                  f"| {r.latency_cpu_ms:.3f} / {r.latency_wall_ms:.3f} | {r.peak_activation_bytes:,} |", flush=True)
        paper = [r for r in rows if r.family not in OWN_SPACES]
        own = [r for r in rows if r.family in OWN_SPACES]
        if paper and own:
            ref, new = max(paper, key=lambda r: r.accuracy), max(own, key=lambda r: r.accuracy)
            print(f"\n{new.family}'s best trains at {new.images_per_s / ref.images_per_s:.1f}x the images/s of the "
                  f"most accurate paper family's best ({new.arch.key} {new.images_per_s:,.0f} img/s, "
                  f"{ref.arch.key} {ref.images_per_s:,.0f} img/s).", flush=True)
            for key in args.reference:
                print(f"Against {key} ({cost(key).n_values:,} values): {new.images_per_s / max(speeds[key]):.1f}x "
                      f"({max(speeds[key]):,.0f} img/s).", flush=True)
            print()
    print(f"Wall time {(time.perf_counter() - start) / 60:.1f} min; load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
