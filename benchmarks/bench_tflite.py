"""Accuracy of model_int8.tflite in the LiteRT interpreter against the int8-emulated model, on real test images.

    python benchmarks/bench_tflite.py                 # digits and CIFAR-10 (a few minutes on 2 cores)
    python benchmarks/bench_tflite.py --epochs 4 --cifar-train 2048

Trains two small models briefly (a ResNet on the digits, a MobileNetV2 on a CIFAR-10 subset), then
for each: the float32 accuracy, the int8-emulated accuracy (the int8 deployed network: int8
weights, float32 activations; the baseline), the TFLite model's accuracy with int8 activations
calibrated on 512 training images, the share of images with the same predicted class, and the
file's bytes, all on the same test images in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from iotnas.arch import Arch
from iotnas.data import load_dataset
from iotnas.export import CALIBRATION_IMAGES, check_tflite, deploy, int8_tflite
from iotnas.spaces import build
from iotnas.train import TrainConfig, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _normalised(dataset, images: torch.Tensor) -> torch.Tensor:
    return (images.float() - dataset.channel_mean.view(1, -1, 1, 1)) * (1.0 / dataset.channel_std.view(1, -1, 1, 1))


def _row(key: str, dataset, epochs: float) -> str:
    torch.manual_seed(0)
    model = build(Arch.parse(key), num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    train(model, dataset, TrainConfig(epochs=epochs, batch_size=64, threads=1), seed=0, device="cpu")
    model.eval()
    x = _normalised(dataset, dataset.test_images)
    with torch.no_grad():
        float32 = float((model(x).argmax(1) == dataset.test_labels).float().mean())
    deployed = deploy(model, "int8")
    n = len(dataset.train_labels)
    index = torch.linspace(0, n - 1, min(CALIBRATION_IMAGES, n)).round().long()
    tfl = int8_tflite(deployed, _normalised(dataset, dataset.train_images[index]))
    with torch.no_grad():
        emulated = deployed.module(x)
    c = check_tflite(tfl, x, dataset.test_labels, emulated)
    return (f"| {key} | {dataset.name} ({n:,} train, {epochs:g} epochs) | {c.images} | {float32:.2%} | "
            f"{c.int8_accuracy:.2%} | {c.accuracy:.2%} | {100 * (c.accuracy - c.int8_accuracy):+.1f} | "
            f"{c.agreement:.2%} | {len(tfl.data):,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--cifar-train", type=int, default=4096)
    parser.add_argument("--cifar-test", type=int, default=1000)
    args = parser.parse_args()
    print(f"<!-- {platform.node()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} -->")
    print("| model | trained on | test images | float32 | int8-emulated (baseline) | TFLite int8 | Δ points "
          "| same class | TFLite B |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print(_row("resnet/s5/2", load_dataset("digits"), args.epochs), flush=True)
    cifar = load_dataset(SHARED / "cifar10").subset(train=args.cifar_train, test=args.cifar_test)
    print(_row("mobilenetv2/s6/3", cifar, args.epochs), flush=True)
    print(f"<!-- load average at the end {os.getloadavg()[0]:.1f} -->")


if __name__ == "__main__":
    main()
