"""Study points: every trained model of a study in every number format it was evaluated in."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from iotnas.cost import weight_bytes
from iotnas.formats import parse_format
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


def study_points(store: Store, *, limits: Limits | None = None, finetuned: bool = True) -> list[ModelPoint]:
    """Every trained model of a study in every format it was evaluated in.

    A model's float32 point comes from its training at the highest fidelity it
    reached; each precision result adds a point in its format (the better of the
    plain and fine-tuned results when both exist; a stored float32 precision
    result replaces the training's). Feasibility uses ``limits``, by default
    the study's constraints; ``finetuned=False`` leaves fine-tuned results out.
    """
    if limits is None:
        study = store.study()
        limits = study.constraints if study is not None else Limits()
    candidates = {c.key: c for c in store.candidates()}
    latencies = store.latencies()
    best: dict[tuple[str, str], _Figure] = {}
    for t in store.trainings(status="done"):
        c = candidates.get(t.arch_key)
        if c is None or t.accuracy is None:
            continue
        current = best.get((t.arch_key, "float32"))
        if current is None or current.epochs < t.epochs:
            best[(t.arch_key, "float32")] = _Figure(t.epochs, weight_bytes(c.n_values, 32), float(t.accuracy), 32,
                                                    False, False)
    for r in store.precision_results():
        if r.arch_key not in candidates or (r.finetuned and not finetuned):
            continue
        slot = (r.arch_key, parse_format(r.format_name).name)
        figure = _Figure(r.epochs, r.weight_bytes, float(r.accuracy), r.bits, r.finetuned, True)
        current = best.get(slot)
        if (current is None or not current.from_precision
                or (figure.epochs, figure.accuracy) > (current.epochs, current.accuracy)):
            best[slot] = figure
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
            latency_source=None if lat is None else lat.source,
        )
        why = limits.violations(point)
        if why:
            point = replace(point, feasible=False, reason="; ".join(map(str, why)))
        points.append(point)
    points.sort(key=lambda p: (p.key, -p.bits, p.format_name))
    return points

