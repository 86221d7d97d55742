"""Shared by the C library tests: the build tools (required in CI), models of every family
with BatchNorm statistics from real images, and their references (emulated PyTorch, ONNX Runtime)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from iotnas.arch import Arch
from iotnas.export import deploy
from iotnas.export.c import write_c_library
from iotnas.export.c._emit import deployed_stream
from iotnas.latency.runtimes import export_onnx
from iotnas.spaces import build

#: One small model of each family (at most 32 KiB of weights in 8 bits), found with `iotnas.cost`.
FAMILY_MODELS = {
    "compact": "compact/s5/3", "densenet": "densenet/s3/21", "googlenet": "googlenet/s6/35",
    "mobilenetv2": "mobilenetv2/s6/28",
    "pnasnet": "pnasnet/s3/13", "probenet": "probenet/s2/39", "resnet": "resnet/s5/4", "resnext": "resnext/s3/10",
}


def require(*tools: str) -> None:
    """Skip when a build tool is missing here; fail in CI, which installs them (.ci/run)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install gcc gcc-arm-none-eabi " \
                  "libnewlib-arm-none-eabi qemu-system-arm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def calibrated_model(key: str, dataset, *, seed: int = 0) -> torch.nn.Module:
    """``key`` built with seeded weights and BatchNorm statistics gathered on 256 real training
    images, so activations have the ranges of a trained network; in eval mode."""
    torch.manual_seed(seed)
    model = build(Arch.parse(key), num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for batch in normalised(dataset.train_images[:256], dataset).split(64):
            model(batch)
    return model.eval()


def normalised(pixels: torch.Tensor, dataset) -> torch.Tensor:
    mean, std = dataset.channel_mean.view(1, -1, 1, 1), dataset.channel_std.view(1, -1, 1, 1)
    return (pixels.float() - mean) * (1.0 / std)


def header_meta(key: str, dataset) -> dict:
    return {"model_key": key, "arch": Arch.parse(key).to_json(), "num_classes": dataset.num_classes,
            "in_channels": dataset.in_channels,
            "input": {"height": 32, "width": 32, "mean": [float(v) for v in dataset.channel_mean],
                      "std": [float(v) for v in dataset.channel_std]}}


def generate(model: torch.nn.Module, key: str, fmt: str, dataset, folder: Path) -> tuple[Path, dict]:
    """Write the C library of ``model`` deployed in ``fmt`` to ``folder/c``; returns (c folder, weight header)."""
    folder.mkdir(parents=True, exist_ok=True)
    deployed = deploy(model, fmt)
    write_c_library(folder / "c", deployed, header_meta(key, dataset))
    return folder / "c", deployed_stream(deployed, header_meta(key, dataset))[0]


def ort_logits(model: torch.nn.Module, fmt: str, dataset, pixels: torch.Tensor) -> np.ndarray:
    """ONNX Runtime's logits (one thread, batch 1) for the model deployed in ``fmt`` (BatchNorm
    folded, then rounded: the network the C library runs)."""
    onnx_bytes = export_onnx(deploy(model, fmt).module, input_shape=(1, dataset.in_channels, 32, 32))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    x = normalised(pixels, dataset).numpy()
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def hwc(pixels: torch.Tensor) -> np.ndarray:
    """Dataset images (n, C, H, W) as the C library takes them: (n, H, W, C)."""
    return np.ascontiguousarray(pixels.numpy().transpose(0, 2, 3, 1))


def window_kernels_model() -> torch.nn.Module:
    """Depthwise 5 x 5 with stride 2 and 7 x 7 with stride 1, a grouped 3 x 3 convolution of 3
    channels per group with stride 2, a dense 5 x 5 one: borders wider than one tap, and layers
    fed without a ReLU, so their input zero point is not -128 and the padding's share matters."""
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 12, 3, padding=1),
        torch.nn.Conv2d(12, 12, 5, stride=2, padding=2, groups=12),
        torch.nn.Conv2d(12, 12, 7, padding=3, groups=12), torch.nn.ReLU(),
        torch.nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=4),
        torch.nn.Conv2d(12, 8, 5, padding=2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)).eval()
