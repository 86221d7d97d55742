"""Tabular mode: the released 1,617 trained models answer instead of training and timing.

Like a NAS benchmark, this lets strategies be compared in seconds. It plugs into
the same workflow as real training: the oracle is an evaluator, the released
Raspberry Pi 3B+ timings are a latency source, and the pool is the released set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from iotnas.arch import Arch
from iotnas.errors import SearchError
from iotnas.released import ReleasedModel, load_released
from iotnas.search.components import Evaluation
from iotnas.store import Latency

RELEASED_DEVICE_KEY = "released:raspberry-pi-3b+:torch"


class ReleasedSet:
    """The released models, looked up by architecture key."""

    def __init__(self, models: Sequence[ReleasedModel]):
        self.models = list(models)
        self._by_key = {m.arch.key: m for m in self.models}

    @classmethod
    def load(cls, path: str | Path | None) -> "ReleasedSet":
        return cls(load_released(path))

    def get(self, arch: Arch) -> ReleasedModel:
        try:
            return self._by_key[arch.key]
        except KeyError:
            raise SearchError(
                f"{arch.key} is not in the released model set; tabular mode only knows the released models"
            ) from None

    def archs(self) -> list[Arch]:
        return [m.arch for m in self.models]


class TabularOracle:
    """An evaluator that answers the released CIFAR-10 accuracy (trained 200 epochs on GPU)."""

    def __init__(self, released: ReleasedSet):
        self._released = released

    def evaluate(self, arch: Arch, epochs: float, *, workdir: Path, callbacks=()) -> Evaluation:
        return Evaluation(float(self._released.get(arch).accuracy), checkpoint=None)


class ReleasedLatency:
    """Latency from the released Raspberry Pi 3B+ timings (mean of 5 runs after 5 warm-up, PyTorch)."""

    key = RELEASED_DEVICE_KEY
    cheap = True
    identity = None

    def __init__(self, released: ReleasedSet):
        self._released = released

    def latency(self, arch: Arch) -> Latency:
        model = self._released.get(arch)
        if model.latency_ms is None:
            raise SearchError(f"{arch.key} has no released latency")
        return Latency(arch_key=arch.key, device_key=self.key, source="released", median_ms=float(model.latency_ms),
                       detail={"protocol": "10 runs, first 5 dropped, mean", "device": "Raspberry Pi 3B+"})
