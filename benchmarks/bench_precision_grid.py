"""The precision stage's grid on one trained model: pruning and test_images against the plain bisection.

Trains one small model on Fashion-MNIST (a real 10,000-image test split), then scores it along the
study default's (e, m) grid four ways in one run:

* baseline: the bisection with every format evaluated on every test image (pruning switched off);
* pruned: formats that cannot hold the weights skipped, collapsed rows ended (iotnas's grid);
* pruned, test_images = 1,000 (a fixed draw), the winner format re-scored on all 10,000.

Prints a Markdown table: evaluations, seconds, and the ratio to the baseline.

    python benchmarks/bench_precision_grid.py [--data ../shared/data/fashion-mnist] [--train-images 2048]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from iotnas.arch import Arch
from iotnas.data import load_dataset
from iotnas.precision import grid
from iotnas.precision.runner import PrecisionRunner
from iotnas.spaces import build
from iotnas.study import parse_study
from iotnas.train import recipe_for, train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--arch", default="probenet/s2/0")
    args = parser.parse_args()

    dataset = load_dataset(args.data).subset(train=args.train_images)
    arch = Arch.parse(args.arch)
    settings = {"name": "bench", "precision": {"grid": True}, "training": {"threads": 1}}
    study = parse_study(settings)
    folder = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    model = build(arch, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    result = train(model, dataset, recipe_for(study, args.epochs), checkpoint_dir=folder, seed=0,
                   meta={"arch": arch.to_json()})
    checkpoint = str(result.checkpoint)

    def run(label: str, runner: PrecisionRunner, *, pruning: bool) -> tuple[str, int, float, str]:
        patches = [] if pruning else [mock.patch.object(grid, "unfit_reason", lambda *a: None),
                                      mock.patch.object(grid, "COLLAPSE_FRACTION", -1.0),
                                      mock.patch.object(grid, "is_chance_level", lambda *a: False)]
        for p in patches:
            p.start()
        try:
            started = time.perf_counter()
            found = runner.evaluate(arch, checkpoint, known={}, known_bytes={})
            best = min((n for n, a in found.accuracy.items() if a >= found.accuracy["float32"] - 0.01),
                       key=lambda n: found.weight_bytes[n])
            extra = ""
            if runner.test_images is not None:
                from iotnas.formats import parse_format

                full = runner.rescore(arch, checkpoint, parse_format(best))
                extra = f"; {best} on all: {full:.2%}"
            seconds = time.perf_counter() - started
        finally:
            for p in patches:
                p.stop()
        note = f"{best} {found.accuracy[best]:.2%}, {len(found.skipped)} skipped{extra}"
        return label, found.evaluations, seconds, note

    plain = PrecisionRunner(study, dataset)
    subset = PrecisionRunner(parse_study({**settings, "precision": {"grid": True, "test_images": args.test_images}}),
                             dataset)
    rows = [run("baseline: bisection, every test image", plain, pruning=False),
            run("pruned grid, every test image", plain, pruning=True),
            run(f"pruned grid, test_images = {args.test_images:,}; winner re-scored", subset, pruning=True)]
    load = os.getloadavg()[0]
    print(f"{args.arch} on {dataset.describe()}; {result.test_accuracy:.2%} after {args.epochs:g} epochs; "
          f"load average {load:.2f}\n")
    print("| grid | evaluations | seconds | ratio to baseline | narrowest within 1 point |")
    print("|---|---|---|---|---|")
    base = rows[0][2]
    for label, n, seconds, note in rows:
        print(f"| {label} | {n} | {seconds:.1f} | {seconds / base:.2f} | {note} |")


if __name__ == "__main__":
    main()
