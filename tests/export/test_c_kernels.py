"""The float convolution and max-pooling kernels layer by layer: every kernel size, stride and
grouping the spaces use (and odd widths that end rows in partial vectors), against PyTorch on real
CIFAR-10 images; and the same logits, bit for bit, whether the kernels run on vectors of 1, 4 or 8
floats, or on 8 in the copy compiled for AVX2 that plain -O2 runs where the processor has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from iotnas.export import deploy
from iotnas.export.c import C_TOLERANCE, build_host, run_host, write_c_library

from .c_support import hwc, normalised, require

N_IMAGES = 8
#: Builds of the float kernels, by the flags that select them on x86-64: the portable single-float
#: form (as on a Cortex-M), SSE2's 4 floats alone, AVX's 8 floats (built where the processor has AVX
#: but not AVX2), and plain -O2, which runs the same 8-float code compiled for AVX2 where the
#: processor has it.
LANE_FLAGS = {"1 float": ("-U__SSE2__",), "4 floats": ("-DIOTNAS_NO_AVX2",), "8 floats": ("-mavx",),
              "-O2 (AVX2 at run time)": ()}

#: (input channels, output channels, kernel (h, w), stride, padding (h, w), groups, input size, ReLU after)
LAYERS = {
    "depthwise 3x3 s1": (16, 16, (3, 3), 1, (1, 1), 16, 16, True),
    "depthwise 3x3 s2": (8, 8, (3, 3), 2, (1, 1), 8, 32, False),
    "depthwise 5x5 s1": (8, 8, (5, 5), 1, (2, 2), 8, 16, False),
    "depthwise 5x5 s2": (8, 8, (5, 5), 2, (2, 2), 8, 32, True),
    "depthwise 7x7 s1": (8, 8, (7, 7), 1, (3, 3), 8, 32, False),
    "depthwise 7x7 s2": (8, 8, (7, 7), 2, (3, 3), 8, 16, False),
    "depthwise 7x7 s2, 32 wide": (8, 8, (7, 7), 2, (3, 3), 8, 32, True),
    "depthwise 5x5 s1, 32 wide": (8, 8, (5, 5), 1, (2, 2), 8, 32, False),
    "depthwise x2 3x3 s1": (8, 16, (3, 3), 1, (1, 1), 8, 8, False),
    "grouped 3x3 s1": (8, 8, (3, 3), 1, (1, 1), 2, 16, True),
    "grouped 3x3 s2": (10, 10, (3, 3), 2, (1, 1), 2, 32, False),
    "dense 3x3 s1": (3, 8, (3, 3), 1, (1, 1), 1, 32, True),
    "dense 5x5 s2": (6, 4, (5, 5), 2, (2, 2), 1, 16, False),
    "dense 3x3 s2": (4, 6, (3, 3), 2, (1, 1), 1, 16, True),
    "dense 7x7 s1": (4, 4, (7, 7), 1, (3, 3), 1, 8, False),
    "dense 3x3 no padding": (4, 6, (3, 3), 1, (0, 0), 1, 16, False),
    "dense 3x1 s1": (4, 4, (3, 1), 1, (1, 0), 1, 16, False),
    "pointwise s1": (12, 6, (1, 1), 1, (0, 0), 1, 32, True),
    "pointwise grouped": (12, 6, (1, 1), 1, (0, 0), 3, 16, False),
    "pointwise s2": (10, 20, (1, 1), 2, (0, 0), 1, 32, False),
    # odd widths: rows end in partial vectors, planes not a whole number of vectors
    "depthwise 3x3 s1, 15 wide": (8, 8, (3, 3), 1, (1, 1), 8, 15, True),
    "dense 3x3 s2, 15 wide": (4, 6, (3, 3), 2, (1, 1), 1, 15, False),
    "pointwise s1, 15 wide": (6, 5, (1, 1), 1, (0, 0), 1, 15, False),
    "depthwise 5x5 s1, 3 wide": (4, 4, (5, 5), 1, (2, 2), 4, 3, False),
    # rows of 4 outputs: two output planes a block, an odd last one summed twice
    "dense 3x3 s1, 4 wide": (10, 20, (3, 3), 1, (1, 1), 1, 4, True),
    "dense 3x3 s2, 4 wide": (8, 7, (3, 3), 2, (1, 1), 1, 8, False),
    "dense 5x5 s1, 4 wide": (3, 5, (5, 5), 1, (2, 2), 1, 4, True),
    "depthwise 3x3 s1, 4 wide": (8, 8, (3, 3), 1, (1, 1), 8, 4, False),
}
#: (channels, kernel, stride, padding, input size)
POOLS = {
    "max 3x3 s1": (4, 3, 1, 1, 32),
    "max 3x3 s2": (4, 3, 2, 1, 16),
    "max 2x2 s2": (4, 2, 2, 0, 32),
    "max 3x3 s2, 15 wide": (4, 3, 2, 1, 15),
    "max 3x3 s1, 15 wide, no padding": (4, 3, 1, 0, 15),
    "max 2x2 s2, 15 wide (last column unread)": (4, 2, 2, 0, 15),
}


def _stem(cin: int, size: int) -> nn.Conv2d:
    """A 3 -> cin convolution without padding that brings the 32 x 32 image to size x size."""
    if size > 16 or size == 15:
        return nn.Conv2d(3, cin, 32 - size + 1)
    return nn.Conv2d(3, cin, 32 - 2 * (size - 1), stride=2)


def _layer_model(cin: int, cout: int, kernel: tuple[int, int], stride: int, padding: tuple[int, int], groups: int,
                 size: int, relu: bool) -> nn.Module:
    """The layer after the stem; its output plane is the model's output (every value compared)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=not relu)
    return nn.Sequential(_stem(cin, size), layer, *([nn.ReLU()] if relu else []), nn.Flatten()).eval()


def _pool_model(c: int, k: int, stride: int, padding: int, size: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_stem(c, size), nn.MaxPool2d(k, stride=stride, padding=padding), nn.Flatten()).eval()


class _Elementwise(nn.Module):
    """A scale and shift with its ReLU (BatchNorm after a ReLU, nothing to fold into), a residual
    addition with its ReLU, and a ReLU on its own (after a concatenation)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = _stem(4, size)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-1.0, 1.0)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.weight.data.uniform_(-2.0, 2.0)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn(torch.relu(self.stem(x))))
        b = torch.relu(a + self.conv(a))
        return torch.relu(torch.cat([a, b], 1)).flatten(1)


def _meta(model: nn.Module, dataset) -> dict:
    with torch.no_grad():
        n_out = model(torch.zeros(1, 3, 32, 32)).shape[1]
    return {"model_key": "layer", "num_classes": n_out, "in_channels": 3,
            "input": {"height": 32, "width": 32, "mean": [float(v) for v in dataset.channel_mean],
                      "std": [float(v) for v in dataset.channel_std]}}


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    return set(cpuinfo.read_text(encoding="utf-8").split()) if cpuinfo.exists() else set()


def _builds() -> list[str]:
    """The builds this processor runs: "8 floats" where "-O2" would not run 8 floats already."""
    flags = _cpu_flags()
    return [name for name in LANE_FLAGS if name != "8 floats" or ("avx" in flags and "avx2" not in flags)]


def _check_every_width(model: nn.Module, dataset, tmp_path: Path) -> None:
    deployed = deploy(model, "float32")
    meta = _meta(model, dataset)
    write_c_library(tmp_path / "c", deployed, meta)
    pixels = dataset.test_images[:N_IMAGES]
    with torch.no_grad():
        want = deployed.module(normalised(pixels, dataset)).numpy()
    builds = _builds()
    got = {name: run_host(build_host(tmp_path / "c", tmp_path / f"model{i}", extra=LANE_FLAGS[name]), hwc(pixels),
                          num_classes=meta["num_classes"]) for i, name in enumerate(builds)}
    assert np.abs(got["1 float"] - want).max() <= C_TOLERANCE * max(1.0, float(np.abs(want).max()))
    for name in builds:  # each output: the same operations in the same order at any width
        assert np.array_equal(got[name], got["1 float"]), f"{name} differs from 1 float"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_convolution_matches_pytorch_at_every_vector_width(name, cifar_small, tmp_path):
    require("gcc")
    _check_every_width(_layer_model(*LAYERS[name]), cifar_small, tmp_path)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_max_pooling_matches_pytorch_at_every_vector_width(name, cifar_small, tmp_path):
    require("gcc")
    _check_every_width(_pool_model(*POOLS[name]), cifar_small, tmp_path)


@pytest.mark.parametrize("size", [16, 15])
def test_elementwise_operators_match_pytorch_at_every_vector_width(size, cifar_small, tmp_path):
    require("gcc")
    _check_every_width(_Elementwise(size).eval(), cifar_small, tmp_path)
