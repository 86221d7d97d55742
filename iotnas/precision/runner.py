"""The search's precision stage: every top-fidelity model evaluated in every study format, the best fine-tuned.

Every result is stored as soon as it exists; a resumed stage reuses what the store holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch

from iotnas.arch import Arch
from iotnas.data import Dataset
from iotnas.errors import CheckpointError
from iotnas.formats import NumberFormat, parse_format, storage_bytes
from iotnas.precision.grid import FormatResult, GridSpec, evaluate_model_formats
from iotnas.store import (
    Candidate,
    PrecisionResult,
    SkippedFormat,
    Store,
    Training,
    TrainingStatus,
)
from iotnas.study import Study
from iotnas.train import evaluate, load_trained, recipe_for

if TYPE_CHECKING:
    from iotnas.results.winners import WinnerRule


@dataclass(frozen=True, slots=True)
class PrecisionEvaluation:
    """One model in the study's formats (and the grid's bisection path)."""

    accuracy: dict[str, float]  # by format name
    weight_bytes: dict[str, int]  # by format name, integer formats' scales included
    evaluations: int  # new evaluations made (stored ones are reused)
    skipped: dict[str, str]  # grid formats not evaluated, by name: why


@dataclass(frozen=True, slots=True)
class Finetuned:
    """One model after format-aware fine-tuning."""

    accuracy: float  # with its weights in the format
    checkpoint: str  # the fine-tuned model's own checkpoint
    weight_bytes: int


def scoring_subset(dataset: Dataset, *, images: int | None, seed: int) -> Dataset:
    """The test images formats are scored on: a fixed draw of ``images`` of them (by ``seed``, so every model
    and every resumed run sees the same ones), or ``dataset`` itself for the whole split.

    A draw, not the first ones: a test split stored class by class would otherwise be scored on a few classes.
    """
    total = len(dataset.test_labels)
    if images is None or images >= total:
        return dataset
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:images].sort().values
    return dataclasses.replace(dataset, test_images=dataset.test_images[chosen], test_labels=dataset.test_labels[chosen])


class PrecisionRunner:
    """Evaluates trained models in narrower formats, and fine-tunes them format-aware."""

    def __init__(self, study: Study, dataset: Dataset):
        spec = study.precision
        self.study = study
        self.dataset = dataset
        self.scoring = scoring_subset(dataset, images=spec.test_images, seed=study.seed)
        #: How many test images score a format (None: the whole split): what the stored results record.
        self.test_images = None if self.scoring is dataset else len(self.scoring.test_labels)
        self._recipe = recipe_for(study, 1.0)
        self.formats = [parse_format(name) for name in study.formats]
        self.grid = GridSpec(spec.exp_bits, spec.man_bits, spec.tolerance) if spec.grid else None
        names = spec.finetune_formats or tuple(f.name for f in self.formats if f.name != "float32")
        self.finetune_formats = [parse_format(name) for name in names] if spec.finetune_epochs > 0 else []

    @property
    def settings_tag(self) -> str:
        """A short digest of what a model is scored in (formats, grid, scoring images): a study resumed with
        other settings scores its models again (what is stored is reused), not as already done."""
        settings = repr(([f.name for f in self.formats], self.grid, self.test_images))
        return hashlib.sha256(settings.encode()).hexdigest()[:8]

    def evaluate(self, arch: Arch, checkpoint: str, *, known: dict[str, float], known_bytes: dict[str, int],
                 known_skipped: dict[str, str] | None = None,
                 on_result: Callable[[str, float, int, int], None] | None = None) -> PrecisionEvaluation:
        """Accuracy and weight bytes of one trained model per format; ``known`` results are reused.

        The checkpoint is read only when some format has not been evaluated yet. ``on_result(format_name,
        accuracy, weight_bytes, evaluations_so_far)`` is called after each new evaluation.

        Raises:
            CheckpointError: the checkpoint is needed but missing or damaged.
        """
        sizes = dict(known_bytes)

        def evaluated(result: FormatResult) -> None:
            sizes[result.fmt.name] = storage_bytes(result.fmt, result.model)
            if on_result is not None:
                on_result(result.fmt.name, result.accuracy, sizes[result.fmt.name], result.evaluations)

        found = evaluate_model_formats(lambda: self._load(arch, checkpoint), self._score, formats=self.formats,
                                       grid=self.grid, known=known, on_result=evaluated,
                                       num_classes=self.dataset.num_classes, known_skipped=known_skipped)
        return PrecisionEvaluation(found.accuracy, {name: sizes[name] for name in found.accuracy}, found.evaluations,
                                   found.skipped)

    def rescore(self, arch: Arch, checkpoint: str, fmt: NumberFormat) -> float:
        """Accuracy of one trained model in ``fmt`` on the whole test split (a winner's final figure).

        Raises:
            CheckpointError: the checkpoint is missing or damaged.
        """
        from iotnas.precision.emulate import emulated

        model = self._load(arch, checkpoint)
        with emulated(model, weights=fmt):
            return self._score(model, whole=True)

    # The training recipe's layout and thread count: NHWC halves the time of each of the ~20
    # evaluations of a model, which is converted before any format swaps its stored values.

    def _load(self, arch: Arch, checkpoint: str) -> torch.nn.Module:
        model = load_trained(checkpoint, arch=arch).model
        return model.to(memory_format=torch.channels_last) if self._recipe.channels_last else model

    def _score(self, model: torch.nn.Module, *, whole: bool = False) -> float:
        """Accuracy on the scoring images (``whole``: on the whole test split)."""
        config = self._recipe
        return evaluate(model, self.dataset if whole else self.scoring, channels_last=config.channels_last,
                        threads=config.threads)

    def finetune(self, arch: Arch, checkpoint: str, fmt: NumberFormat, *, workdir: Path,
                 callbacks: Sequence[Callable] = ()) -> Finetuned:
        """Fine-tune one trained model with its weights in ``fmt``."""
        from iotnas.precision.finetune import finetune_in_format

        model = load_trained(checkpoint, arch=arch).model.train()
        base = recipe_for(self.study, self.study.precision.finetune_epochs)
        config = dataclasses.replace(base, lr=base.lr / 10, warmup_epochs=0.0)  # a gentle nudge, not a retraining
        accuracy, path = finetune_in_format(model, self.dataset, fmt, config, workdir=workdir, seed=self.study.seed,
                                            meta={"arch": arch.to_json()}, callbacks=callbacks)
        return Finetuned(accuracy, path, storage_bytes(fmt, model))


_Item = TypeVar("_Item")


class JobClaims(Protocol):
    """How a worker shares the stage's units with other workers of the study (the search's Coordinator)."""

    def claim_job(self, name: str) -> bool: ...
    def job_done(self, name: str) -> bool: ...
    def job_heartbeat(self, name: str) -> AbstractContextManager[object]: ...
    def finish_job(self, name: str) -> None: ...
    def release_job(self, name: str) -> None: ...
    def wait(self) -> None: ...


def run_precision_stage(
    study: Study, store: Store, runner: PrecisionRunner, *, workdir: Callable[[str], Path],
    emit: Callable[..., None], claims: JobClaims, epochs: float | None = None, finetune: bool = True,
) -> list[Training]:
    """Each model at one fidelity in every format of the study; then the best fine-tuned.

    Each model's formats, and each (model, format) fine-tuning, is a job claimed by one worker
    (``claims``), so that several workers share the stage; a worker waits for the others' jobs
    before it chooses what to fine-tune, so that every worker chooses from the same results.

    Args:
        workdir: the folder of a model's files, by model key.
        emit: ``emit(message, completed=None, total=None, detail=None)`` reports progress.
        epochs: the fidelity whose models are evaluated (default: the highest any training reached).
        finetune: ``False`` only scores the formats (the final stage chooses from those scores).

    Returns:
        The trainings whose checkpoint was needed but is missing or damaged: they are marked
        failed in the store, to be trained again before this stage runs once more.
    """
    from iotnas.results.points import study_points
    from iotnas.results.winners import WinnerRule, winners

    done = store.trainings(status=TrainingStatus.DONE)
    if not done:
        return []
    top = max(t.epochs for t in done) if epochs is None else epochs
    models = [t for t in done if t.epochs == top and t.checkpoint]
    candidates = {c.key: c for c in store.candidates()}
    lost: list[Training] = []

    def taken_back(training: Training) -> bool:
        """Whether the training is no longer the finished one this stage read: another worker found
        its checkpoint lost and may be training it again, so its files are that worker's."""
        now = store.training(training.arch_key, training.epochs)
        return now is None or now.status != TrainingStatus.DONE or now.checkpoint != training.checkpoint

    def still_done(training: Training) -> None:
        if taken_back(training):
            raise CheckpointError(f"{training.arch_key} is being trained again by another worker")

    def retrain(training: Training, exc: CheckpointError) -> None:
        lost.append(training)
        if taken_back(training):
            return  # marked by another worker already
        emit(f"{training.arch_key}: its checkpoint cannot be read ({exc}); it will be trained again")
        damaged = Path(training.checkpoint)
        if damaged.exists():  # kept for a look, out of the way of the new training; never over an older one
            n = 0
            while (aside := damaged.with_name(damaged.name + (".damaged" if n == 0 else f".damaged{n}"))).exists():
                n += 1
            damaged.rename(aside)
        store.fail_training(training.arch_key, training.epochs)

    def score_formats(i: int, training: Training) -> None:
        still_done(training)
        emit(f"number formats of {training.arch_key}", i, len(models))
        stored = store.precision_results()
        mine = [r for r in stored if r.arch_key == training.arch_key and r.epochs == top and not r.finetuned]
        arch = Arch.from_json(candidates[training.arch_key].arch_json)

        def evaluated(name: str, accuracy: float, weight_bytes: int, n: int) -> None:
            store.add_precision(PrecisionResult(  # at once: a model's grid takes minutes
                arch_key=training.arch_key, epochs=top, format_name=name, bits=parse_format(name).bits,
                weight_bytes=weight_bytes, accuracy=accuracy, finetuned=False, checkpoint=training.checkpoint,
                test_images=runner.test_images,
            ))
            emit(f"number formats of {training.arch_key}: {name} {accuracy * 100:.1f} % ({n} evaluated)",
                 i, len(models))

        found = runner.evaluate(arch, training.checkpoint, known={r.format_name: r.accuracy for r in mine},
                                known_bytes={r.format_name: r.weight_bytes for r in mine},
                                known_skipped={k.format_name: k.reason for k in store.skipped_formats()
                                               if k.arch_key == training.arch_key and k.epochs == top},
                                on_result=evaluated)
        for name, why in found.skipped.items():  # add_skipped keeps one already recorded
            store.add_skipped(SkippedFormat(arch_key=training.arch_key, epochs=top, format_name=name, reason=why))

    jobs = [(f"number formats of {t.arch_key} at {top:g} epochs [{runner.settings_tag}]", t) for t in models]
    if not _share(jobs, claims, score_formats, retrain=retrain, emit=emit,
                  waiting="waiting for other workers' number formats"):
        return lost
    if models:
        emit("number formats: every model evaluated", len(models), len(models))
    rule = WinnerRule.of(study)
    if runner.test_images is not None:
        _rescore_winner(store, runner, rule, candidates=candidates, emit=emit, retrain=retrain)
    if not finetune or not runner.finetune_formats or lost:
        return lost
    points = study_points(store, limits=study.constraints, finetuned=False)
    plain = winners(points, rule=rule)
    by_key = {t.arch_key: t for t in models}
    chosen = [p.key for p in plain if p.key in by_key][: study.precision.finetune_top]
    over = {(p.key, p.format_name) for p in points if not p.feasible}  # a fine-tuning there could never be chosen
    pairs = [(key, fmt) for key in chosen for fmt in runner.finetune_formats if (key, fmt.name) not in over]

    def finetune_one(j: int, pair: tuple[str, NumberFormat]) -> None:
        key, fmt = pair
        if any(r.arch_key == key and r.epochs == top and r.format_name == fmt.name and r.finetuned
               for r in store.precision_results()):
            return
        still_done(by_key[key])
        emit(f"fine-tuning {key} in {fmt.name}", j, len(pairs))
        result = runner.finetune(
            Arch.from_json(candidates[key].arch_json), by_key[key].checkpoint, fmt,
            workdir=workdir(key) / f"finetune-{fmt.name}",
            callbacks=(lambda stats: emit(f"fine-tuning {key} in {fmt.name}", j, len(pairs), stats),),
        )
        store.add_precision(PrecisionResult(
            arch_key=key, epochs=top, format_name=fmt.name, bits=fmt.bits, weight_bytes=result.weight_bytes,
            accuracy=result.accuracy, finetuned=True, checkpoint=result.checkpoint,
        ))
        emit(f"fine-tuned {key} in {fmt.name}: {result.accuracy * 100:.1f} %", j + 1, len(pairs))

    _share([(f"fine-tuning {key} at {top:g} epochs in {fmt.name}", (key, fmt)) for key, fmt in pairs], claims,
           finetune_one,
           retrain=lambda pair, exc: retrain(by_key[pair[0]], exc), emit=emit,
           waiting="waiting for other workers' fine-tunings")
    return lost


def _share(jobs: Sequence[tuple[str, _Item]], claims: JobClaims, work: Callable[[int, _Item], None], *,
           retrain: Callable[[_Item, CheckpointError], None], emit: Callable[..., None], waiting: str) -> bool:
    """Do every job this worker can claim, then wait until the others' are done too.

    Returns False when a checkpoint was lost (``retrain`` was told; its job is given back, for
    whoever runs the stage again after the training).
    """
    pending = dict.fromkeys(range(len(jobs)))
    intact = True
    while pending:
        progressed = False
        for i in list(pending):
            name, item = jobs[i]
            if claims.job_done(name):
                del pending[i]
                continue
            if not claims.claim_job(name):
                continue  # another live worker holds it
            try:
                with claims.job_heartbeat(name):
                    work(i, item)
            except CheckpointError as exc:
                claims.release_job(name)
                retrain(item, exc)
                intact = False
            except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: what it stored stays, the job is free
                claims.release_job(name)
                raise
            else:
                claims.finish_job(name)
            del pending[i]
            progressed = True
        if pending and not progressed:
            emit(waiting)
            claims.wait()
    return intact


def _rescore_winner(store: Store, runner: PrecisionRunner, rule: WinnerRule, *, candidates: dict[str, Candidate],
                    emit: Callable[..., None], retrain: Callable[[Training, CheckpointError], None]) -> None:
    """Score the study's winner on the whole test split too, beside the subset figure it was ranked by.

    Formats are ranked on ``[precision] test_images`` (like with like); the winner's reported figure
    is the whole split's. A checkpoint that cannot be read goes to ``retrain``.
    """
    from iotnas.results.points import study_points
    from iotnas.results.winners import winners

    ranked = winners(study_points(store, limits=runner.study.constraints, finetuned=False), rule=rule)
    if not ranked or ranked[0].test_images is None or ranked[0].full_accuracy is not None:
        return
    first = ranked[0]
    training = next(t for t in store.trainings(status=TrainingStatus.DONE)
                    if (t.arch_key, t.epochs) == (first.key, first.epochs))
    emit(f"winner {first.key} in {first.format_name}: scoring on every test image")
    try:
        accuracy = runner.rescore(Arch.from_json(candidates[first.key].arch_json), training.checkpoint,
                                  parse_format(first.format_name))
    except CheckpointError as exc:
        retrain(training, exc)
        return
    store.set_full_accuracy(first.key, first.epochs, first.format_name, finetuned=False, accuracy=accuracy)
    emit(f"winner {first.key} in {first.format_name}: {accuracy * 100:.1f} % on every test image "
         f"({first.accuracy * 100:.1f} % on {first.test_images})")
