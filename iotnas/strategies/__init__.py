"""Search strategies behind one small interface (:class:`Strategy`), registered in :data:`STRATEGIES`.

Every strategy is listed here and its module imported on first use, so a study
checks its strategy's name and settings without loading numpy, scikit-learn or optuna.
"""

from __future__ import annotations

from typing import Any, Mapping

from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy

STRATEGIES.register_lazy("laws", "iotnas.strategies.laws")
STRATEGIES.register_lazy("random", "iotnas.strategies.random_search")
STRATEGIES.register_lazy("evolution", "iotnas.strategies.evolution")
STRATEGIES.register_lazy("surrogate", "iotnas.strategies.surrogate")
STRATEGIES.register_lazy("optuna", "iotnas.strategies.optuna_strategy")

STRATEGY_NAMES = STRATEGIES.names()


def check_strategy_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``[strategy.settings]`` of strategy ``name``, checked without building the strategy; defaults filled in.

    Raises:
        ConfigError: ``strategy.name`` is unknown, or ``strategy.settings.KEY`` is unknown or malformed.
    """
    return STRATEGIES.get(name).check_settings(settings)


def make_strategy(
    name: str, *, seed: int, settings: Mapping[str, Any] | None = None,
    storage_url: str | None = None, study_name: str = "iotnas",
) -> Strategy:
    """Build a strategy by name (one of :data:`STRATEGY_NAMES`).

    Raises:
        ConfigError: the name or a setting is unknown or malformed.
    """
    return STRATEGIES.get(name)(seed=seed, settings=settings, storage_url=storage_url, study_name=study_name)


__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Observation",
    "PoolView",
    "Strategy",
    "check_strategy_settings",
    "make_strategy",
]
