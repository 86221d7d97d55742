"""ResNet space (kuangliu ResNet18/34/50): per stage the block type (basic or bottleneck) and
depth, plus stem and stage widths, are sampled. No released models. Spec: search-spaces.md 10.1."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, Choice, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draws, rng_for

_STAGE_STRIDES = (1, 2, 2, 2)
BASIC, BOTTLENECK = 0, 1


@dataclasses.dataclass(frozen=True)
class ResNetLaw(Law):
    blocks: Choice
    fs: IntRange
    num_blocks: IntRange


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = _shortcut(in_planes, self.expansion * planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


_BLOCK_TYPES = {BASIC: BasicBlock, BOTTLENECK: Bottleneck}


class ResNet(nn.Module):
    def __init__(
        self, blocks: list[int], fs: list[int], num_blocks: list[int], *, num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        c = fs[0]
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        for k, stride in enumerate(_STAGE_STRIDES):
            block = _BLOCK_TYPES[blocks[k]]
            layers = []
            for s in [stride] + [1] * (num_blocks[k] - 1):
                layers.append(block(c, fs[k + 1], s))
                c = fs[k + 1] * block.expansion
            setattr(self, f"layer{k + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


@register_space("resnet", aliases=("random_net_resnet",))
class ResNetSpace(Space):
    summary = "ResNet: four stages of basic or bottleneck blocks (no released models)"
    laws = {
        "s1": ResNetLaw("s1", Choice((BASIC, BOTTLENECK)), IntRange(16, 1024), IntRange(1, 4)),
        "s2": ResNetLaw("s2", Choice((BASIC, BOTTLENECK)), IntRange(16, 512), IntRange(1, 3)),
        "s3": ResNetLaw("s3", Choice((BASIC, BOTTLENECK)), IntRange(16, 128), IntRange(1, 3)),
        "s4": ResNetLaw("s4", Choice((BASIC, BOTTLENECK)), IntRange(4, 32), IntRange(1, 3)),
        "s5": ResNetLaw("s5", Choice((BASIC, BOTTLENECK)), IntRange(2, 8), IntRange(1, 3)),
    }

    def _sample(self, law: ResNetLaw, id: int) -> Args:
        rng = rng_for(id)
        blocks = [int(v) for v in rng.choice(list(law.blocks.values), 4)]
        fs = draws(rng, law.fs.lo, law.fs.hi, 5)
        num_blocks = draws(rng, law.num_blocks.lo, law.num_blocks.hi, 4)
        return {"blocks": blocks, "fs": fs, "num_blocks": num_blocks}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("blocks", "fs", "num_blocks"))
        if not isinstance(a["blocks"], list) or len(a["blocks"]) != 4 or any(
            b not in _BLOCK_TYPES or isinstance(b, bool) for b in a["blocks"]
        ):
            raise self._bad(args, "'blocks' must be 4 block types, 0 (basic) or 1 (bottleneck)")
        int_list(self.name, a["fs"], "fs", 5)
        int_list(self.name, a["num_blocks"], "num_blocks", 4)

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return ResNet(args["blocks"], args["fs"], args["num_blocks"], num_classes=num_classes, in_channels=in_channels)
