"""The constrained search, stage by stage, every step stored before the next reads it.

    pool (draw + cost + memory check) -> latency (device or predictor) -> train the
    feasible proposals (lowest fidelity) -> successive halving to higher fidelities
    -> precision (every format of the study, then format-aware fine-tuning)

With ``[final] epochs``, the precision stage first only scores the formats, then the final
stage trains the chosen models (by default the best of each allowed format family) on to
``[final] epochs``, and the precision stage runs in full on those final weights.

Every stage is idempotent: re-running a study skips what the store holds and
resumes what was interrupted (an interrupted training resumes from its last
checkpoint). Progress is reported through callbacks; nothing here prints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from iotnas.arch import Arch
from iotnas.cost import weight_bytes
from iotnas.errors import ExportError, SearchError
from iotnas.results.chance import is_chance_level
from iotnas.results.limits import Measured, Reason
from iotnas.results.winners import SearchSummary, summarize
from iotnas.search.components import Components
from iotnas.search.pool import (
    DeviceFigures,
    cost_candidates,
    narrowest_bits,
    storage_tier,
    stored_device_figures,
)
from iotnas.search.workers import Coordinator, new_worker_id
from iotnas.store import (
    FEASIBLE,
    INVALID,
    POOLED,
    REJECTED_ACTIVATIONS,
    REJECTED_FLASH,
    REJECTED_MEMORY,
    REJECTED_RAM,
    Candidate,
    Latency,
    Store,
)
from iotnas.strategies import Observation, PoolView, Strategy, make_strategy
from iotnas.strategies.features import feature_row
from iotnas.study import Study

log = logging.getLogger(__name__)

POOL_CHUNK = 200  # candidates costed and stored per transaction


@dataclass(frozen=True, slots=True)
class SearchEvent:
    """What the workflow is doing, for progress displays."""

    stage: str  # pool | latency | train | promote | precision | final | wait | done
    message: str
    completed: int | None = None
    total: int | None = None
    detail: object | None = None  # e.g. a training's per-epoch stats
    worker: int | None = None  # which of a launcher's local worker processes said it (None: this process)


Callback = Callable[[SearchEvent], None]


class Workflow:
    """One run of a study against its store, as one worker among any number."""

    def __init__(
        self, study: Study, store: Store, components: Components, *, callbacks: Sequence[Callback] = (),
        stop: Callable[[Sequence[Observation]], bool] | None = None, worker: str | None = None,
    ):
        """``stop(history)``, when given, ends the proposal stage early (benchmarks use it)."""
        self.stop = stop
        self.study = study
        self.store = store
        self.components = components
        self.callbacks = list(callbacks)
        self.workdir = _workdir(study, store)
        self.workers = Coordinator(store, study.workers, worker or new_worker_id())
        self._latency: dict[str, Latency] = {}
        self._candidates: dict[str, Candidate] = {}  # write-through copy of the store's candidates
        self._feature_cache: dict[str, np.ndarray] = {}

    @property
    def worker(self) -> str:
        return self.workers.worker

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
            storage_url=self.store.connect_url, study_name=self.study.name,
        )
        try:
            self.proposal_stage(strategy)
        finally:
            strategy.close()
        self.promotion_stage()
        if self.study.final.epochs > 0:
            self.precision_stage(epochs=self.study.budget.epochs[-1], finetune=False)
            self.final_stage()
            self.precision_stage(epochs=self.study.final.epochs)
        else:
            self.precision_stage()
        summary = summarize(self.store, self.study, seconds=time.perf_counter() - started)
        self._emit("done", f"{summary.trainings} trainings; best: "
                   + (f"{summary.best[0].key} at {summary.best[0].accuracy:.2%}" if summary.best else "none"))
        return summary

    def prepare(self) -> None:
        """The stages before any training: record the study, draw and cost the pool, cheap latency."""
        self.store.set_study(self.study)
        if self.components.latency is not None and self.components.latency.identity is not None:
            self.store.record_device(self.components.latency.identity)
        self.pool_stage()
        self.latency_stage()

    def pool_stage(self) -> None:
        """Draw and cost every candidate; store them, marking those that do not fit in memory."""
        known = {c.key for c in self.store.candidates()}
        todo = [a for a in self.components.pool if a.key not in known]
        total = len(todo)
        self._emit("pool", f"costing {total} candidates", 0, total)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if done % 50 == 0 or done == total:
                self._emit("pool", "costing candidates", done, total)

        device = self._device_figures() if todo and self.study.constraints.device else None
        for start in range(0, total, POOL_CHUNK):
            self.store.add_candidates(cost_candidates(todo[start:start + POOL_CHUNK], self.study, known=known,
                                                      progress=tick, cost_fn=self.components.cost, device=device))
        self._candidates = {c.key: c for c in self.store.candidates()}
        self.workers.refresh()
        self._check_something_fits()

    def _device_figures(self) -> DeviceFigures:
        """The C library's flash and RAM per (model, format), measured once and kept in the store.

        Raises:
            SearchError: the Arm toolchain is missing, or the study's mode builds no network.
        """
        from iotnas.export.c import BUDGET_TARGET, require_toolchain

        if self.components.device is None:
            raise SearchError("constraints.max_flash_bytes / max_ram_bytes: this study builds no networks to measure "
                              "on the device; remove the limits")
        try:
            require_toolchain("constraints.max_flash_bytes / max_ram_bytes")
        except ExportError as exc:
            raise SearchError(f"{exc}; or remove the limits") from None
        return stored_device_figures(self.store, self.components.device, target=BUDGET_TARGET)

    def _update(self, key: str, *, status: str, reason: str | None = None) -> Candidate:
        """Write a candidate's new status to the store, then to the cache."""
        self.store.update_candidate(key, status=status, reason=reason)
        self._candidates[key] = replace(self._candidates[key], status=status, reason=reason)
        return self._candidates[key]

    def _check_something_fits(self) -> None:
        candidates = list(self._candidates.values())
        if any(c.status not in (REJECTED_MEMORY, REJECTED_ACTIVATIONS, REJECTED_FLASH, REJECTED_RAM, INVALID)
               for c in candidates):
            return
        if not candidates:
            raise SearchError("the study draws no candidates; check space.laws and budget.candidates")
        runnable = [c for c in candidates if c.status != INVALID]
        if not runnable:
            raise SearchError(f"every one of the {len(candidates)} candidates drawn is a network that cannot run; "
                              "choose other laws or draw more ids (space.pool_per_law)")
        smallest = min(runnable, key=lambda c: c.n_values)
        bits = narrowest_bits(self.study)
        device = [c for c in runnable if c.status in (REJECTED_FLASH, REJECTED_RAM)]
        on_device = f"; {len(device)} fit in memory but not on the device ({device[0].key}: {device[0].reason})" \
            if device else ""
        raise SearchError(
            f"no candidate satisfies the memory constraints: the smallest, {smallest.key}, has "
            f"{smallest.n_values} values = {weight_bytes(smallest.n_values, bits)} bytes at {bits} bits and "
            f"{smallest.peak_activation_bytes} peak activation bytes{on_device}; raise the limits, allow a narrower "
            "format, or choose laws with smaller models"
        )

    def _too_slow(self, latency: Latency) -> str | None:
        """Why a latency breaks the study's limit (None: it does not)."""
        found = self.study.constraints.violations(Measured(latency_ms=latency.median_ms), checks={Reason.LATENCY})
        return found[0].message if found else None

    def latency_stage(self) -> None:
        """With a cheap source (predictor, released timings), time the whole pool before any training."""
        source = self.components.latency
        if source is None:
            return
        self._latency = self.store.latencies(source.key)
        if not source.cheap:
            return
        pending = [c for c in self._candidates.values() if c.status == POOLED and c.key not in self._latency]
        if pending:
            self._emit("latency", f"estimating the latency of {len(pending)} candidates", 0, len(pending))
        figures = []
        for i, candidate in enumerate(pending, 1):
            figures.append(source.latency(Arch.from_json(candidate.arch_json)))
            if i % 100 == 0 or i == len(pending):
                self._emit("latency", "estimating latency", i, len(pending))
        self.store.add_latencies(figures)
        self._latency.update({f.arch_key: f for f in figures})
        too_slow = {}
        for c in self._candidates.values():
            settled = c.status == POOLED and c.key in self._latency and not _undecided(source, self._latency[c.key])
            why = self._too_slow(self._latency[c.key]) if settled else None
            if why is not None:
                too_slow[c.key] = (Reason.LATENCY.status, why)
        self.store.set_statuses(too_slow)
        for key, (status, reason) in too_slow.items():
            self._candidates[key] = replace(self._candidates[key], status=status, reason=reason)

    def _ensure_latency(self, candidate: Candidate) -> None:
        """Time a candidate (unless stored) and mark it rejected when too slow."""
        source = self.components.latency
        if source is None:
            return
        latency = self._latency.get(candidate.key)
        timed = latency is None
        if timed:
            self._emit("latency", f"timing {candidate.key}")
            latency = source.latency(Arch.from_json(candidate.arch_json))
            self.store.add_latency(latency)
            self._latency[candidate.key] = latency
        if _undecided(source, latency):  # hybrid mode: a prediction too close to the limit to trust
            timed = True
            self._emit("latency", f"measuring {candidate.key} (predicted {latency.median_ms:.3f} ms)")
            latency = source.measure(Arch.from_json(candidate.arch_json))
            self.store.add_latency(latency)  # replaces the prediction
            self._latency[candidate.key] = latency
        why = self._too_slow(latency)
        if timed:
            self._emit("latency", f"{candidate.key}: {latency.median_ms:.3f} ms"
                       + (f", too slow ({why})" if why else ""))
        if why is not None and candidate.status == POOLED:
            self._update(candidate.key, status=Reason.LATENCY.status, reason=why)

    def proposal_stage(self, strategy: Strategy) -> None:
        """Ask the strategy for candidates until the training budget is spent or the pool is empty.

        Safe with several workers on one store: a proposal index and a training are each claimed
        by one worker; proposals left unresolved by a dead worker are taken over and resumed.
        """
        budget = self.study.budget.trainings
        first = self.study.budget.epochs[0]
        self._emit("train", f"training up to {budget} models at {first:g} epochs", self._trained(first), budget)
        told: set[str] = set()
        while True:
            proposals = self._refresh()
            history = [self._observation(c, first) for c in proposals if self._resolved(c, first)]
            for observation in history:
                if observation.key not in told:  # replayed after a restart too; Optuna ignores what it knows
                    strategy.tell(observation)
                    told.add(observation.key)
            if self.stop is not None and self.stop(history):
                return
            unresolved = [c for c in proposals if not self._resolved(c, first)]
            if any(self.workers.can_take(c.key, first) and self._resolve(c, first) is not None for c in unresolved):
                continue  # finished an interrupted proposal; look again
            trained = sum(o.accuracy is not None for o in history)
            if trained >= budget:
                return
            if trained + len(unresolved) >= budget:  # other workers are training the rest
                self._wait()
                continue
            view = self._view()
            if len(view) == 0:
                if not unresolved:
                    self._emit("train", "no untried feasible candidate left in the pool")
                    return
                self._wait()
                continue
            rng = np.random.default_rng([self.study.seed, len(proposals)])
            (key,) = strategy.ask(view, history, 1, rng)
            index = self.store.claim_proposal(key)
            if index is None:
                continue  # another worker proposed it first
            self._candidates[key] = replace(self._candidates[key], proposed_index=index)
            self._resolve(self._candidates[key], first)

    def _resolve(self, candidate: Candidate, epochs: float) -> Observation | None:
        """Check latency, then train at the lowest fidelity; None when another worker holds the training.

        The training is claimed before the latency is measured, so that another worker does not time
        the same proposal meanwhile; a proposal found too slow gives its claim back.
        """
        if candidate.status == POOLED:
            if not self.workers.claim(candidate.key, epochs):
                return None  # another worker is timing or training it
            with self.workers.heartbeat(candidate.key, epochs):
                self._ensure_latency(candidate)
            candidate = self._candidates[candidate.key]
            if candidate.status != POOLED:  # rejected: nothing to train
                self.workers.release(candidate.key, epochs)
        if candidate.status == POOLED:
            candidate = self._update(candidate.key, status=FEASIBLE)
        if candidate.status != FEASIBLE:
            return self._observation(candidate, epochs)
        if self._train(candidate, epochs, of=self.study.budget.trainings) is None:
            return None
        return self._observation(candidate, epochs)

    def _observation(self, candidate: Candidate, epochs: float) -> Observation:
        accuracy = self.workers.done.get((candidate.key, epochs)) if candidate.status == FEASIBLE else None
        return Observation(candidate.key, candidate.space, self._features(candidate),
                           candidate.status == FEASIBLE, accuracy)

    def _resolved(self, candidate: Candidate, epochs: float) -> bool:
        if candidate.status not in (POOLED, FEASIBLE):
            return True  # rejected by a constraint
        return (candidate.key, epochs) in self.workers.done

    def _trained(self, epochs: float) -> int:
        """How many trainings to ``epochs`` are finished, by any worker (as last read)."""
        return sum(e == epochs for _, e in self.workers.done)

    def _train(self, candidate: Candidate, epochs: float, *, of: int | None = None,
               stage: str = "train") -> float | None:
        """Train (or resume) to ``epochs``; None when another worker holds the training.

        ``of``: how many trainings to ``epochs`` the calling stage needs, for the progress counts.
        """
        done = self.workers.done
        if (candidate.key, epochs) in done:
            return done[(candidate.key, epochs)]
        if not self.workers.claim(candidate.key, epochs):
            return None
        count = self._trained(epochs) if of is not None else None
        self._emit(stage, f"training {candidate.key} to {epochs:g} epochs", count, of)
        started = time.perf_counter()

        def on_epoch(stats: object) -> None:
            self._emit(stage, f"training {candidate.key}", count, of, detail=stats)

        with self.workers.heartbeat(candidate.key, epochs):
            result = self.components.evaluator.evaluate(
                Arch.from_json(candidate.arch_json), epochs, workdir=self._model_dir(candidate.key),
                callbacks=(on_epoch,),
            )
        self.store.finish_training(candidate.key, epochs, accuracy=result.accuracy, checkpoint=result.checkpoint,
                                   seconds=time.perf_counter() - started,
                                   resumed_from_epochs=result.resumed_from_epochs)
        done[(candidate.key, epochs)] = result.accuracy
        chance = " (chance level: not promoted)" if self._at_chance(result.accuracy) else ""
        self._emit(stage, f"{candidate.key}: {result.accuracy:.2%} after {epochs:g} epochs{chance}",
                   self._trained(epochs) if of is not None else None, of)
        return result.accuracy

    def _at_chance(self, accuracy: float) -> bool:
        return is_chance_level(accuracy, self.components.num_classes)

    def _wait(self) -> None:
        self._emit("wait", "waiting for other workers' trainings")
        self.workers.wait()

    def _refresh(self) -> list[Candidate]:
        """Read what other workers changed; returns the proposals in the order they were made."""
        proposals = self.store.proposals()
        for candidate in proposals:
            self._candidates[candidate.key] = candidate
        self.workers.refresh()
        return proposals

    def promotion_stage(self) -> None:
        """Successive halving: the best 1/eta of each fidelity go on to the next one.

        Waits until every training of the lower fidelity is finished (by any worker) before choosing.
        """
        levels = self.study.budget.epochs
        for lower, higher in zip(levels, levels[1:]):
            while True:
                proposals = self._refresh()
                pending_lower = [k for (k, e) in self.workers.running if e == lower]
                if lower == levels[0]:
                    pending_lower += [c.key for c in proposals if not self._resolved(c, lower)]
                if pending_lower:
                    takeable = [k for k in pending_lower if self.workers.can_take(k, lower)]
                    if takeable:
                        self._train(self._candidates[takeable[0]], lower,
                                    of=self.study.budget.trainings if lower == levels[0] else None)
                    else:
                        self._wait()
                    continue
                results = sorted(((acc, key) for (key, e), acc in self.workers.done.items() if e == lower),
                                 key=lambda r: (-r[0], r[1]))
                keep = self._promoted(results)
                if not keep:
                    if results:
                        self._emit("promote", f"every one of the {len(results)} models at {lower:g} epochs ended "
                                   "at chance level; none goes on")
                    break
                todo = [key for key in keep if (key, higher) not in self.workers.done]
                if not todo:
                    break
                self._emit("promote", f"the best {len(keep)} of {len(results)} go on to {higher:g} epochs",
                           len(keep) - len(todo), len(keep))
                takeable = [key for key in todo if self.workers.can_take(key, higher)]
                if not takeable or self._train(self._candidates[takeable[0]], higher, of=len(keep)) is None:
                    self._wait()

    def _promoted(self, results: list[tuple[float, str]]) -> list[str]:
        """The keys that go on from ``results`` (most accurate first): the best 1/eta, of all or per storage tier.

        Chance-level trainings count in the 1/eta but are never promoted.
        """
        per_format = self.study.budget.promote == "per_format"
        groups: dict[int, list[tuple[float, str]]] = {}
        for acc, key in results:
            tier = storage_tier(self._candidates[key].n_values, self.study) if per_format else 0
            groups.setdefault(tier, []).append((acc, key))
        keep = []
        for group in groups.values():
            learned = [key for acc, key in group if not self._at_chance(acc)]
            keep += learned[: max(1, math.ceil(len(group) / self.study.budget.eta))]
        return [key for _, key in results if key in keep]

    def precision_stage(self, *, epochs: float | None = None, finetune: bool = True) -> None:
        """Each model at fidelity ``epochs`` (default: the top one) in every format of the study.

        None in tabular mode. ``finetune=False`` only scores the formats (before the final stage).
        A model whose checkpoint was deleted or damaged is trained again, then evaluated.
        """
        from iotnas.precision.runner import run_precision_stage

        if self.components.precision is None:
            return

        def emit(message: str, completed: int | None = None, total: int | None = None, detail=None) -> None:
            self._emit("precision", message, completed, total, detail)

        for _ in range(2):  # a second pass only after retraining lost checkpoints
            lost = run_precision_stage(self.study, self.store, self.components.precision, workdir=self._model_dir,
                                       emit=emit, claims=self.workers, epochs=epochs, finetune=finetune)
            if not lost:
                return
            for training in lost:
                self._trained_again(training.arch_key, training.epochs)

    def _trained_again(self, key: str, epochs: float) -> None:
        """Train a model whose checkpoint was lost, or wait while another worker does (never both)."""
        while True:
            self._refresh()
            if (key, epochs) in self.workers.done:
                return
            if not self.workers.can_take(key, epochs) or self._train(self._candidates[key], epochs) is None:
                self._wait()

    def final_stage(self) -> None:
        """Train the chosen models on from their last rung to ``[final] epochs``.

        The choice is read from the precision results at the last rung, so every worker, and a
        resumed run, makes the same one; each training is claimed, resumable and continues its
        rung's checkpoint (the schedule re-plans the decay to the final budget). A worker with no
        final training left to take scores the formats of the finished ones meanwhile (the
        precision stage's shared jobs; fine-tuning waits until every final model is scored).
        """
        from iotnas.search.final import final_models

        epochs = self.study.final.epochs
        chosen = final_models(self.store, self.study, num_classes=self.components.num_classes)
        if not chosen:
            self._emit("final", "no feasible model to train on")
            return
        self._emit("final", f"training {len(chosen)} model(s) on to {epochs:g} epochs: {', '.join(chosen)}",
                   sum((k, epochs) in self.workers.done for k in chosen), len(chosen))
        scored: set[str] = set()  # finished final models whose formats this worker has seen scored
        while True:
            self._refresh()
            todo = [k for k in chosen if (k, epochs) not in self.workers.done]
            if not todo:
                break
            takeable = [k for k in todo if self.workers.can_take(k, epochs)]
            if not takeable or self._train(self._candidates[takeable[0]], epochs, of=len(chosen),
                                           stage="final") is None:
                finished = {k for k in chosen if (k, epochs) in self.workers.done} - scored
                if finished and self.components.precision is not None:  # rather than wait, score those
                    scored |= finished
                    self.precision_stage(epochs=epochs, finetune=False)
                else:
                    self._wait()
        self._emit("final", f"{len(chosen)} model(s) trained to {epochs:g} epochs", len(chosen), len(chosen))

    # ------------------------------------------------------------------ views

    def _view(self) -> PoolView:
        available = [c for c in self._candidates.values() if c.status == POOLED and c.proposed_index is None]
        ranks = [_rank(self.components.latency, self._latency.get(c.key)) for c in available]
        order = sorted(range(len(available)), key=ranks.__getitem__)  # stable: ties keep the pool's order
        available, ranks = [available[i] for i in order], [ranks[i] for i in order]
        features = [self._features(c) for c in available]
        return PoolView(
            keys=tuple(c.key for c in available),
            spaces=tuple(c.space for c in available),
            laws=tuple(f"{c.space}/{c.law}" for c in available),
            ids=tuple(c.arch_id if c.arch_id is not None else -1 for c in available),
            features=np.stack(features) if features else np.zeros((0, _feature_width())),
            rank=tuple(ranks) if any(ranks) else (),
        )

    def _features(self, candidate: Candidate) -> np.ndarray:
        cached = self._feature_cache.get(candidate.key)
        if cached is None:
            cached = self._feature_cache[candidate.key] = feature_row(
                space=candidate.space, n_values=candidate.n_values, macs=candidate.macs, flops=candidate.flops,
                peak_activation_bytes=candidate.peak_activation_bytes)
        return cached

    def _model_dir(self, key: str) -> Path:
        return self.workdir / key.replace("/", "_")


def _feature_width() -> int:
    return len(feature_row(space="", n_values=1, macs=1, flops=1, peak_activation_bytes=1))


def _workdir(study: Study, store: Store) -> Path:
    """Checkpoints live beside a SQLite store, or in ``<study name>-runs`` for a server or in-memory store."""
    if store.path is not None:
        return store.path.parent / store.runs_name  # one folder per study of the store
    return study.resolve(f"{study.name}-runs")


def _undecided(source: object, latency: Latency) -> bool:
    """Whether the source wants a stored figure settled on the device first (the hybrid mode)."""
    check = getattr(source, "undecided", None)
    return check is not None and check(latency)


def _rank(source: object, latency: Latency | None) -> float:
    """A candidate's place among those a strategy ranks equally (lowest first): the hybrid mode's, else 0."""
    rank = getattr(source, "rank", None)
    return 0.0 if rank is None or latency is None else float(rank(latency))
