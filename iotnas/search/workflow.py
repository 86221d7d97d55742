"""The constrained search, stage by stage, every step stored before the next reads it.

    pool (draw + cost + memory check) -> latency (device or predictor) -> train the
    feasible proposals (lowest fidelity) -> successive halving to higher fidelities

Every stage is idempotent: re-running a study skips what the store holds and
resumes what was interrupted (an interrupted training resumes from its last
checkpoint). Progress is reported through callbacks; nothing here prints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from iotnas.arch import Arch
from iotnas.cost import Cost, cost, weight_bytes
from iotnas.errors import SearchError
from iotnas.formats import parse_format
from iotnas.search.pool import smallest_bits
from iotnas.search.summary import SearchSummary, summarize
from iotnas.search.workers import Heartbeat, dead_workers, new_worker_id, stale_before
from iotnas.store import (
    FEASIBLE,
    POOLED,
    REJECTED_LATENCY,
    Candidate,
    Latency,
    Store,
)
from iotnas.strategies import Observation, PoolView, Strategy, make_strategy
from iotnas.strategies.features import feature_row
from iotnas.study import Study

log = logging.getLogger(__name__)


class Evaluator(Protocol):
    """Trains (or looks up) a model to a fidelity; returns (test accuracy, checkpoint path or None)."""

    def evaluate(self, arch: Arch, epochs: float, *, workdir: Path,
                 callbacks: Sequence[Callable] = ()) -> tuple[float, str | None, float | None]:
        """(test accuracy, checkpoint path or None, epochs of progress resumed from a checkpoint)."""


class LatencySource(Protocol):
    """Latency of an untrained model on the target device (measured, predicted or released)."""

    key: str  # identity of the figure: device + runtime + settings
    cheap: bool  # True: answer for the whole pool up front (prediction, lookup)

    def latency(self, arch: Arch) -> Latency: ...


@dataclass(frozen=True, slots=True)
class SearchEvent:
    """What the workflow is doing, for progress displays."""

    stage: str  # pool | latency | train | promote | done
    message: str
    completed: int | None = None
    total: int | None = None
    detail: object | None = None  # e.g. a training's per-epoch stats


Callback = Callable[[SearchEvent], None]


@dataclass
class Components:
    """What a study needs to run: the pool to draw from, the evaluator, the latency source."""

    pool: list[Arch]
    evaluator: Evaluator
    latency: LatencySource | None
    cost: Callable[[Arch], Cost] = cost  # replaceable by a cache when many studies share one pool
    precision: object | None = None  # a PrecisionRunner; None where there are no weights (tabular mode)


class Workflow:
    """One run of a study against its store."""

    def __init__(
        self, study: Study, store: Store, components: Components, *, callbacks: Sequence[Callback] = (),
        stop: Callable[[Sequence[Observation]], bool] | None = None, worker: str | None = None,
    ):
        """``stop(history)``, when given, ends the proposal stage early (benchmarks use it)."""
        self.stop = stop
        self.worker = worker or new_worker_id()
        self.workers = study.workers
        self.study = study
        self.store = store
        self.components = components
        self.callbacks = list(callbacks)
        self.workdir = _workdir(study, store)
        self._latency: dict[str, Latency] = {}
        self._candidates: dict[str, Candidate] = {}  # write-through copy of the store's candidates
        self._done: dict[tuple[str, float], float] = {}  # (key, epochs) -> accuracy of finished trainings
        self._feature_cache: dict[str, np.ndarray] = {}
        self._running: dict[tuple[str, float], object] = {}  # (key, epochs) -> Training held by some worker

    # ------------------------------------------------------------------ events

    def _emit(self, stage: str, message: str, completed: int | None = None, total: int | None = None,
              detail: object | None = None) -> None:
        event = SearchEvent(stage, message, completed, total, detail)
        for callback in self.callbacks:
            callback(event)

    # ------------------------------------------------------------------ stages

    def run(self) -> SearchSummary:
        started = time.perf_counter()
        self.prepare()
        strategy = make_strategy(
            self.study.strategy.name, seed=self.study.seed, settings=self.study.strategy.settings,
            storage_url=self.store.url, study_name=self.study.name,
        )
        try:
            self.proposal_stage(strategy)
        finally:
            strategy.close()
        self.promotion_stage()
        self.precision_stage()
        summary = self.summary(seconds=time.perf_counter() - started)
        self._emit("done", f"{summary.trainings} trainings; best: "
                   + (f"{summary.best[0].key} at {summary.best[0].accuracy:.2%}" if summary.best else "none"))
        return summary

    def prepare(self) -> None:
        """The stages before any training: record the study, draw and cost the pool, cheap latency."""
        self.store.set_meta("study", json.dumps(self.study.to_dict(), default=list))
        self.store.set_meta("weight_bits", str(smallest_bits(self.study)))
        self.pool_stage()
        self.latency_stage()

    def pool_stage(self) -> None:
        """Draw and cost every candidate; store them, marking those that do not fit in memory."""
        from iotnas.search.pool import cost_candidates

        known = {c.key for c in self.store.candidates()}
        todo = [a for a in self.components.pool if a.key not in known]
        total = len(todo)
        self._emit("pool", f"costing {total} candidates", 0, total)
        done = 0
        batch: list[Candidate] = []

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if done % 50 == 0 or done == total:
                self._emit("pool", "costing candidates", done, total)

        for chunk_start in range(0, total, 200):
            batch = cost_candidates(todo[chunk_start:chunk_start + 200], self.study, known=known, progress=tick,
                                    cost_fn=self.components.cost)
            self.store.add_candidates(batch)
        self._candidates = {c.key: c for c in self.store.candidates()}
        self._done = {(t.arch_key, t.epochs): float(t.accuracy) for t in self.store.trainings(status="done")}
        self._check_something_fits()

    def _update(self, key: str, *, status: str | None = None, reason: str | None = None,
                proposed_index: int | None = None) -> Candidate:
        """Write a candidate's new status or proposal index to the store, then to the cache."""
        self.store.update_candidate(key, status=status, reason=reason, proposed_index=proposed_index)
        changes: dict[str, object] = {}
        if status is not None:
            changes.update(status=status, reason=reason)
        if proposed_index is not None:
            changes["proposed_index"] = proposed_index
        self._candidates[key] = replace(self._candidates[key], **changes)
        return self._candidates[key]

    def _check_something_fits(self) -> None:
        candidates = list(self._candidates.values())
        if any(c.status != "rejected:memory" and not c.status.startswith("rejected:activ") for c in candidates):
            return
        if not candidates:
            raise SearchError("the study draws no candidates; check space.laws and budget.candidates")
        smallest = min(candidates, key=lambda c: c.n_values)
        bits = smallest_bits(self.study)
        raise SearchError(
            f"no candidate satisfies the memory constraints: the smallest, {smallest.key}, has "
            f"{smallest.n_values} values = {weight_bytes(smallest.n_values, bits)} bytes at {bits} bits and "
            f"{smallest.peak_activation_bytes} peak activation bytes; raise the limits, allow a narrower "
            "format, or choose laws with smaller models"
        )

    def latency_stage(self) -> None:
        """With a cheap source (predictor, released timings), time the whole pool before any training."""
        source = self.components.latency
        if source is None:
            return
        self._latency = self.store.latencies(source.key)
        if not source.cheap:
            return
        pending = [c for c in self._candidates.values() if c.status == POOLED and c.key not in self._latency]
        figures = []
        for i, candidate in enumerate(pending, 1):
            figures.append(source.latency(Arch.from_json(candidate.arch_json)))
            if i % 100 == 0 or i == len(pending):
                self._emit("latency", "estimating latency", i, len(pending))
        self.store.add_latencies(figures)
        self._latency.update({f.arch_key: f for f in figures})
        limit = self.study.constraints.max_latency_ms
        if limit is None:
            return
        too_slow = {
            c.key: (REJECTED_LATENCY, f"{self._latency[c.key].median_ms:.3f} ms > {limit} ms")
            for c in self._candidates.values()
            if c.status == POOLED and c.key in self._latency and self._latency[c.key].median_ms > limit
        }
        self.store.set_statuses(too_slow)
        for key, (status, reason) in too_slow.items():
            self._candidates[key] = replace(self._candidates[key], status=status, reason=reason)

    def _ensure_latency(self, candidate: Candidate) -> Latency | None:
        """Latency of a candidate (stored, or obtained now); marks it rejected when too slow."""
        source = self.components.latency
        if source is None:
            return None
        latency = self._latency.get(candidate.key)
        if latency is None:
            self._emit("latency", f"timing {candidate.key}")
            latency = source.latency(Arch.from_json(candidate.arch_json))
            self.store.add_latency(latency)
            self._latency[candidate.key] = latency
        limit = self.study.constraints.max_latency_ms
        if limit is not None and latency.median_ms > limit and candidate.status == POOLED:
            self._update(candidate.key, status=REJECTED_LATENCY, reason=f"{latency.median_ms:.3f} ms > {limit} ms")
        return latency

    def proposal_stage(self, strategy: Strategy) -> None:
        """Ask the strategy for candidates until the training budget is spent or the pool is empty.

        Safe with several workers on one store: a proposal index and a training are each claimed
        by one worker; proposals left unresolved by a dead worker are taken over and resumed.
        """
        budget = self.study.budget.trainings
        first = self.study.budget.epochs[0]
        told: set[str] = set()
        while True:
            self._refresh()
            proposals = self._proposals()
            history = [self._observation(c, first) for c in proposals if self._resolved(c, first)]
            for observation in history:
                if observation.key not in told:  # replayed after a restart too; Optuna ignores what it knows
                    strategy.tell(observation)
                    told.add(observation.key)
            if self.stop is not None and self.stop(history):
                return
            unresolved = [c for c in proposals if not self._resolved(c, first)]
            if any(self._can_take(c.key, first) and self._resolve(c, first) is not None for c in unresolved):
                continue  # finished an interrupted proposal; look again
            trained = sum(o.accuracy is not None for o in history)
            if trained >= budget:
                return
            if trained + len(unresolved) >= budget:  # other workers are training the rest
                self._wait("waiting for other workers' trainings")
                continue
            view = self._view()
            if len(view) == 0:
                if not unresolved:
                    self._emit("train", "no untried feasible candidate left in the pool")
                    return
                self._wait("waiting for other workers' trainings")
                continue
            rng = np.random.default_rng([self.study.seed, len(proposals)])
            (key,) = strategy.ask(view, history, 1, rng)
            index = self.store.claim_proposal(key)
            if index is None:
                continue  # another worker proposed it first
            self._candidates[key] = replace(self._candidates[key], proposed_index=index)
            self._resolve(self._candidates[key], first)

    def _resolve(self, candidate: Candidate, epochs: float) -> Observation | None:
        """Check latency, then train at the lowest fidelity; None when another worker holds the training."""
        if candidate.status == POOLED:
            self._ensure_latency(candidate)
            candidate = self._candidates[candidate.key]
        if candidate.status == POOLED:
            candidate = self._update(candidate.key, status=FEASIBLE)
        if candidate.status != FEASIBLE:
            return self._observation(candidate, epochs)
        if self._train(candidate, epochs) is None:
            return None
        return self._observation(candidate, epochs)

    def _observation(self, candidate: Candidate, epochs: float) -> Observation:
        accuracy = self._done.get((candidate.key, epochs)) if candidate.status == FEASIBLE else None
        return Observation(candidate.key, candidate.space, self._features(candidate),
                           candidate.status == FEASIBLE, accuracy)

    def _resolved(self, candidate: Candidate, epochs: float) -> bool:
        if candidate.status not in (POOLED, FEASIBLE):
            return True  # rejected by a constraint
        return (candidate.key, epochs) in self._done

    def _can_take(self, key: str, epochs: float) -> bool:
        """Whether no live worker holds this training (new, failed, or its worker stopped beating)."""
        training = self._running.get((key, epochs))
        if training is None or training.worker == self.worker:
            return True
        if training.worker in dead_workers([training.worker]):
            return True
        return training.heartbeat_at is None or training.heartbeat_at < stale_before(self.workers)

    def _train(self, candidate: Candidate, epochs: float) -> float | None:
        """Train (or resume) to ``epochs``; None when another worker holds the training."""
        if (candidate.key, epochs) in self._done:
            return self._done[(candidate.key, epochs)]
        holder = self._running.get((candidate.key, epochs))
        dead = dead_workers([holder.worker]) if holder is not None else []
        if not self.store.claim_training(candidate.key, epochs, worker=self.worker,
                                         stale_before=stale_before(self.workers), dead_workers=dead):
            return None
        arch = Arch.from_json(candidate.arch_json)
        self._emit("train", f"training {candidate.key} to {epochs:g} epochs")
        started = time.perf_counter()

        def on_epoch(stats: object) -> None:
            self._emit("train", f"training {candidate.key}", detail=stats)

        with self._heartbeat(candidate.key, epochs):
            result = self.components.evaluator.evaluate(
                arch, epochs, workdir=self.workdir / _safe(candidate.key), callbacks=(on_epoch,)
            )
        accuracy, checkpoint, resumed = result
        self.store.finish_training(candidate.key, epochs, accuracy=accuracy, checkpoint=checkpoint,
                                   seconds=time.perf_counter() - started, resumed_from_epochs=resumed)
        self._done[(candidate.key, epochs)] = accuracy
        self._emit("train", f"{candidate.key}: {accuracy:.2%} after {epochs:g} epochs")
        return accuracy

    def _heartbeat(self, key: str, epochs: float):
        if self.store.url in ("sqlite://", "sqlite:///:memory:"):  # one process by definition
            return contextlib.nullcontext()
        return Heartbeat(self.store, key, epochs, worker=self.worker, interval_s=self.workers.heartbeat_s)

    def _wait(self, message: str) -> None:
        self._emit("wait", message)
        time.sleep(self.workers.poll_s)

    def _refresh(self) -> None:
        """Read what other workers changed: proposals, their statuses, and the trainings."""
        for candidate in self.store.candidates(proposed=True):
            self._candidates[candidate.key] = candidate
        trainings = self.store.trainings()
        self._done = {(t.arch_key, t.epochs): float(t.accuracy) for t in trainings if t.status == "done"}
        self._running = {(t.arch_key, t.epochs): t for t in trainings if t.status in ("running", "failed")}

    def _proposals(self) -> list[Candidate]:
        proposed = [c for c in self._candidates.values() if c.proposed_index is not None]
        return sorted(proposed, key=lambda c: c.proposed_index)

    def promotion_stage(self) -> None:
        """Successive halving: the best 1/eta of each fidelity go on to the next one.

        Waits until every training of the lower fidelity is finished (by any worker) before choosing.
        """
        levels = self.study.budget.epochs
        for lower, higher in zip(levels, levels[1:]):
            while True:
                self._refresh()
                pending_lower = [k for (k, e) in self._running if e == lower]
                if lower == levels[0]:
                    pending_lower += [c.key for c in self._proposals() if not self._resolved(c, lower)]
                if pending_lower:
                    if any(self._can_take(k, lower) for k in pending_lower):
                        for key in pending_lower:
                            if self._can_take(key, lower):
                                self._train(self._candidates[key], lower)
                                break
                    else:
                        self._wait("waiting for other workers' trainings")
                    continue
                results = sorted(((acc, key) for (key, e), acc in self._done.items() if e == lower),
                                 key=lambda r: (-r[0], r[1]))
                keep = [key for _, key in results[: max(1, math.ceil(len(results) / self.study.budget.eta))]]
                todo = [key for key in keep if (key, higher) not in self._done]
                if not todo:
                    break
                self._emit("promote", f"fidelity {higher:g} epochs", len(keep) - len(todo), len(keep))
                takeable = [key for key in todo if self._can_take(key, higher)]
                if not takeable or self._train(self._candidates[takeable[0]], higher) is None:
                    self._wait("waiting for other workers' trainings")

    def precision_stage(self) -> None:
        """Each model at the top fidelity, evaluated with its numbers in every format of the study."""
        from iotnas.search.precision import best_pairs
        from iotnas.store import PrecisionResult

        runner = self.components.precision
        done = self.store.trainings(status="done")
        if runner is None or not done:
            return
        top = max(t.epochs for t in done)
        models = [t for t in done if t.epochs == top and t.checkpoint]
        stored = self.store.precision_results()
        for i, training in enumerate(models):
            self._emit("precision", f"number formats of {training.arch_key}", i, len(models))
            known = {r.format_name: r.accuracy for r in stored
                     if r.arch_key == training.arch_key and r.epochs == top and not r.finetuned}
            arch = Arch.from_json(self._candidates[training.arch_key].arch_json)
            accuracy, sizes, _ = runner.evaluate(arch, training.checkpoint, known=known)
            for name, acc in accuracy.items():
                if name not in known:
                    self.store.add_precision(PrecisionResult(
                        arch_key=training.arch_key, epochs=top, format_name=name, bits=parse_format(name).bits,
                        weight_bytes=sizes[name], accuracy=acc, finetuned=False, checkpoint=training.checkpoint,
                    ))
        if not runner.finetune_formats:
            return
        budget = self.study.constraints.max_weight_bytes
        plain = [r for r in self.store.precision_results() if not r.finetuned]
        chosen = [r.arch_key for r in best_pairs(plain, max_weight_bytes=budget)][: self.study.precision.finetune_top]
        finetuned = {(r.arch_key, r.format_name) for r in self.store.precision_results() if r.finetuned}
        checkpoints = {t.arch_key: t.checkpoint for t in models}
        for key in chosen:
            arch = Arch.from_json(self._candidates[key].arch_json)
            for fmt in runner.finetune_formats:
                if (key, fmt.name) in finetuned:
                    continue
                self._emit("precision", f"fine-tuning {key} in {fmt.name}")
                accuracy, path, size = runner.finetune(
                    arch, checkpoints[key], fmt, workdir=self.workdir / _safe(key) / f"finetune-{fmt.name}",
                    callbacks=(lambda stats, k=key: self._emit("precision", f"fine-tuning {k}", detail=stats),),
                )
                self.store.add_precision(PrecisionResult(
                    arch_key=key, epochs=top, format_name=fmt.name, bits=fmt.bits, weight_bytes=size,
                    accuracy=accuracy, finetuned=True, checkpoint=path,
                ))

    # ------------------------------------------------------------------ views

    def _view(self) -> PoolView:
        available = [c for c in self._candidates.values() if c.status == POOLED and c.proposed_index is None]
        return PoolView(
            keys=tuple(c.key for c in available),
            spaces=tuple(c.space for c in available),
            laws=tuple(f"{c.space}/{c.law}" for c in available),
            ids=tuple(c.arch_id if c.arch_id is not None else -1 for c in available),
            features=np.stack([self._features(c) for c in available]) if available else np.zeros((0, 11)),
        )

    def _features(self, candidate: Candidate) -> np.ndarray:
        cached = self._feature_cache.get(candidate.key)
        if cached is None:
            cached = self._feature_cache[candidate.key] = _features(candidate)
        return cached

    def summary(self, *, seconds: float = 0.0) -> SearchSummary:
        return summarize(self.store, self.study, seconds=seconds)


def _features(c: Candidate) -> np.ndarray:
    return feature_row(space=c.space, n_values=c.n_values, macs=c.macs, flops=c.flops,
                       peak_activation_bytes=c.peak_activation_bytes)


def _safe(key: str) -> str:
    return key.replace("/", "_")


def _workdir(study: Study, store: Store) -> Path:
    """Checkpoints live beside a SQLite store, or in ``<study name>-runs`` for a server or in-memory store."""
    if store.path is not None:
        return store.path.parent / f"{store.path.stem}-runs"
    return study.resolve(f"{study.name}-runs")
