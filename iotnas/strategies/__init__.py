"""Search strategies behind one small interface (:class:`Strategy`)."""

from __future__ import annotations

from typing import Any, Mapping

from iotnas.errors import ConfigError
from iotnas.strategies.base import Observation, PoolView, Strategy
from iotnas.strategies.evolution import EvolutionStrategy
from iotnas.strategies.laws import LawsStrategy
from iotnas.strategies.random_search import RandomStrategy
from iotnas.strategies.surrogate import SurrogateStrategy

STRATEGIES = {cls.name: cls for cls in (LawsStrategy, RandomStrategy, EvolutionStrategy, SurrogateStrategy)}
STRATEGY_NAMES = (*STRATEGIES, "optuna")


def make_strategy(
    name: str, *, seed: int, settings: Mapping[str, Any] | None = None,
    storage_url: str | None = None, study_name: str = "iotnas",
) -> Strategy:
    """Build a strategy by name (``laws``, ``random``, ``evolution``, ``surrogate``, ``optuna``)."""
    if name == "optuna":
        from iotnas.strategies.optuna_strategy import OptunaStrategy  # optuna is slow to import

        return OptunaStrategy(seed=seed, settings=settings, storage_url=storage_url, study_name=study_name)
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name: {name!r} is not one of {', '.join(STRATEGY_NAMES)}")
    return STRATEGIES[name](seed=seed, settings=settings)


__all__ = ["Observation", "PoolView", "Strategy", "make_strategy", "STRATEGY_NAMES"]
