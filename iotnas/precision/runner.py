"""The search's precision stage: every top-fidelity model evaluated in every study format, the best fine-tuned.

Every result is stored as soon as it exists; a resumed stage reuses what the store holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from iotnas.arch import Arch
from iotnas.data import Dataset
from iotnas.formats import NumberFormat, parse_format, storage_bytes
from iotnas.precision.grid import GridSpec, evaluate_model_formats
from iotnas.errors import CheckpointError
from iotnas.store import PrecisionResult, Store, Training, TrainingStatus
from iotnas.study import Study
from iotnas.train import evaluate, load_trained, recipe_for


@dataclass(frozen=True, slots=True)
class PrecisionEvaluation:
    """One model in the study's formats (and the grid's bisection path)."""

    accuracy: dict[str, float]  # by format name
    weight_bytes: dict[str, int]  # by format name, integer formats' scales included
    evaluations: int  # new evaluations made (stored ones are reused)


@dataclass(frozen=True, slots=True)
class Finetuned:
    """One model after format-aware fine-tuning."""

    accuracy: float  # with its weights in the format
    checkpoint: str  # the fine-tuned model's own checkpoint
    weight_bytes: int


class PrecisionRunner:
    """Evaluates trained models in narrower formats, and fine-tunes them format-aware."""

    def __init__(self, study: Study, dataset: Dataset):
        spec = study.precision
        self.study = study
        self.dataset = dataset
        self.formats = [parse_format(name) for name in study.formats]
        self.grid = GridSpec(spec.exp_bits, spec.man_bits, spec.tolerance) if spec.grid else None
        names = spec.finetune_formats or tuple(f.name for f in self.formats if f.name != "float32")
        self.finetune_formats = [parse_format(name) for name in names] if spec.finetune_epochs > 0 else []

    def evaluate(self, arch: Arch, checkpoint: str, *, known: dict[str, float], known_bytes: dict[str, int],
                 progress: Callable[[str, float, int], None] | None = None) -> PrecisionEvaluation:
        """Accuracy and weight bytes of one trained model per format; ``known`` results are reused.

        The checkpoint is read only when some format has not been evaluated yet. ``progress`` is
        called after each evaluation (see :func:`evaluate_model_formats`).

        Raises:
            CheckpointError: the checkpoint is needed but missing or damaged.
        """
        # The training recipe's layout and thread count: NHWC halves the time of each of the ~20
        # evaluations here, and the model is converted before any format swaps its stored values.
        config = recipe_for(self.study, 1.0)

        def load() -> torch.nn.Module:
            model = load_trained(checkpoint, arch=arch).model
            return model.to(memory_format=torch.channels_last) if config.channels_last else model

        def accuracy_of(m: torch.nn.Module) -> float:
            return evaluate(m, self.dataset, channels_last=config.channels_last, threads=config.threads)

        found = evaluate_model_formats(load, accuracy_of, formats=self.formats, grid=self.grid, known=known,
                                       progress=progress)
        sizes = {name: known_bytes[name] if name in known_bytes else storage_bytes(parse_format(name), found.model)
                 for name in found.accuracy}
        return PrecisionEvaluation(found.accuracy, sizes, found.evaluations)

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


def run_precision_stage(
    study: Study, store: Store, runner: PrecisionRunner, *, workdir: Callable[[str], Path],
    emit: Callable[..., None], epochs: float | None = None, finetune: bool = True,
) -> list[Training]:
    """Each model at one fidelity in every format of the study; then the best fine-tuned.

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
    from iotnas.results.winners import winners

    done = store.trainings(status=TrainingStatus.DONE)
    if not done:
        return []
    top = max(t.epochs for t in done) if epochs is None else epochs
    models = [t for t in done if t.epochs == top and t.checkpoint]
    stored = store.precision_results()
    candidates = {c.key: c for c in store.candidates()}
    lost: list[Training] = []

    def retrain(training: Training, exc: CheckpointError) -> None:
        emit(f"{training.arch_key}: its checkpoint cannot be read ({exc}); it will be trained again")
        damaged = Path(training.checkpoint)
        if damaged.exists():  # kept for a look, out of the way of the new training; never over an older one
            n = 0
            while (aside := damaged.with_name(damaged.name + (".damaged" if n == 0 else f".damaged{n}"))).exists():
                n += 1
            damaged.rename(aside)
        store.fail_training(training.arch_key, training.epochs)
        lost.append(training)

    for i, training in enumerate(models):
        emit(f"number formats of {training.arch_key}", i, len(models))
        mine = [r for r in stored if r.arch_key == training.arch_key and r.epochs == top and not r.finetuned]
        arch = Arch.from_json(candidates[training.arch_key].arch_json)

        def evaluated(name: str, accuracy: float, n: int, key: str = training.arch_key, i: int = i) -> None:
            emit(f"number formats of {key}: {name} {accuracy * 100:.1f} % ({n} evaluated)", i, len(models))

        try:
            found = runner.evaluate(arch, training.checkpoint, known={r.format_name: r.accuracy for r in mine},
                                    known_bytes={r.format_name: r.weight_bytes for r in mine}, progress=evaluated)
        except CheckpointError as exc:
            retrain(training, exc)
            continue
        known = {r.format_name for r in mine}
        for name, accuracy in found.accuracy.items():
            if name not in known:
                store.add_precision(PrecisionResult(
                    arch_key=training.arch_key, epochs=top, format_name=name, bits=parse_format(name).bits,
                    weight_bytes=found.weight_bytes[name], accuracy=accuracy, finetuned=False,
                    checkpoint=training.checkpoint,
                ))
    if models:
        emit("number formats: every model evaluated", len(models), len(models))
    if not finetune or not runner.finetune_formats or lost:
        return lost
    plain = winners(study_points(store, limits=study.constraints, finetuned=False))
    by_key = {t.arch_key: t for t in models}
    chosen = [p.key for p in plain if p.key in by_key][: study.precision.finetune_top]
    finetuned = {(r.arch_key, r.format_name) for r in store.precision_results() if r.finetuned}
    jobs = len(chosen) * len(runner.finetune_formats)  # (model, format) pairs, for the progress counts
    for m, key in enumerate(chosen):
        arch = Arch.from_json(candidates[key].arch_json)
        for f, fmt in enumerate(runner.finetune_formats):
            if (key, fmt.name) in finetuned:
                continue
            j = m * len(runner.finetune_formats) + f
            emit(f"fine-tuning {key} in {fmt.name}", j, jobs)
            try:
                result = runner.finetune(
                    arch, by_key[key].checkpoint, fmt, workdir=workdir(key) / f"finetune-{fmt.name}",
                    callbacks=(lambda stats, k=key, n=fmt.name, j=j: emit(f"fine-tuning {k} in {n}", j, jobs, stats),),
                )
            except CheckpointError as exc:
                retrain(by_key[key], exc)
                return lost
            store.add_precision(PrecisionResult(
                arch_key=key, epochs=top, format_name=fmt.name, bits=fmt.bits, weight_bytes=result.weight_bytes,
                accuracy=result.accuracy, finetuned=True, checkpoint=result.checkpoint,
            ))
            emit(f"fine-tuned {key} in {fmt.name}: {result.accuracy * 100:.1f} %", j + 1, jobs)
    return lost
