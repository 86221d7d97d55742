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
from typing import Any, Mapping, Sequence

import numpy as np

from iotnas.errors import ConfigError


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

    def __len__(self) -> int:
        return len(self.keys)


class Strategy(abc.ABC):
    """Proposes candidates to train. Subclasses keep options keyword-only and validate them."""

    name: str = ""

    def __init__(self, *, seed: int, settings: Mapping[str, Any] | None = None):
        self.seed = seed
        self.settings = dict(settings or {})

    @abc.abstractmethod
    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        """Up to ``n`` distinct keys from ``view.keys``."""

    def tell(self, observation: Observation) -> None:  # noqa: B027 - optional hook
        """Called after each proposal is resolved (trained or rejected)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (database connections)."""

    # helpers ---------------------------------------------------------------

    def _setting(self, key: str, default: Any, kind: type) -> Any:
        value = self.settings.get(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"strategy.settings.{key}: expected {kind.__name__}, got {value!r}")
        return value

    def _check_settings(self, known: set[str]) -> None:
        unknown = sorted(set(self.settings) - known)
        if unknown:
            raise ConfigError(
                f"strategy.settings.{unknown[0]}: unknown setting for strategy {self.name!r}"
                f" (known: {', '.join(sorted(known)) or 'none'})"
            )
