"""Optuna's samplers (TPE, or NSGA-II on accuracy vs size) driving the search.

Optuna suggests a family and log sizes; the proposal is the available candidate
nearest to that suggestion (within the family when it has one left). Optuna's
storage lives in the same database as the study store, so its trials survive
interruption with the rest of the study. The sampler is re-seeded from
``(seed, number of proposals)`` at every ask, which keeps resumed runs identical.

optuna itself is imported when the strategy is built: it is slow to import, and
checking a study's settings needs only :attr:`OptunaStrategy.SETTINGS`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from iotnas.errors import ConfigError
from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy
from iotnas.strategies.features import space_names

if TYPE_CHECKING:
    import optuna

# Fixed ranges (log2), so suggestions mean the same thing however the pool shrinks.
LOG_VALUES_RANGE = (0.0, 32.0)
LOG_FLOPS_RANGE = (0.0, 40.0)
KEY_ATTR = "iotnas_key"
SAMPLERS = ("tpe", "nsga2")


@STRATEGIES.register("optuna")
class OptunaStrategy(Strategy):
    SETTINGS = {"sampler": "tpe", "startup_trials": 5}

    def __init__(self, **kwargs: Any):
        import optuna

        super().__init__(**kwargs)
        self.sampler_name = self.settings["sampler"]
        self.startup_trials = self.settings["startup_trials"]
        optuna.logging.set_verbosity(logging.WARNING)
        directions = ["maximize"] if self.sampler_name == "tpe" else ["maximize", "minimize"]
        for attempt in range(3):  # workers starting together may race to create it
            try:
                self._study = optuna.create_study(
                    storage=self.storage_url, study_name=f"iotnas:{self.study_name}", directions=directions,
                    load_if_exists=True, sampler=self._sampler(self.seed),
                )
                break
            except optuna.exceptions.DuplicatedStudyError:
                if attempt == 2:
                    raise

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        checked = super().check_settings(settings)
        if checked["sampler"] not in SAMPLERS:
            raise ConfigError(f"strategy.settings.sampler: {checked['sampler']!r} is not one of {', '.join(SAMPLERS)}")
        return checked

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        if self.sampler_name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, self.startup_trials))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials)

    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        self._study.sampler = self._sampler(int(rng.integers(2**31)))
        picks: list[int] = []
        for _ in range(min(n, len(view))):
            trial = self._study.ask()
            space = trial.suggest_categorical("space", list(space_names()))
            log_values = trial.suggest_float("log2_values", *LOG_VALUES_RANGE)
            log_flops = trial.suggest_float("log2_flops", *LOG_FLOPS_RANGE)
            index = self._nearest(view, space, log_values, log_flops, exclude=set(picks))
            trial.set_user_attr(KEY_ATTR, view.keys[index])
            picks.append(index)
        return [view.keys[i] for i in picks]

    @staticmethod
    def _nearest(view: PoolView, space: str, log_values: float, log_flops: float, *, exclude: set[int]) -> int:
        distance = np.hypot(view.features[:, 0] - log_values, (view.features[:, 2] - log_flops) / 2)
        same = np.array([s == space for s in view.spaces])
        if same.any():
            distance = np.where(same, distance, np.inf)
        distance[list(exclude)] = np.inf
        if not np.isfinite(distance).any():  # the family ran out: nearest in any family
            distance = np.hypot(view.features[:, 0] - log_values, (view.features[:, 2] - log_flops) / 2)
            distance[list(exclude)] = np.inf
        return int(np.argmin(distance))

    def tell(self, observation: Observation) -> None:
        import optuna

        for trial in self._study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get(KEY_ATTR) != observation.key:
                continue
            if observation.accuracy is None:
                self._study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            elif self.sampler_name == "nsga2":
                self._study.tell(trial.number, [observation.accuracy, float(observation.features[0])])
            else:
                self._study.tell(trial.number, observation.accuracy)
            return
