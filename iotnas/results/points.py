"""Study points: every trained model of a study in every number format it was evaluated in."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from iotnas.cost import weight_bytes
from iotnas.formats import parse_format
from iotnas.results.chance import is_chance_level
from iotnas.results.classes import study_classes
from iotnas.results.limits import Limits
from iotnas.store import Store


@dataclass(frozen=True, slots=True)
class ModelPoint:
    """One trained model stored in one number format, with every figure a front or a table can use."""

    key: str  # architecture key, "space/law/id"
    space: str
    law: str | None
    arch_id: int | None
    format_name: str
    bits: int
    accuracy: float  # fraction, on the test split, in this format
    weight_bytes: int  # in this format (scales of integer formats included)
    latency_ms: float | None  # on the study's device; None when never timed
    n_values: int
    macs: int
    flops: int
    peak_activation_bytes: int
    epochs: float  # training fidelity behind the accuracy
    finetuned: bool  # accuracy after format-aware fine-tuning
    feasible: bool
    reason: str | None  # why not feasible
    from_precision: bool = False  # measured by the precision stage (not only the training's float32 figure)
    chance_level: bool = False  # no better than guessing: kept for the record, never on a front or a winner
    test_images: int | None = None  # the accuracy is on this many test images (a fixed draw); None: all of them
    full_accuracy: float | None = None  # on the whole test split, when ``accuracy`` is a subset's (a winner's)

    @property
    def reported_accuracy(self) -> float:
        """The figure to show a person: the whole test split's when known, else the one it was ranked by."""
        return self.accuracy if self.full_accuracy is None else self.full_accuracy

    @property
    def ranked(self) -> bool:
        """Whether the point may be on a front or win: feasible and better than guessing."""
        return self.feasible and not self.chance_level
    latency_source: str | None = None  # "measured", "predicted" or "released": how latency_ms was found

    def value(self, objective: str) -> float:
        v = getattr(self, objective)
        return math.nan if v is None else float(v)


@dataclass(frozen=True, slots=True)
class _Figure:
    epochs: float
    weight_bytes: int
    accuracy: float
    bits: int
    finetuned: bool
    from_precision: bool
    test_images: int | None = None
    full_accuracy: float | None = None


def study_points(store: Store, *, limits: Limits | None = None, finetuned: bool = True,
                 epochs: float | None = None) -> list[ModelPoint]:
    """Every trained model of a study in every format it was evaluated in.

    A model's float32 point comes from its training at the highest fidelity it
    reached; each precision result adds a point in its format (the better of the
    plain and fine-tuned results when both exist; a stored float32 precision
    result replaces the training's). Feasibility uses ``limits``, by default
    the study's constraints; ``finetuned=False`` leaves fine-tuned results out; ``epochs``
    keeps only the results of trainings to that fidelity. A point is
    flagged ``chance_level`` by :func:`~iotnas.results.chance.is_chance_level` when the store
    tells the class count (:func:`~iotnas.results.classes.study_classes`).
    """
    if limits is None:
        study = store.study()
        limits = study.constraints if study is not None else Limits()
    candidates = {c.key: c for c in store.candidates()}
    latencies = store.latencies()
    best: dict[tuple[str, str], _Figure] = {}
    for t in store.trainings(status="done"):
        c = candidates.get(t.arch_key)
        if c is None or t.accuracy is None or (epochs is not None and t.epochs != epochs):
            continue
        current = best.get((t.arch_key, "float32"))
        if current is None or current.epochs < t.epochs:
            best[(t.arch_key, "float32")] = _Figure(t.epochs, weight_bytes(c.n_values, 32), float(t.accuracy), 32,
                                                    False, False)
    for r in store.precision_results():
        if r.arch_key not in candidates or (r.finetuned and not finetuned) or (epochs is not None and r.epochs != epochs):
            continue
        slot = (r.arch_key, parse_format(r.format_name).name)
        figure = _Figure(r.epochs, r.weight_bytes, float(r.accuracy), r.bits, r.finetuned, True, r.test_images,
                         r.full_accuracy)
        current = best.get(slot)
        if (current is None or not current.from_precision
                or (figure.epochs, figure.accuracy) > (current.epochs, current.accuracy)):
            best[slot] = figure
    classes = study_classes(store) if best else None
    points = []
    for (key, fmt), f in best.items():
        c = candidates[key]
        lat = latencies.get(key)
        latency_ms = None if lat is None else float(lat.median_ms)
        point = ModelPoint(
            key=key, space=c.space, law=c.law, arch_id=c.arch_id, format_name=fmt, bits=int(f.bits),
            accuracy=f.accuracy, weight_bytes=int(f.weight_bytes), latency_ms=latency_ms, n_values=c.n_values,
            macs=c.macs, flops=c.flops, peak_activation_bytes=c.peak_activation_bytes, epochs=float(f.epochs),
            finetuned=f.finetuned, feasible=True, reason=None, from_precision=f.from_precision,
            chance_level=is_chance_level(f.accuracy, classes), test_images=f.test_images,
            full_accuracy=f.full_accuracy,
            latency_source=None if lat is None else lat.source,
        )
        why = limits.violations(point)
        if why:
            point = replace(point, feasible=False, reason="; ".join(map(str, why)))
        points.append(point)
    points.sort(key=lambda p: (p.key, -p.bits, p.format_name))
    return points

