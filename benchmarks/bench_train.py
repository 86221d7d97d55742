"""Training speed: iotnas' pipeline against a textbook one, and time-to-accuracy on CIFAR-10.

    python benchmarks/bench_train.py throughput [--data DIR] [--images N]
    python benchmarks/bench_train.py accuracy --epochs E [--data DIR]
    python benchmarks/bench_train.py ablate --epochs E --images N [--data DIR]

``throughput`` trains each model on the same N CIFAR-10 images twice in one run: with the
textbook pipeline (torch DataLoader over per-image transforms, float32 NCHW tensors, batch 128,
SGD lr 0.1 momentum 0.9) and with :func:`iotnas.train.train` (uint8 tensors in memory, whole-batch
augmentation, the default recipe's batch size), with channels-last and NCHW layouts. Both include data preparation; iotnas' figure excludes its evaluation.
``accuracy`` trains mobilenetv2/s4/39 on all of CIFAR-10, evaluating every epoch, and reports
the epochs and minutes at which test accuracy first reached 70, 75 and 80 %.
``ablate`` trains the same model on a subset under recipe variants, one change at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from iotnas.arch import Arch
from iotnas.data import load_dataset
from iotnas.spaces import build
from iotnas.train import EpochStats, TrainConfig, evaluate, train

MODELS = ("mobilenetv2/s4/39", "densenet/s3/36", "resnext/s3/2")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
THRESHOLDS = (0.70, 0.75, 0.80)


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
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def _fresh(key: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(Arch.parse(key), num_classes=10, in_channels=3)


def _machine(threads: int | None) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    chosen = f"{threads} torch thread(s)" if threads else "torch threads chosen by iotnas"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{chosen}, load average at start {load:.1f}")  # fmt: skip


def throughput(args) -> None:
    dataset = load_dataset(args.data, verify=False).subset(train=args.images, test=100)
    threads = args.threads or 1
    torch.set_num_threads(threads)
    print(f"Training throughput, {args.images} CIFAR-10 images per run; {_machine(threads)}\n")
    print("| model | parameters | textbook img/s | iotnas img/s (channels-last) | ratio | iotnas img/s (NCHW) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key in args.models:
        n_params = sum(p.numel() for p in _fresh(key).parameters())
        base = textbook_images_per_s(_fresh(key), dataset, args.images)
        ours = {}
        for channels_last in (True, False):
            config = TrainConfig(epochs=1, channels_last=channels_last, threads=threads)  # the default recipe
            ours[channels_last] = train(_fresh(key), dataset, config, seed=0).images_per_s
        print(f"| {key} | {n_params:,} | {base:,.0f} | {ours[True]:,.0f} | {ours[True] / base:.1f}x | {ours[False]:,.0f} |",
              flush=True)  # fmt: skip


def accuracy(args) -> None:
    dataset = load_dataset(args.data, verify=False)
    config = TrainConfig(epochs=args.epochs, eval_every=1, threads=args.threads, channels_last=True)
    print(f"Time to accuracy, {MODELS[0]}, CIFAR-10 (JPEG-decoded copy), {config}; {_machine(args.threads)}\n")
    start = time.perf_counter()
    log: list[tuple[EpochStats, float]] = []

    def record(stats: EpochStats) -> None:
        minutes = (time.perf_counter() - start) / 60
        log.append((stats, minutes))
        print(f"epoch {stats.epochs_done:g}: loss {stats.loss:.3f}, train {stats.train_accuracy:.3f}, "
              f"test {stats.test_accuracy:.4f}, {stats.images_per_s:,.0f} img/s, {minutes:.1f} min", flush=True)  # fmt: skip

    train(_fresh(MODELS[0]), dataset, config, seed=0, callbacks=[record])
    print("\n| target | epochs | minutes |")
    print("| --- | ---: | ---: |")
    for target in THRESHOLDS:
        hit = next(((s, m) for s, m in log if s.test_accuracy is not None and s.test_accuracy >= target), None)
        cells = f"{hit[0].epochs_done:g} | {hit[1]:.1f}" if hit else "not reached | –"
        print(f"| {target:.0%} | {cells} |")
    final, minutes = log[-1]
    print(f"\nfinal: {final.test_accuracy:.2%} after {final.epochs_done:g} epochs, {minutes:.1f} minutes")


def ablate(args) -> None:
    dataset = load_dataset(args.data, verify=False).subset(train=args.images)
    base = TrainConfig(epochs=args.epochs, threads=args.threads, channels_last=True)
    variants = {
        "recipe (defaults)": {},
        "label smoothing 0": {"label_smoothing": 0.0},
        "random flips (not alternating)": {"alternating_flip": False},
        "EMA of weights 0.99": {"ema_decay": 0.99},
        "lr 0.1": {"lr": 0.1},
        "lr 0.4": {"lr": 0.4},
        "batch 512, lr 0.4": {"batch_size": 512, "lr": 0.4},
    }
    print(f"Recipe ablations, {MODELS[0]}, {args.images} CIFAR-10 train images, full test split, "
          f"{args.epochs:g} epochs; {_machine(args.threads)}\n")  # fmt: skip
    print("| variant | test accuracy | minutes |")
    print("| --- | ---: | ---: |")
    for name, change in variants.items():
        if args.only and name not in args.only:
            continue
        model = _fresh(MODELS[0])
        result = train(model, dataset, dataclasses.replace(base, **change), seed=0)
        print(f"| {name} | {result.test_accuracy:.2%} | {result.seconds / 60:.1f} |", flush=True)
        if not change:  # test-time flips need no training: evaluate the same weights with them
            print(f"| recipe + test-time flips | {evaluate(model, dataset, tta=True):.2%} | – |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("throughput", "accuracy", "ablate"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=4096, help="train images per run (throughput, ablate)")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: iotnas' choice)")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--only", nargs="*", help="ablation variants to run (default: all)")
    args = parser.parse_args()
    {"throughput": throughput, "accuracy": accuracy, "ablate": ablate}[args.part](args)


if __name__ == "__main__":
    main()
