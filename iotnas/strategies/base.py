"""The strategy interface: which candidate to train next.

A strategy sees the *available* candidates (drawn, costed, within the memory
budget, not proposed yet, and not known to be too slow) as a :class:`PoolView`,
plus the history of what was proposed so far. It answers with keys from the
view. The same interface serves a finite pool (the released model set) and open
spaces (the workflow draws more ids per law as the pool runs low).

Determinism: the workflow hands every ``ask`` a generator seeded by
``(study seed, number of proposals so far)``, so a resumed search proposes the
same candidates as an uninterrupted one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from iotnas.errors import ConfigError
from iotnas.registry import Registry

if TYPE_CHECKING:  # annotations only: checking a study's settings needs no numpy
    import numpy as np


@dataclass(frozen=True, slots=True)
class Observation:
    """One proposal and what came of it."""

    key: str
    space: str
    features: np.ndarray
    feasible: bool  # False: rejected by a constraint before training
    accuracy: float | None  # lowest-fidelity accuracy; None when not trained


@dataclass(frozen=True, slots=True)
class PoolView:
    """The candidates a strategy may propose now, with their features (one row each)."""

    keys: tuple[str, ...]
    spaces: tuple[str, ...]
    laws: tuple[str, ...]
    ids: tuple[int, ...]
    features: np.ndarray  # shape (len(keys), n_features), see iotnas.strategies.features
    #: Per key, the latency source's order among candidates the strategy ranks equally (lowest first);
    #: empty when the source has none. The hybrid device mode puts candidates its predictor settles
    #: before those the device must measure.
    rank: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)


class Strategy(abc.ABC):
    """Proposes candidates to train. Subclasses declare their options in :attr:`SETTINGS`.

    ``storage_url`` and ``study_name`` locate the study database, for a strategy
    that keeps state of its own there (optuna's trials).
    """

    #: Set by :data:`STRATEGIES` on registration.
    name: ClassVar[str] = ""
    #: Setting -> default; a given value must have the default's type (an integer is taken for a float).
    SETTINGS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, *, seed: int, settings: Mapping[str, Any] | None = None,
                 storage_url: str | None = None, study_name: str = "iotnas"):
        self.seed = seed
        self.settings = self.check_settings(settings or {})
        self.storage_url = storage_url
        self.study_name = study_name

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Every setting, given or default, checked without building the strategy (so, when a study loads).

        Raises:
            ConfigError: naming ``strategy.settings.KEY``: an unknown key or a value of the wrong type.
        """
        unknown = sorted(set(settings) - set(cls.SETTINGS))
        if unknown:
            raise ConfigError(
                f"strategy.settings.{unknown[0]}: unknown setting for strategy {cls.name!r}"
                f" (known: {', '.join(sorted(cls.SETTINGS)) or 'none'})"
            )
        return {key: _typed(key, settings.get(key, default), type(default)) for key, default in cls.SETTINGS.items()}

    @abc.abstractmethod
    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        """Up to ``n`` distinct keys from ``view.keys``."""

    def tell(self, observation: Observation) -> None:  # noqa: B027 - optional hook
        """Called after each proposal is resolved (trained or rejected)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (database connections)."""


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"strategy.settings.{key}: expected {kind.__name__}, got {value!r}")
    return value


#: Every strategy, in listing order (see :mod:`iotnas.strategies`).
STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", error=ConfigError, unknown="strategy.name: {name!r} is not one of {known}", name_attr="name"
)
