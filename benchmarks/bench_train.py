"""Training speed: iotnas' pipeline against a textbook one, and time-to-accuracy on CIFAR-10.

    python benchmarks/bench_train.py throughput [--data DIR] [--images N]
    python benchmarks/bench_train.py accuracy --epochs E [--models M1 M2] [--recipe current|previous] [--data DIR]
    python benchmarks/bench_train.py ablate --images N --budgets E1 E2 --models M1 M2 [--results FILE]
    python benchmarks/bench_train.py compile [--models M1 M2] [--steps N]
    python benchmarks/bench_train.py allocator [--models M1 M2] [--images N]

``throughput`` trains each model on the same N CIFAR-10 images twice in one run: with the
textbook pipeline (torch DataLoader over per-image transforms, float32 NCHW tensors, batch 128,
SGD lr 0.1 momentum 0.9) and with :func:`iotnas.train.train` (uint8 tensors in memory, whole-batch
augmentation, the default recipe's batch size), with channels-last and NCHW layouts. Both include data preparation; iotnas' figure excludes its evaluation.
``accuracy`` trains each of ``--models`` in turn (``space/law/id`` or an Arch JSON object with explicit
arguments; default mobilenetv2/s4/39) on all of CIFAR-10 for ``--epochs``, evaluating every epoch, under ``--recipe current`` (the defaults) or ``previous`` (the
fixed one-epoch warm-up it replaced), and reports the epochs and minutes at which test accuracy
first reached 70, 75, 80 and 85 %; with several models, a table of their final accuracies and speeds.
Minutes include the per-epoch evaluations.
``ablate`` trains each model on a subset under recipe variants, one change at a time, at each budget.
``allocator`` trains each model for one epoch of ``--images`` images in a fresh process twice: with
glibc's default allocator thresholds and with the freed memory iotnas keeps, counting page faults.
``distill`` trains each of ``--models`` on its own and then from ``--teacher``'s softened outputs
(a trained checkpoint) at each of ``--distill-weights``, in one run (``--images 0``: all of them).
``compile`` times a training step (forward, loss, backward, SGD step; batch 128, channels-last, one
thread unless ``--threads``) of each model eagerly and with ``torch.compile`` applied to the model
(the optimiser step stays eager), in one process: the best of three runs of ``--steps`` steps, in
process CPU time, after two warm-up steps whose wall time is the compilation time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.data import load_dataset
from iotnas.spaces import build
from iotnas.train import EpochStats, TrainConfig, train

MODELS = ("mobilenetv2/s4/39", "densenet/s3/36", "resnext/s3/2")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
THRESHOLDS = (0.70, 0.75, 0.80, 0.85)


class _PerImage(TorchDataset):
    """The textbook CIFAR-10 dataset: one image at a time, crop 32 with padding 4, flip, to float, normalise."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, seed: int):
        self.images, self.labels = images.numpy(), labels
        self.mean, self.std = mean.view(-1, 1, 1) / 255, std.view(-1, 1, 1) / 255
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = np.pad(self.images[i], ((0, 0), (4, 4), (4, 4)))
        y, x = self.rng.integers(0, 9, 2)
        image = image[:, y : y + 32, x : x + 32]
        if self.rng.random() < 0.5:
            image = image[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255)
        return (tensor - self.mean) / self.std, self.labels[i]


def textbook_images_per_s(model: torch.nn.Module, dataset, n: int) -> float:
    loader = DataLoader(_PerImage(dataset.train_images[:n], dataset.train_labels[:n], dataset.channel_mean,
                                  dataset.channel_std, 0), batch_size=128, shuffle=True, num_workers=0)  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where iotnas.train trains too
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def _fresh(key: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(Arch.parse(key), num_classes=10, in_channels=3)


def _machine(threads: int | None) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    chosen = f"{threads} torch thread(s)" if threads else "torch threads chosen by iotnas"
    if torch.cuda.is_available():
        chosen += f", training on {torch.cuda.get_device_name()}"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{chosen}, load average at start {load:.1f}")  # fmt: skip


def _start_table(args, title: str, columns: tuple[str, ...]) -> int:
    """Set torch's threads (``--threads``, default one), print the title with the machine and the
    table's header; returns the thread count."""
    threads = args.threads or 1
    torch.set_num_threads(threads)
    print(f"{title}; {_machine(threads)}\n")
    print("| " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * (len(columns) - 1))
    return threads


def throughput(args) -> None:
    dataset = load_dataset(args.data, verify=False).subset(train=args.images, test=100)
    threads = _start_table(args, f"Training throughput, {args.images} CIFAR-10 images per run",
                           ("model", "parameters", "textbook img/s", "iotnas img/s (channels-last)", "ratio",
                            "iotnas img/s (NCHW)"))
    bases = {key: textbook_images_per_s(_fresh(key), dataset, args.images) for key in args.models}  # before
    for key, base in bases.items():  # iotnas' first training changes the process's allocator for good
        n_params = sum(p.numel() for p in _fresh(key).parameters())
        ours = {}
        for channels_last in (True, False):
            config = TrainConfig(epochs=1, channels_last=channels_last, threads=threads)  # the default recipe
            ours[channels_last] = train(_fresh(key), dataset, config, seed=0).images_per_s
        print(f"| {key} | {n_params:,} | {base:,.0f} | {ours[True]:,.0f} | {ours[True] / base:.1f}x | {ours[False]:,.0f} |",
              flush=True)  # fmt: skip


_FAULTS_RUN = """
import resource, sys
from iotnas.data import load_dataset
from iotnas.spaces import build
from iotnas.train import TrainConfig, train
key, data, images = sys.argv[1], sys.argv[2], int(sys.argv[3])
dataset = load_dataset(data, verify=False).subset(train=images, test=100)
before = resource.getrusage(resource.RUSAGE_SELF)
result = train(build(key), dataset, TrainConfig(epochs=1, threads=1), seed=0)
after = resource.getrusage(resource.RUSAGE_SELF)
print(result.images_per_s, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime)
"""


def allocator(args) -> None:
    """One training per model and setting, each in a fresh process: glibc's default thresholds
    (freed blocks above 32 MiB go back to the kernel) against iotnas' kept freed memory."""
    import subprocess
    import sys

    _start_table(args, f"Page faults and speed, {args.images} CIFAR-10 images, one thread, a fresh process each",
                 ("model", "default img/s", "default page faults", "default system CPU s", "kept img/s",
                  "kept page faults", "kept system CPU s", "speed-up"))
    for key in args.models:
        row = {}
        for mode in ("default", "kept"):
            env = {**os.environ, "IOTNAS_KEEP_FREED_MEMORY": "1" if mode == "kept" else "0"}
            done = subprocess.run([sys.executable, "-c", _FAULTS_RUN, key, str(args.data), str(args.images)],
                                  capture_output=True, text=True, check=True, env=env)  # fmt: skip
            speed, faults, system = done.stdout.split()[-3:]
            row[mode] = (float(speed), int(faults), float(system))
        (d_speed, d_faults, d_sys), (k_speed, k_faults, k_sys) = row["default"], row["kept"]
        print(f"| {key} | {d_speed:,.0f} | {d_faults:,} | {d_sys:.1f} | {k_speed:,.0f} | {k_faults:,} | {k_sys:.1f} | "
              f"{k_speed / d_speed:.2f}x |", flush=True)  # fmt: skip


def accuracy(args) -> None:
    dataset = load_dataset(args.data, verify=False)
    config = dataclasses.replace(TrainConfig(epochs=args.epochs, eval_every=1, threads=args.threads, channels_last=True),
                                 **RECIPES[args.recipe])
    summary = [_time_to_accuracy(key, dataset, config, args) for key in args.models]
    if len(summary) > 1:
        print("\n| model | values | final test accuracy | minutes | img/s (median epoch) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for row in summary:
            print(row)


def _time_to_accuracy(key: str, dataset, config: TrainConfig, args) -> str:
    """Train ``key`` from scratch, evaluating every epoch; print when each threshold was first reached."""
    arch = Arch.parse(key)
    model = _fresh(key)
    print(f"Time to accuracy, {arch.key}, {args.recipe} recipe, CIFAR-10 (JPEG-decoded copy), {config}; "
          f"{_machine(args.threads)}\n")
    start = time.perf_counter()
    log: list[tuple[EpochStats, float]] = []

    def record(stats: EpochStats) -> None:
        minutes = (time.perf_counter() - start) / 60
        log.append((stats, minutes))
        print(f"epoch {stats.epochs_done:g}: loss {stats.loss:.3f}, train {stats.train_accuracy:.3f}, "
              f"test {stats.test_accuracy:.4f}, {stats.images_per_s:,.0f} img/s, {minutes:.1f} min", flush=True)  # fmt: skip

    train(model, dataset, config, seed=0, callbacks=[record])
    print("\n| target | epochs | minutes |")
    print("| --- | ---: | ---: |")
    for target in THRESHOLDS:
        hit = next(((s, m) for s, m in log if s.test_accuracy is not None and s.test_accuracy >= target), None)
        cells = f"{hit[0].epochs_done:g} | {hit[1]:.1f}" if hit else "not reached | –"
        print(f"| {target:.0%} | {cells} |")
    final, minutes = log[-1]
    print(f"\nfinal: {final.test_accuracy:.2%} after {final.epochs_done:g} epochs, {minutes:.1f} minutes\n", flush=True)
    speed = float(np.median([s.images_per_s for s, _ in log]))
    return f"| {arch.key} | {cost(arch).n_values:,} | {final.test_accuracy:.2%} | {minutes:.1f} | {speed:,.0f} |"


#: ``accuracy --recipe``: the defaults, and the fixed one-epoch warm-up they replaced.
RECIPES = {"current": {}, "previous": {"warmup_epochs": 1.0}}

ABLATIONS = {
    "recipe (defaults)": {},
    "previous recipe: fixed 1-epoch warm-up": {"warmup_epochs": 1.0},
    "warm-up 0.1 of the budget": {"warmup_fraction": 0.1},
    "warm-up 0.3 of the budget": {"warmup_fraction": 0.3},
    "label smoothing 0": {"label_smoothing": 0.0},
    "lr 0.4": {"lr": 0.4},
    "batch 64": {"batch_size": 64},
    "EMA of weights 0.99 (ramped)": {"ema_decay": 0.99},
    "crop padding 4": {"crop_padding": 4},
    "weight decay 1e-4": {"weight_decay": 1e-4},  # small networks underfit: less regularisation may pay
    "weight decay 0": {"weight_decay": 0.0},
    "crop padding 0": {"crop_padding": 0},
}


def ablate(args) -> None:
    """One change at a time, for every model and budget; cells are kept in ``--results`` and skipped when rerun."""
    dataset = load_dataset(args.data, verify=False).subset(train=args.images)
    results_file = Path(args.results)
    done = json.loads(results_file.read_text()) if results_file.is_file() else {}
    names = [n for n in ABLATIONS if not args.only or n in args.only]
    columns = [(key, budget) for key in args.models for budget in args.budgets]
    print(f"Recipe ablations, {args.images} CIFAR-10 train images, full test split, seed 0; "
          f"{_machine(args.threads)}\n", flush=True)  # fmt: skip
    for name in names:
        for key, budget in columns:
            cell = f"{name} | {key} | {budget:g}"
            if cell in done:
                continue
            config = dataclasses.replace(TrainConfig(epochs=budget, threads=args.threads), **ABLATIONS[name])
            result = train(_fresh(key), dataset, config, seed=0)
            done[cell] = {"accuracy": result.test_accuracy, "minutes": result.seconds / 60,
                          "load": os.getloadavg()[0]}
            results_file.write_text(json.dumps(done, indent=1))
            print(f"{cell}: {result.test_accuracy:.2%} ({result.seconds / 60:.1f} min)", flush=True)
    header = " | ".join(f"{key}, {budget:g} ep" for key, budget in columns)
    print(f"\n| variant | {header} | mean change |")
    print("| --- |" + " ---: |" * (len(columns) + 1))
    base = [done.get(f"{names[0]} | {key} | {budget:g}", {}).get("accuracy") for key, budget in columns]
    for name in names:
        accs = [done.get(f"{name} | {key} | {budget:g}", {}).get("accuracy") for key, budget in columns]
        cells = " | ".join("–" if a is None else f"{a:.2%}" for a in accs)
        diffs = [a - b for a, b in zip(accs, base) if a is not None and b is not None]
        mean = f"{100 * sum(diffs) / len(diffs):+.2f}" if diffs and name != names[0] else "–"
        print(f"| {name} | {cells} | {mean} |")


def _step_images_per_s(model: torch.nn.Module, compiled: bool, steps: int) -> tuple[float, float]:
    """(images/s of a training step in process CPU time, seconds of the two warm-up steps)."""
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(0))
    model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        loss = criterion(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    step()
    warmup = time.perf_counter() - started
    best = 0.0
    for _ in range(3):
        cpu = time.process_time()
        for _ in range(steps):
            step()
        best = max(best, 128 * steps / (time.process_time() - cpu))
    return best, warmup


def compile_step(args) -> None:
    _start_table(args, "Training step, eager vs torch.compile of the model, batch 128",
                 ("model", "eager img/s", "compiled img/s", "compiled / eager", "compilation s"))
    for key in args.models:
        eager, _ = _step_images_per_s(_fresh(key), False, args.steps)
        compiled, seconds = _step_images_per_s(_fresh(key), True, args.steps)
        print(f"| {key} | {eager:,.0f} | {compiled:,.0f} | {compiled / eager:.2f} | {seconds:.0f} |", flush=True)


def distill(args) -> None:
    """Each student trained twice in one run, on its own and from ``--teacher``'s outputs, at each weight."""
    from iotnas.train import evaluate, load_trained

    if args.teacher is None:
        raise SystemExit("distill: give --teacher CHECKPOINT (a checkpoint.pt of a trained model)")
    dataset = load_dataset(args.data, verify=False)
    if args.images:
        dataset = dataset.subset(train=args.images)
    teacher = load_trained(args.teacher)
    teacher_accuracy = evaluate(teacher.model, dataset)
    print(f"Knowledge distillation, teacher {teacher.arch.key} ({cost(teacher.arch).n_values:,} values, "
          f"{teacher_accuracy:.2%} on this test split), {len(dataset.train_labels):,} train images, "
          f"{args.epochs:g} epochs, seed 0; {_machine(args.threads)}\n", flush=True)
    rows = []
    for key in args.models:
        for weight in (0.0, *args.distill_weights):
            config = TrainConfig(epochs=args.epochs, threads=args.threads, distill_weight=weight,
                                 distill_temperature=args.temperature)
            result = train(_fresh(key), dataset, config, seed=0, teacher=teacher.model if weight else None)
            speed = float(np.median([h.images_per_s for h in result.history]))
            rows.append(f"| {key} | {cost(Arch.parse(key)).n_values:,} | {weight:g} | {result.test_accuracy:.2%} | "
                        f"{result.seconds / 60:.1f} | {speed:,.0f} |")
            print(rows[-1], flush=True)
    print(f"\n| student | values | distill weight (T = {args.temperature:g}) | test accuracy | minutes | img/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("throughput", "accuracy", "ablate", "compile", "allocator", "distill"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=4096, help="train images per run (throughput, ablate)")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: iotnas' choice)")
    parser.add_argument("--models", nargs="+", help=f"default: {MODELS[0]} (accuracy), {', '.join(MODELS)} (others)")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="current", help="accuracy: the recipe")
    parser.add_argument("--only", nargs="*", help="ablation variants to run (default: all)")
    parser.add_argument("--budgets", nargs="+", type=float, default=(1.0, 4.0), help="ablate: epochs per cell")
    parser.add_argument("--results", default="ablations.json", help="ablate: cells kept here; a rerun skips them")
    parser.add_argument("--steps", type=int, default=10, help="compile: timed steps per run")
    parser.add_argument("--teacher", help="distill: the teacher's checkpoint.pt")
    parser.add_argument("--distill-weights", nargs="+", type=float, default=(0.5,), help="distill: weights to try")
    parser.add_argument("--temperature", type=float, default=4.0, help="distill: softening temperature")
    args = parser.parse_args()
    args.models = args.models or (list(MODELS[:1]) if args.part == "accuracy" else list(MODELS))
    {"throughput": throughput, "accuracy": accuracy, "ablate": ablate, "compile": compile_step,
     "allocator": allocator, "distill": distill}[args.part](args)


if __name__ == "__main__":
    main()
