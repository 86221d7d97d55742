"""GoogLeNet space (kuangliu CIFAR GoogLeNet): the pre-layer width and the six widths of each of
the nine Inception modules are sampled. Spec: search-spaces.md section 7.

The arguments are a list of 9 rows ``[in, l1, l2, l3, l4, l5, l6]`` (the authors' form), not a dict.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from iotnas.spaces._checks import int_list
from iotnas.spaces._registry import Args, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for

_MODULES = ("a3", "b3", "a4", "b4", "c4", "d4", "e4", "a5", "b5")
_DUMMY_WIDE = IntRange(16, 512)  # kept by the authors so seeds match an earlier version of their code
_DUMMY_NARROW = IntRange(16, 256)
_DUMMY_SIZE = 7


@dataclasses.dataclass(frozen=True)
class GoogLeNetLaw(Law):
    io_in: IntRange
    l1: IntRange
    l2: IntRange
    l3: IntRange
    l4: IntRange
    l5: IntRange
    l6: IntRange

    @property
    def dummy(self) -> IntRange:
        """Range of the discarded per-row draw: wide when l1's exclusive bound exceeds 60 (spec 7.3)."""
        return _DUMMY_WIDE if self.l1.hi > 60 else _DUMMY_NARROW


def _law(name: str, io_in: tuple[int, int], *widths: tuple[int, int]) -> GoogLeNetLaw:
    return GoogLeNetLaw(name, IntRange(*io_in), *(IntRange(*w) for w in widths))


def _conv_bn_relu(in_planes: int, out_planes: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(True),
    ]


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-3x3-3x3; 3x3 max-pool-1x1) concatenated."""

    def __init__(self, in_planes: int, l1: int, l2: int, l3: int, l4: int, l5: int, l6: int) -> None:
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(in_planes, l1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(in_planes, l2, 1), *_conv_bn_relu(l2, l3, 3))
        self.b3 = nn.Sequential(*_conv_bn_relu(in_planes, l4, 1), *_conv_bn_relu(l4, l5, 3), *_conv_bn_relu(l5, l5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(in_planes, l6, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, rows: list[list[int]], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.pre_layers = nn.Sequential(*_conv_bn_relu(in_channels, rows[0][0], 3))
        for name, row in zip(_MODULES, rows):
            setattr(self, name, Inception(*row))
            if name == "b3":
                # Registered here so the module order (and state_dict order) matches the authors'.
                self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        last = rows[-1]
        self.linear = nn.Linear(last[1] + last[3] + last[5] + last[6], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pre_layers(x)
        out = self.b3(self.a3(out))
        out = self.maxpool(out)
        out = self.e4(self.d4(self.c4(self.b4(self.a4(out)))))
        out = self.maxpool(out)
        out = self.b5(self.a5(out))
        out = self.avgpool(out)
        return self.linear(out.flatten(1))


@register_space("googlenet", aliases=("random_net_googlenet",))
class GoogLeNetSpace(Space):
    summary = "GoogLeNet: pre-layer and nine Inception modules, two max-pools"
    laws = {
        "s1": _law("s1", (16, 256), (16, 384), (16, 192), (16, 384), (16, 48), (16, 128), (16, 128)),
        "s2": _law("s2", (16, 256), (16, 64), (16, 64), (16, 64), (16, 32), (16, 32), (16, 32)),
        "s3": _law("s3", (16, 256), (16, 32), (8, 16), (16, 32), (4, 8), (4, 8), (4, 8)),
        "s4": _law("s4", (16, 128), *[(4, 8)] * 6),
        "s5": _law("s5", (8, 16), *[(4, 6)] * 6),
        "s6": _law("s6", (8, 16), *[(2, 6)] * 6),
    }

    def _sample(self, law: GoogLeNetLaw, id: int) -> Args:
        rng = rng_for(id)
        prev = draw(rng, law.io_in.lo, law.io_in.hi)
        rows = []
        for _ in _MODULES:
            draws(rng, law.dummy.lo, law.dummy.hi, _DUMMY_SIZE)  # discarded, but it moves the stream
            widths = [draw(rng, r.lo, r.hi) for r in (law.l1, law.l2, law.l3, law.l4, law.l5, law.l6)]
            rows.append([prev, *widths])
            prev = widths[0] + widths[2] + widths[4] + widths[5]
        return rows

    def check_args(self, args: Args) -> None:
        if not isinstance(args, list) or len(args) != len(_MODULES):
            raise self._bad(args, f"expected a list of {len(_MODULES)} rows [in, l1, l2, l3, l4, l5, l6]")
        prev = None
        for row in args:
            int_list(self.name, row, "row", 7)
            if prev is not None and row[0] != prev:
                raise self._bad(args, f"row input width {row[0]} must equal the previous output width {prev}")
            prev = row[1] + row[3] + row[5] + row[6]

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return GoogLeNet(args, num_classes=num_classes, in_channels=in_channels)
