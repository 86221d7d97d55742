"""ProbeNet_s space (Scheidegger et al. 2018, arXiv 1803.09588 Fig. 2a): three conv-BN-ReLU-maxpool
blocks with sampled widths and per-conv kernel heights and widths. No released models.
Spec: search-spaces.md 10.2. Law numbering is not monotone: s3 is the large law, s0 the full space."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from iotnas.spaces._checks import as_dict, int_list
from iotnas.spaces._registry import Args, Choice, IntRange, Law, Space, register_space
from iotnas.spaces._rng import draws, rng_for

_FINAL_MAP = 4 * 4  # 32x32 input after three 2x2 max-pools


@dataclasses.dataclass(frozen=True)
class ProbeNetLaw(Law):
    fs: IntRange
    ks: Choice


class ProbeNet(nn.Module):
    def __init__(self, fs: list[int], ks: list[int], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        widths = [in_channels, *fs]
        for i in range(3):
            kh, kw = ks[2 * i], ks[2 * i + 1]
            conv = nn.Conv2d(widths[i], widths[i + 1], (kh, kw), stride=1, padding=((kh - 1) // 2, (kw - 1) // 2), bias=False)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn_c{i}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"pool{i + 1}", nn.MaxPool2d(2, 2))
        self.fc_out = nn.Linear(_FINAL_MAP * fs[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool1(F.relu(self.bn_c0(self.conv0(x))))
        out = self.pool2(F.relu(self.bn_c1(self.conv1(out))))
        out = self.pool3(F.relu(self.bn_c2(self.conv2(out))))
        return self.fc_out(out.flatten(1))


@register_space("probenet", aliases=("random_net_probenet_s", "probenet_s"))
class ProbeNetSpace(Space):
    summary = "ProbeNet_s: three conv-BN-ReLU-maxpool blocks, free kernel shapes (no released models)"
    laws = {
        "s0": ProbeNetLaw("s0", IntRange(1, 128), Choice((1, 3, 5, 7))),
        "s1": ProbeNetLaw("s1", IntRange(4, 32), Choice((1, 3, 5, 7))),
        "s2": ProbeNetLaw("s2", IntRange(2, 8), Choice((1, 3, 5))),
        "s3": ProbeNetLaw("s3", IntRange(16, 128), Choice((1, 3, 5, 7))),
    }

    def _sample(self, law: ProbeNetLaw, id: int) -> Args:
        rng = rng_for(id)
        fs = draws(rng, law.fs.lo, law.fs.hi, 3)
        ks = [int(v) for v in rng.choice(list(law.ks.values), 6)]
        return {"fs": fs, "ks": ks}

    def check_args(self, args: Args) -> None:
        a = as_dict(self.name, args, ("fs", "ks"))
        int_list(self.name, a["fs"], "fs", 3)
        if any(k % 2 == 0 for k in int_list(self.name, a["ks"], "ks", 6)):
            raise self._bad(args, "kernel sizes in 'ks' must be odd so the padding keeps the map size")

    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module:
        return ProbeNet(args["fs"], args["ks"], num_classes=num_classes, in_channels=in_channels)
