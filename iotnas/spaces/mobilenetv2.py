"""MobileNetV2 space (kuangliu CIFAR MobileNetV2): every number of the stage table is sampled,
plus stem and head widths; exactly three stages have stride 2. Spec: search-spaces.md section 6."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for

#: Strides before shuffling; the starting order matters for the legacy shuffle (spec 6.6).
_STRIDES = (2, 2, 2, 1, 1, 1, 1)
_STAGES = len(_STRIDES)


@dataclasses.dataclass(frozen=True)
class MobileNetV2Law(Law):
    expansion: IntRange
    out_planes: IntRange
    num_blocks: IntRange
    io_in: IntRange
    io_out: IntRange


class Block(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual only at stride 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, cfg: list[list[int]], io_planes: list[int], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        io_in, io_out = io_planes
        self.conv1 = nn.Conv2d(in_channels, io_in, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(io_in)
        blocks, c = [], io_in
        for expansion, out_planes, num_blocks, stride in cfg:
            for s in [stride] + [1] * (num_blocks - 1):
                blocks.append(Block(c, out_planes, expansion, s))
                c = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(c, io_out, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(io_out)
        self.linear = nn.Linear(io_out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


@register_space("mobilenetv2", aliases=("random_net_mobilenetv2",))
class MobileNetV2Space(Space):
    summary = "MobileNetV2: 7 stages of inverted residual blocks, 3 of them stride 2"
    laws = {
        "s1": MobileNetV2Law("s1", IntRange(1, 8), IntRange(16, 256), IntRange(1, 4), IntRange(16, 128), IntRange(128, 1280)),
        "s2": MobileNetV2Law("s2", IntRange(1, 6), IntRange(16, 128), IntRange(1, 3), IntRange(16, 64), IntRange(128, 512)),
        "s3": MobileNetV2Law("s3", IntRange(1, 4), IntRange(16, 64), IntRange(1, 2), IntRange(16, 32), IntRange(128, 256)),
        "s4": MobileNetV2Law("s4", IntRange(1, 4), IntRange(4, 32), IntRange(1, 2), IntRange(16, 32), IntRange(64, 128)),
        "s5": MobileNetV2Law("s5", IntRange(1, 4), IntRange(2, 8), IntRange(1, 2), IntRange(16, 32), IntRange(16, 64)),
        "s6": MobileNetV2Law("s6", IntRange(1, 2), IntRange(2, 8), IntRange(1, 2), IntRange(4, 8), IntRange(12, 16)),
    }

    def _sample(self, law: MobileNetV2Law, id: int) -> Args:
        rng = rng_for(id)
        e = draws(rng, law.expansion.lo, law.expansion.hi, _STAGES)
        o = draws(rng, law.out_planes.lo, law.out_planes.hi, _STAGES)
        n = draws(rng, law.num_blocks.lo, law.num_blocks.hi, _STAGES)
        strides = np.array(_STRIDES)
        rng.shuffle(strides)
        io_in = draw(rng, law.io_in.lo, law.io_in.hi)
        io_out = draw(rng, law.io_out.lo, law.io_out.hi)
        cfg = [[e[i], o[i], n[i], int(strides[i])] for i in range(_STAGES)]
        return {"cfg": cfg, "io_planes": [io_in, io_out]}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("cfg", "io_planes"))
        int_list(self.name, a["io_planes"], "io_planes", 2)
        cfg = a["cfg"]
        if not isinstance(cfg, list) or len(cfg) != _STAGES:
            raise self._bad(args, f"'cfg' must be {_STAGES} rows [expansion, out_planes, num_blocks, stride]")
        for row in cfg:
            int_list(self.name, row, "cfg row", 4)
        if sorted(row[3] for row in cfg) != sorted(_STRIDES):
            raise self._bad(args, "exactly three stages must have stride 2 and the others stride 1")

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return MobileNetV2(args["cfg"], args["io_planes"], num_classes=num_classes, in_channels=in_channels)
