"""The studies of one store, side by side: what ``iotnas studies STORE`` lists."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from iotnas.results.winners import summarize
from iotnas.store import Store


@dataclass(frozen=True, slots=True)
class StudyOverview:
    """One study of a store: its stage counts and its best feasible model so far."""

    name: str
    counts: dict[str, int]  # candidates by status
    trainings: int  # trainings finished, every fidelity
    best_key: str | None  # the best feasible model (None before one is trained)
    best_format: str | None
    best_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_overviews(url_or_path: str) -> list[StudyOverview]:
    """Every study of the store at ``url_or_path``, oldest first; the store is only read.

    Raises:
        StoreError, SchemaVersionError: the store cannot be opened read-only (see :meth:`Store.open`).
    """
    overviews = []
    for name in Store.study_names(url_or_path):
        with Store.open(url_or_path, study_name=name, read_only=True) as store:
            summary = summarize(store, top=1)
        best = summary.best[0] if summary.best else None
        overviews.append(StudyOverview(
            name=name, counts=summary.counts, trainings=summary.trainings,
            best_key=None if best is None else best.key, best_format=None if best is None else best.format_name,
            best_accuracy=None if best is None else best.accuracy,
        ))
    return overviews
