"""What a study found: the best feasible models, or (model, format) pairs, read from its store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from iotnas.cost import weight_bytes
from iotnas.search.pool import smallest_bits
from iotnas.store import Store
from iotnas.study import Study


@dataclass(frozen=True, slots=True)
class ModelResult:
    """A trained candidate at the highest fidelity it reached."""

    key: str
    space: str
    n_values: int
    weight_bytes: int  # in ``format`` (scales of integer formats included)
    latency_ms: float | None
    accuracy: float
    epochs: float
    format: str = "float32"  # the number format the weights are stored in
    finetuned: bool = False  # accuracy after format-aware fine-tuning


@dataclass(frozen=True, slots=True)
class SearchSummary:
    study: str
    counts: dict[str, int]
    trainings: int
    best: list[ModelResult] = field(default_factory=list)
    seconds: float = 0.0


def summarize(store: Store, study: Study | None = None, *, seconds: float = 0.0, top: int = 10) -> SearchSummary:
    """Counts per stage and the best feasible models, each at the highest fidelity it reached."""
    candidates = {c.key: c for c in store.candidates()}
    counts: dict[str, int] = {}
    for c in candidates.values():
        counts[c.status] = counts.get(c.status, 0) + 1
    latencies = store.latencies()
    bits = smallest_bits(study) if study is not None else int(store.meta().get("weight_bits", "32"))
    best_by_key: dict[str, ModelResult] = {}
    done = store.trainings(status="done")
    for t in done:
        c = candidates[t.arch_key]
        current = best_by_key.get(t.arch_key)
        if current is not None and current.epochs >= t.epochs:
            continue
        lat = latencies.get(t.arch_key)
        best_by_key[t.arch_key] = ModelResult(
            key=t.arch_key, space=c.space, n_values=c.n_values, weight_bytes=weight_bytes(c.n_values, bits),
            latency_ms=None if lat is None else lat.median_ms, accuracy=float(t.accuracy), epochs=t.epochs,
            format=_format_of_bits(store, study, bits),
        )
    best = sorted(best_by_key.values(), key=lambda r: (-r.epochs, -r.accuracy, r.key))
    precision = store.precision_results()
    if precision:  # rank (model, format) pairs that fit the weight budget instead
        from iotnas.search.precision import best_pairs

        limit = _weight_limit(store, study)
        best = [
            ModelResult(
                key=r.arch_key, space=candidates[r.arch_key].space, n_values=candidates[r.arch_key].n_values,
                weight_bytes=r.weight_bytes, latency_ms=best_by_key[r.arch_key].latency_ms, accuracy=r.accuracy,
                epochs=r.epochs, format=r.format_name, finetuned=r.finetuned,
            )
            for r in best_pairs(precision, max_weight_bytes=limit)
        ]
    best = best[:top]
    return SearchSummary(study=study.name if study else store.meta().get("study_name", "?"), counts=counts,
                         trainings=len(done), best=best, seconds=seconds)


def _weight_limit(store: Store, study: Study | None) -> int | None:
    if study is not None:
        return study.constraints.max_weight_bytes
    stored = json.loads(store.meta().get("study", "{}") or "{}")
    return (stored.get("constraints") or {}).get("max_weight_bytes")


def _format_of_bits(store: Store, study: Study | None, bits: int) -> str:
    """The narrowest allowed format's name (what the pool's memory check assumed)."""
    from iotnas.formats import parse_format

    names = study.formats if study is not None else json.loads(store.meta().get("study", "{}") or "{}").get(
        "formats", ["float32"])
    for fmt in map(parse_format, names):
        if fmt.bits == bits:
            return fmt.name
    return f"{bits}-bit"
