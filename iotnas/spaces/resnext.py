"""ResNeXt space (kuangliu ResNeXt29): per-stage depth, bottleneck width and cardinality are
sampled, the cardinality bounded by a product limit. Spec: search-spaces.md section 9."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for

_STEM_WIDTH = 64
_STAGE_STRIDES = (1, 2, 2)


@dataclasses.dataclass(frozen=True)
class ResNeXtLaw(Law):
    num_blocks: IntRange
    bottleneck_width: IntRange
    prod_limit: IntRange  # width one: always its lower bound, but drawn (spec 15.2)

    def ranges(self) -> dict[str, str]:
        return {**super().ranges(), "cardinality": "[1, max(prod_limit // bottleneck_width, 2))"}


class Block(nn.Module):
    """Grouped-conv bottleneck with expansion 2."""

    expansion = 2

    def __init__(self, in_planes: int, cardinality: int, bottleneck_width: int, stride: int = 1) -> None:
        super().__init__()
        gw = cardinality * bottleneck_width
        out = self.expansion * gw
        self.conv1 = nn.Conv2d(in_planes, gw, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(gw)
        self.conv2 = nn.Conv2d(gw, gw, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(gw)
        self.conv3 = nn.Conv2d(gw, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(
        self,
        num_blocks: list[int],
        cardinalities: list[int],
        bottleneck_widths: list[int],
        *,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_WIDTH)
        c = _STEM_WIDTH
        for k, stride in enumerate(_STAGE_STRIDES):
            blocks = []
            for s in [stride] + [1] * (num_blocks[k] - 1):
                blocks.append(Block(c, cardinalities[k], bottleneck_widths[k], s))
                c = Block.expansion * cardinalities[k] * bottleneck_widths[k]
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.flatten(1))


@register_space("resnext", aliases=("random_net_resnext",))
class ResNeXtSpace(Space):
    summary = "ResNeXt-29: three stages of grouped bottleneck blocks"
    laws = {
        "s1": ResNeXtLaw("s1", IntRange(1, 3), IntRange(4, 64), IntRange(512, 513)),
        "s2": ResNeXtLaw("s2", IntRange(1, 3), IntRange(4, 32), IntRange(128, 129)),
        "s3": ResNeXtLaw("s3", IntRange(1, 2), IntRange(4, 8), IntRange(32, 33)),
    }

    def _sample(self, law: ResNeXtLaw, id: int) -> Args:
        rng = rng_for(id)
        num_blocks = draws(rng, law.num_blocks.lo, law.num_blocks.hi, 3)
        widths = draws(rng, law.bottleneck_width.lo, law.bottleneck_width.hi, 3)
        prod_limit = draw(rng, law.prod_limit.lo, law.prod_limit.hi)
        cards = [draw(rng, 1, max(int(prod_limit / bw), 2)) for bw in widths]
        return {"num_blocks": num_blocks, "cardinalities": cards, "bottleneck_widths": widths}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("num_blocks", "cardinalities", "bottleneck_widths"))
        for key in a:
            int_list(self.name, a[key], key, 3)

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return ResNeXt(
            args["num_blocks"],
            args["cardinalities"],
            args["bottleneck_widths"],
            num_classes=num_classes,
            in_channels=in_channels,
        )
