"""Uniform random search over the available candidates: the baseline every strategy must beat."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        take = min(n, len(view))
        return [view.keys[i] for i in rng.choice(len(view), size=take, replace=False)]
