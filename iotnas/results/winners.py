"""The winners of a study: its best feasible (model, format) pairs, read from the store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from iotnas.results.limits import Limits
from iotnas.results.points import ModelPoint, study_points
from iotnas.store import Store, TrainingStatus
from iotnas.study import Study


@dataclass(frozen=True, slots=True)
class SearchSummary:
    study: str
    counts: dict[str, int]  # candidates by status
    trainings: int  # trainings finished, every fidelity
    best: list[ModelPoint] = field(default_factory=list)  # winners, best first
    seconds: float = 0.0


def winners(points: Sequence[ModelPoint]) -> list[ModelPoint]:
    """Per model its most accurate feasible format, best models first.

    Once the precision stage has run, only the models it evaluated (those trained to the
    top fidelity) compete; before, every trained model does with its float32 figure.
    Higher fidelities rank first; ties in accuracy go to fewer bytes.
    """
    feasible = [p for p in points if p.feasible]
    if any(p.from_precision for p in feasible):
        feasible = [p for p in feasible if p.from_precision]
    best: dict[str, ModelPoint] = {}
    for p in feasible:
        current = best.get(p.key)
        if current is None or (p.accuracy, -p.weight_bytes) > (current.accuracy, -current.weight_bytes):
            best[p.key] = p
    return sorted(best.values(), key=lambda p: (-p.epochs, -p.accuracy, p.weight_bytes, p.key))


def summarize(store: Store, study: Study | None = None, *, seconds: float = 0.0, top: int = 10) -> SearchSummary:
    """Counts per stage and the best feasible (model, format) pairs (``study``: default, the stored one)."""
    study = study if study is not None else store.study()
    limits = study.constraints if study is not None else Limits()
    counts = Counter(c.status for c in store.candidates())
    name = study.name if study is not None else store.meta().get("study_name", "?")
    return SearchSummary(study=name, counts=dict(counts), trainings=len(store.trainings(status=TrainingStatus.DONE)),
                         best=winners(study_points(store, limits=limits))[:top], seconds=seconds)

