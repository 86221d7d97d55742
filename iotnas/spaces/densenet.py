"""DenseNet-BC space (kuangliu ``DenseNet(Bottleneck, ...)``): four dense blocks, free depths,
growth rate and transition reduction. Spec: search-spaces.md section 5."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.errors import InvalidSampleError
from iotnas.spaces._checks import as_dict, int_list, int_value
from iotnas.spaces._registry import Args, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for


@dataclasses.dataclass(frozen=True)
class DenseNetLaw(Law):
    nblocks: IntRange
    growth_rate: IntRange
    reduction_percent: IntRange


class Bottleneck(nn.Module):
    """Pre-activation bottleneck layer; its ``growth`` new channels come first in the output."""

    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """Compressing transition: BN, relu, 1x1 conv, 2x2 average pool."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


def transition_widths(nblocks: list[int], growth_rate: int, reduction: float) -> list[int]:
    """Output widths of the three transitions: ``floor(c * reduction)`` in double precision (spec 5.6)."""
    c = 2 * growth_rate
    widths = []
    for n in nblocks[:3]:
        c = int(math.floor((c + n * growth_rate) * reduction))
        widths.append(c)
    return widths


class DenseNet(nn.Module):
    def __init__(
        self, nblocks: list[int], growth_rate: int, reduction: float, *, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        g = growth_rate
        c = 2 * g
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, padding=1, bias=False)
        widths = transition_widths(nblocks, g, reduction)
        for k in range(4):
            setattr(self, f"dense{k + 1}", nn.Sequential(*(Bottleneck(c + j * g, g) for j in range(nblocks[k]))))
            c += nblocks[k] * g
            if k < 3:
                setattr(self, f"trans{k + 1}", Transition(c, widths[k]))
                c = widths[k]
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = self.dense4(out)
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.flatten(1))


@register_space("densenet", aliases=("random_net_densenet",))
class DenseNetSpace(Space):
    summary = "DenseNet-BC: four dense blocks of bottleneck layers, compressing transitions"
    laws = {
        "s1": DenseNetLaw("s1", IntRange(1, 32), IntRange(1, 32), IntRange(20, 80)),
        "s2": DenseNetLaw("s2", IntRange(1, 16), IntRange(1, 16), IntRange(20, 80)),
        "s3": DenseNetLaw("s3", IntRange(1, 8), IntRange(1, 8), IntRange(50, 80)),
    }

    def _sample(self, law: DenseNetLaw, id: int) -> Args:
        rng = rng_for(id)
        nblocks = draws(rng, law.nblocks.lo, law.nblocks.hi, 4)
        growth_rate = draw(rng, law.growth_rate.lo, law.growth_rate.hi)
        percent = draw(rng, law.reduction_percent.lo, law.reduction_percent.hi)
        return {"nblocks": nblocks, "growth_rate": growth_rate, "reduction": percent / 100.0}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("nblocks", "growth_rate", "reduction"))
        nblocks = int_list(self.name, a["nblocks"], "nblocks", 4)
        g = int_value(self.name, a["growth_rate"], "growth_rate")
        r = a["reduction"]
        if not isinstance(r, float) or not 0.0 < r <= 1.0:
            raise self._bad(args, "'reduction' must be a float in (0, 1]")
        widths = transition_widths(nblocks, g, r)
        if min(widths) == 0:
            raise InvalidSampleError(
                f"densenet arguments {args!r} give a transition with 0 output channels "
                f"(widths {widths}); the network cannot run. This sample is invalid: pick another id"
            )

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return DenseNet(
            args["nblocks"], args["growth_rate"], args["reduction"], num_classes=num_classes, in_channels=in_channels
        )
