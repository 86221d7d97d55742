"""Compact space: a CNN family designed for small-memory CPUs and microcontrollers, not derived
from a CIFAR reference network.

A stem convolution (stride 1 or 2) and three stages, each halving the map in its first block,
then global average pooling and a linear classifier; the ``r`` laws let one stage keep its
input's resolution instead (stage strides (2, 2, 1) or (1, 2, 2), drawn per id), which costs
time, not values. Each stage is one of three block kinds:

* ``conv``: a dense 3x3 convolution (VGG-like); the fastest per value where channels are few.
* ``fused``: a fused inverted residual, a dense 3x3 convolution that expands the channels and a
  1x1 projection back (EfficientNetV2's early stages): dense arithmetic, which CPUs run well.
* ``dwsep``: a depthwise-separable inverted residual, 1x1 expansion (left out at expansion 1),
  3x3 depthwise and 1x1 projection (MobileNetV2's block): fewest values per channel, for the
  wide, low-resolution last stages where weights are spent.

Stages are drawn from the law and then ordered by kind (dense early, depthwise late), as in
published compact designs: at high resolution and few channels a dense convolution costs few
values and runs fast, at low resolution and many channels a depthwise one saves most values.
Maps are small after the first stage, so activation memory peaks at the stem. The design's
reasons and the laws' value counts are in ``docs/spaces.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, Choice, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draw, draws, rng_for

CONV, FUSED, DWSEP = 0, 1, 2
STAGES = 3  # in the s laws each halves the map: 32 -> 4 after a stride-1 stem, 16 -> 2 after a stride-2 one
STEM_STRIDES = (1, 2)
HALVING = (2, 2, 2)  # stage strides of the s laws: every stage halves the map
#: Stage strides the r laws draw from: the last stage keeps 8x8 (after a stride-1 stem), or the
#: first keeps 32x32: more time per image for more accuracy at the same values (BENCHMARKS.md).
RESOLUTION_KEEPING = ((2, 2, 1), (1, 2, 2))
_KINDS = (CONV, FUSED, DWSEP)


@dataclasses.dataclass(frozen=True)
class CompactLaw(Law):
    stem_width: IntRange
    stem_stride: Choice
    kinds: Choice  # block kinds a stage may have
    width1: IntRange  # output channels of stage 1, 2 and 3
    width2: IntRange
    width3: IntRange
    blocks: IntRange  # blocks per stage
    expansion: IntRange  # hidden channels / input channels of fused and dwsep blocks
    strides: tuple[tuple[int, int, int], ...] = (HALVING,)  # stage stride schedules; drawn last if several

    def ranges(self) -> dict[str, str]:
        """As every law's, with the stage strides listed only where they are drawn (the r laws)."""
        ranges = super().ranges()
        if self.strides == (HALVING,):
            del ranges["strides"]
        else:
            ranges["strides"] = "{" + ", ".join(str(list(s)) for s in self.strides) + "}"
        return ranges


def _law(name: str, stem: tuple[int, int], *widths: tuple[int, int], blocks: tuple[int, int],
         expansion: tuple[int, int], strides: tuple[tuple[int, int, int], ...] = (HALVING,)) -> CompactLaw:
    """A law drawing stem strides and block kinds from every choice; ranges as ``(lo, hi)``, hi excluded."""
    w1, w2, w3 = (IntRange(*w) for w in widths)
    return CompactLaw(name, IntRange(*stem), Choice(STEM_STRIDES), Choice(_KINDS), w1, w2, w3,
                      IntRange(*blocks), IntRange(*expansion), strides)


def _keeping(law: CompactLaw, name: str) -> CompactLaw:
    """``law``'s ranges with resolution-keeping stage strides: the same value counts, larger maps."""
    return dataclasses.replace(law, name=name, strides=RESOLUTION_KEEPING)


def _conv_bn(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution without bias (BatchNorm follows) and its BatchNorm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class ConvBlock(nn.Module):
    """Dense 3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        del expansion  # a dense block has no hidden width
        self.conv = _conv_bn(c_in, c_out, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class FusedBlock(nn.Module):
    """Fused inverted residual: dense 3x3 expansion, ReLU, linear 1x1 projection; identity skip when shapes match."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = _conv_bn(c_in, hidden, stride=stride)
        self.project = _conv_bn(hidden, c_out, kernel=1)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(F.relu(self.expand(x)))
        return out + x if self.skip else out


class DwSepBlock(nn.Module):
    """Inverted residual: 1x1 expansion (none at expansion 1), 3x3 depthwise, linear 1x1 projection."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = _conv_bn(c_in, hidden, kernel=1) if expansion > 1 else None
        self.depthwise = _conv_bn(hidden, hidden, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, c_out, kernel=1)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.expand(x)) if self.expand is not None else x
        out = self.project(F.relu(self.depthwise(out)))
        return out + x if self.skip else out


_BLOCKS = {CONV: ConvBlock, FUSED: FusedBlock, DWSEP: DwSepBlock}


class CompactNet(nn.Module):
    def __init__(self, stem: list[int], stages: list[list[int]], *, strides: tuple[int, ...] | list[int] = HALVING,
                 num_classes: int, in_channels: int) -> None:
        super().__init__()
        width, stride = stem
        self.stem = _conv_bn(in_channels, width, stride=stride)
        layers, c = [], width
        for (kind, c_out, blocks, expansion), first_stride in zip(stages, strides, strict=True):
            for i in range(blocks):
                layers.append(_BLOCKS[kind](c, c_out, stride=first_stride if i == 0 else 1, expansion=expansion))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.stem(x)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.flatten(1))


_HALVING_LAWS = {  # widths grow ~1.7x from law to law, values ~3x (docs/spaces.md)
    "s1": _law("s1", (24, 40), (24, 40), (40, 72), (64, 112), blocks=(1, 3), expansion=(1, 4)),
    "s2": _law("s2", (16, 24), (12, 24), (24, 44), (40, 64), blocks=(1, 3), expansion=(1, 4)),
    "s3": _law("s3", (8, 16), (8, 14), (16, 28), (24, 40), blocks=(1, 3), expansion=(1, 4)),
    "s4": _law("s4", (6, 10), (4, 10), (8, 16), (14, 24), blocks=(1, 3), expansion=(1, 4)),
    "s5": _law("s5", (4, 8), (3, 6), (5, 10), (8, 14), blocks=(1, 3), expansion=(1, 3)),
    "s6": _law("s6", (3, 6), (2, 5), (4, 7), (6, 10), blocks=(1, 2), expansion=(1, 3)),
}


@register_space("compact")
class CompactSpace(Space):
    summary = "Compact: stem and 3 stages of dense, fused or depthwise-separable blocks, for small devices"
    laws: ClassVar[Mapping[str, Law]] = {
        **_HALVING_LAWS,  # the r laws: s2-s5's ranges with one stage keeping its resolution (same values, more time)
        **{f"r{n}": _keeping(_HALVING_LAWS[f"s{n}"], f"r{n}") for n in (2, 3, 4, 5)},
    }

    def _sample(self, law: CompactLaw, id: int) -> Args:
        rng = rng_for(id)
        stem_width = draw(rng, law.stem_width.lo, law.stem_width.hi)
        stem_stride = int(rng.choice(list(law.stem_stride.values)))
        kinds = sorted(int(v) for v in rng.choice(list(law.kinds.values), STAGES))
        widths = [draw(rng, r.lo, r.hi) for r in (law.width1, law.width2, law.width3)]
        blocks = draws(rng, law.blocks.lo, law.blocks.hi, STAGES)
        expansions = draws(rng, law.expansion.lo, law.expansion.hi, STAGES)
        stages = [[kinds[i], widths[i], blocks[i], expansions[i]] for i in range(STAGES)]
        args = {"stem": [stem_width, stem_stride], "stages": stages}
        if len(law.strides) > 1:  # drawn after everything else: the s laws' draws stay as they were
            strides = law.strides[draw(rng, 0, len(law.strides))]
            if strides != HALVING:
                args["strides"] = list(strides)
        return args

    def check_args(self, args: Args) -> None:
        keys = ("stem", "stages", "strides") if isinstance(args, dict) and "strides" in args else ("stem", "stages")
        a = as_dict(self.name, args, keys)
        stem = int_list(self.name, a["stem"], "stem", 2)
        if stem[1] not in STEM_STRIDES:
            raise self._bad(args, "the stem stride must be 1 or 2")
        if "strides" in a:
            strides = int_list(self.name, a["strides"], "strides", STAGES)
            if not all(s in (1, 2) for s in strides):
                raise self._bad(args, f"'strides' must be {STAGES} stage strides, each 1 or 2")
            if tuple(strides) == HALVING:  # one network, one args form: the halving schedule goes unwritten
                raise self._bad(args, f"'strides' {list(HALVING)} is the default; leave the key out")
        stages = a["stages"]
        if not isinstance(stages, list) or len(stages) != STAGES:
            raise self._bad(args, f"'stages' must be {STAGES} rows [kind, width, blocks, expansion]")
        for row in stages:
            int_list(self.name, row, "stages row", 4, minimum=0)
            if row[0] not in _BLOCKS or min(row[1:]) < 1:
                raise self._bad(args, "a stage row is [kind 0 (conv), 1 (fused) or 2 (dwsep), width >= 1, "
                                      "blocks >= 1, expansion >= 1]")

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return CompactNet(args["stem"], args["stages"], strides=args.get("strides", HALVING),
                          num_classes=num_classes, in_channels=in_channels)
