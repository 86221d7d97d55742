"""Model-based search: a Gaussian-process surrogate of accuracy over architecture features.

Under a memory budget, accuracy depends mostly on the family and on how much of
the budget a model uses, and both are known before training. The strategy
starts with the largest available model of each family (a space-filling first
design), then proposes the candidate with the highest upper confidence bound
``mean + kappa * std`` of a GP fitted to what was trained so far.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy
from iotnas.strategies.features import standardize


@STRATEGIES.register("surrogate")
class SurrogateStrategy(Strategy):
    SETTINGS = {"kappa": 1.0, "initial": 5}  # initial: largest model of up to this many families first

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.kappa = self.settings["kappa"]
        self.initial = self.settings["initial"]

    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        trained = [o for o in history if o.accuracy is not None]
        picks: list[int] = []
        if len(trained) < self.initial:
            picks = self._initial_design(view, trained, n)
        if len(picks) < n:
            picks += self._by_acquisition(view, trained, n - len(picks), exclude=set(picks), rng=rng)
        return [view.keys[i] for i in picks]

    def _initial_design(self, view: PoolView, trained: list[Observation], n: int) -> list[int]:
        """The largest available model of each family not tried yet (by stored values)."""
        tried_spaces = {o.space for o in trained}
        best_by_space: dict[str, int] = {}
        for i, space in enumerate(view.spaces):
            if space in tried_spaces:
                continue
            if space not in best_by_space or view.features[i, 0] > view.features[best_by_space[space], 0]:
                best_by_space[space] = i
        order = sorted(best_by_space.values(), key=lambda i: -view.features[i, 0])
        return order[: min(n, self.initial - len(trained))]

    def _by_acquisition(self, view: PoolView, trained: list[Observation], n: int, *, exclude: set[int], rng) -> list[int]:
        # scikit-learn is slow to import: loaded when a model is first fitted, not when settings are checked
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        if len(trained) < 2:
            free = [i for i in range(len(view)) if i not in exclude]
            return [int(i) for i in rng.choice(free, size=min(n, len(free)), replace=False)]
        x = np.stack([o.features for o in trained])
        y = np.array([o.accuracy for o in trained])
        x_train, x_pool = standardize(x, view.features)
        kernel = ConstantKernel(0.01) * Matern(length_scale=np.ones(x.shape[1]), nu=2.5) + WhiteKernel(1e-4)
        model = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=2,
                                         random_state=int(rng.integers(2**31)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_train, y)
        mean, std = model.predict(x_pool, return_std=True)
        score = mean + self.kappa * std
        score[list(exclude)] = -np.inf
        order = np.argsort(-score, kind="stable")
        return [int(i) for i in order[:n]]
