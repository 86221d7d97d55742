"""PNASNet space (kuangliu PNASNetA, CellA only): cells per stage, stem width and two integer
width multipliers are sampled. Spec: search-spaces.md section 8."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for


@dataclasses.dataclass(frozen=True)
class PNASNetLaw(Law):
    num_cells: IntRange
    num_planes0: IntRange
    multiplier1: IntRange
    multiplier2: IntRange


class SepConv(nn.Module):
    """Despite the name, one grouped 7x7 conv (groups = in) and a BN; no pointwise conv (spec 8.6)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, out_planes, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False, groups=in_planes
        )
        self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


class CellA(nn.Module):
    """relu(sep_conv(x) + max_pool(x)), with a 1x1 conv + BN on the pool path at stride 2."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.sep_conv1 = SepConv(in_planes, out_planes, kernel_size=7, stride=stride)
        if stride == 2:
            self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)
            self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.sep_conv1(x)
        y2 = F.max_pool2d(x, kernel_size=3, stride=self.stride, padding=1)
        if self.stride == 2:
            y2 = self.bn1(self.conv1(y2))
        return F.relu(y1 + y2)


class PNASNet(nn.Module):
    def __init__(self, num_cells: list[int], num_planes: list[int], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        p0, p1, p2 = num_planes
        self.conv1 = nn.Conv2d(in_channels, p0, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(p0)
        self.layer1 = nn.Sequential(*(CellA(p0, p0) for _ in range(num_cells[0])))
        self.layer2 = CellA(p0, p1, stride=2)
        self.layer3 = nn.Sequential(*(CellA(p1, p1) for _ in range(num_cells[1])))
        self.layer4 = CellA(p1, p2, stride=2)
        self.layer5 = nn.Sequential(*(CellA(p2, p2) for _ in range(num_cells[2])))
        self.linear = nn.Linear(p2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(out)))))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.flatten(1))


@register_space("pnasnet", aliases=("random_net_pnasnet",))
class PNASNetSpace(Space):
    summary = "PNASNet-A: three stages of CellA with stride-2 cells between them"
    laws = {
        "s1": PNASNetLaw("s1", IntRange(1, 12), IntRange(16, 128), IntRange(1, 4), IntRange(1, 4)),
        "s2": PNASNetLaw("s2", IntRange(1, 8), IntRange(16, 64), IntRange(1, 3), IntRange(1, 3)),
        "s3": PNASNetLaw("s3", IntRange(1, 3), IntRange(8, 16), IntRange(1, 2), IntRange(1, 2)),
    }

    def _sample(self, law: PNASNetLaw, id: int) -> Args:
        rng = rng_for(id)
        num_cells = draws(rng, law.num_cells.lo, law.num_cells.hi, 3)
        p0 = draw(rng, law.num_planes0.lo, law.num_planes0.hi)
        p1 = p0 * draw(rng, law.multiplier1.lo, law.multiplier1.hi)
        p2 = p1 * draw(rng, law.multiplier2.lo, law.multiplier2.hi)
        return {"cell_types": [0], "num_cells": num_cells, "num_planes": [p0, p1, p2]}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("cell_types", "num_cells", "num_planes"))
        if a["cell_types"] != [0]:
            raise self._bad(args, "'cell_types' must be [0] (CellA); other cell types are not supported")
        int_list(self.name, a["num_cells"], "num_cells", 3, minimum=0)
        p0, p1, p2 = int_list(self.name, a["num_planes"], "num_planes", 3)
        if p1 % p0 or p2 % p1:
            raise self._bad(args, "each stage width must be a multiple of the previous one")

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return PNASNet(args["num_cells"], args["num_planes"], num_classes=num_classes, in_channels=in_channels)
