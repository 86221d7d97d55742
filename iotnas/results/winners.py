"""The winners of a study: its best feasible (model, format) pairs, read from the store.

Two rules, chosen by the study's ``[precision] winner``:

* ``fewest_bytes`` (the default): the fewest weight bytes among the pairs within
  ``[precision] tolerance`` of the most accurate one. A memory limit is why a study
  exists, and two formats a few test images apart are equally good: the difference is
  below the test set's noise (on 10,000 images one standard error is about 0.4 points).
* ``most_accurate``: the most accurate pair, fewer bytes breaking ties.

Chance-level points (:func:`~iotnas.results.chance.is_chance_level`) never win.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from iotnas.results.chance import is_chance_level
from iotnas.results.classes import study_classes
from iotnas.results.limits import Limits
from iotnas.results.points import ModelPoint, study_points
from iotnas.store import Store, Training, TrainingStatus
from iotnas.study import PrecisionSpec, Study

# Accuracies are fractions of a test set; a threshold compares them with this slack, so that 0.85 - 0.01
# computed in floating point still admits 0.84.
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class WinnerRule:
    """How winners are picked: ``fewest_bytes`` within ``tolerance`` of the most accurate, or ``most_accurate``."""

    pick: str = PrecisionSpec().winner
    tolerance: float = PrecisionSpec().tolerance

    @classmethod
    def of(cls, study: Study | None) -> WinnerRule:
        """The study's rule (the default one for a store that recorded no study)."""
        return cls() if study is None else cls(study.precision.winner, study.precision.tolerance)


@dataclass(frozen=True, slots=True)
class SearchSummary:
    study: str
    counts: dict[str, int]  # candidates by status
    trainings: int  # trainings finished, every fidelity
    best: list[ModelPoint] = field(default_factory=list)  # winners, best first
    seconds: float = 0.0
    chance_level: list[Training] = field(default_factory=list)  # finished trainings no better than guessing
    rule: WinnerRule = WinnerRule()


def winners(points: Sequence[ModelPoint], *, rule: WinnerRule = WinnerRule()) -> list[ModelPoint]:
    """Per model its format by ``rule``, best models first; infeasible and chance-level points never win.

    Once the precision stage has run, only the models it evaluated (those trained to the
    top fidelity) compete; before, every trained model does with its float32 figure.
    Higher fidelities rank first. Under ``fewest_bytes`` the models with a format within
    the tolerance of the most accurate point of their fidelity come first, fewest bytes
    first (the first is the study's winner); the others follow, most accurate first,
    each in its fewest-bytes format within the tolerance of its own best.
    """
    ranked = [p for p in points if p.ranked]
    if any(p.from_precision for p in ranked):
        ranked = [p for p in ranked if p.from_precision]
    out: list[ModelPoint] = []
    for epochs in sorted({p.epochs for p in ranked}, reverse=True):
        out += _pick([p for p in ranked if p.epochs == epochs], rule)
    return out


def _pick(points: Sequence[ModelPoint], rule: WinnerRule) -> list[ModelPoint]:
    """The winners among ``points`` of one fidelity."""
    by_model: dict[str, list[ModelPoint]] = {}
    for p in points:
        by_model.setdefault(p.key, []).append(p)
    if rule.pick == "most_accurate":
        best = [max(group, key=lambda p: (p.accuracy, -p.weight_bytes)) for group in by_model.values()]
        return sorted(best, key=lambda p: (-p.accuracy, p.weight_bytes, p.key))
    threshold = max(p.accuracy for p in points) - rule.tolerance
    contenders, others = [], []
    for group in by_model.values():
        near = [p for p in group if p.accuracy + _SLACK >= threshold]
        if near:
            contenders.append(_fewest_bytes(near))
        else:
            own = max(p.accuracy for p in group) - rule.tolerance
            others.append(_fewest_bytes([p for p in group if p.accuracy + _SLACK >= own]))
    return (sorted(contenders, key=lambda p: (p.weight_bytes, -p.accuracy, p.key))
            + sorted(others, key=lambda p: (-p.accuracy, p.weight_bytes, p.key)))


def _fewest_bytes(points: Sequence[ModelPoint]) -> ModelPoint:
    return min(points, key=lambda p: (p.weight_bytes, -p.accuracy, p.format_name))


def chance_level_trainings(store: Store, *, num_classes: int | None) -> list[Training]:
    """The finished trainings whose accuracy is no better than guessing among ``num_classes``."""
    return [t for t in store.trainings(status=TrainingStatus.DONE) if is_chance_level(t.accuracy, num_classes)]


def summarize(store: Store, study: Study | None = None, *, seconds: float = 0.0, top: int = 10) -> SearchSummary:
    """Counts per stage and the best feasible (model, format) pairs (``study``: default, the stored one)."""
    study = study if study is not None else store.study()
    limits = study.constraints if study is not None else Limits()
    rule = WinnerRule.of(study)
    counts = Counter(c.status for c in store.candidates())
    name = study.name if study is not None else store.meta().get("study_name", "?")
    return SearchSummary(study=name, counts=dict(counts), trainings=len(store.trainings(status=TrainingStatus.DONE)),
                         best=winners(study_points(store, limits=limits), rule=rule)[:top], seconds=seconds,
                         chance_level=chance_level_trainings(store, num_classes=study_classes(store, study)),
                         rule=rule)
