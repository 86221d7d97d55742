"""Regularised evolution (Real et al. 2019) over architecture features, constraint-aware.

A tournament among the most recent ``population`` trained models picks a parent;
its mutation is the available candidate nearest to a random perturbation of the
parent's features. Only available candidates (already within the constraints)
can be chosen, so a mutation never produces an infeasible model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy
from iotnas.strategies.features import N_NUMERIC, standardize


@STRATEGIES.register("evolution")
class EvolutionStrategy(Strategy):
    SETTINGS = {"population": 8, "sample": 3, "mutation_scale": 0.3, "same_space_prob": 0.8}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.population = self.settings["population"]
        self.sample = self.settings["sample"]
        self.mutation_scale = self.settings["mutation_scale"]
        self.same_space_prob = self.settings["same_space_prob"]

    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        trained = [o for o in history if o.accuracy is not None]
        picks: list[str] = []
        taken: set[int] = set()
        for _ in range(min(n, len(view))):
            if len(trained) < self.population:
                free = [i for i in range(len(view)) if i not in taken]
                index = int(rng.choice(free))
            else:
                index = self._mutate(view, trained[-self.population:], taken, rng)
            taken.add(index)
            picks.append(view.keys[index])
        return picks

    def _mutate(self, view: PoolView, population: list[Observation], taken: set[int], rng) -> int:
        contenders = [population[i] for i in rng.choice(len(population), size=min(self.sample, len(population)),
                                                         replace=False)]
        parent = max(contenders, key=lambda o: o.accuracy)
        hist = np.stack([o.features for o in population])
        _, pool, target = standardize(hist, view.features, parent.features[None, :])
        child = target[0].copy()
        child[:N_NUMERIC] += rng.normal(0.0, self.mutation_scale, size=N_NUMERIC)
        distance = np.linalg.norm(pool[:, :N_NUMERIC] - child[:N_NUMERIC], axis=1)
        keep_space = rng.random() < self.same_space_prob
        same = np.array([s == parent.space for s in view.spaces])
        if keep_space and same.any():
            distance = np.where(same, distance, np.inf)
        for i in taken:
            distance[i] = np.inf
        return int(np.argmin(distance))
