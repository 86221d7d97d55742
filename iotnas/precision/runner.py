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
from iotnas.store import PrecisionResult, Store, TrainingStatus
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

    def evaluate(self, arch: Arch, checkpoint: str, *, known: dict[str, float]) -> PrecisionEvaluation:
        """Accuracy and weight bytes of one trained model per format; ``known`` accuracies are reused."""
        # The training recipe's layout and thread count: NHWC halves the time of each of the ~20
        # evaluations here, and the model is converted before any format swaps its stored values.
        config = recipe_for(self.study, 1.0)
        model = load_trained(checkpoint, arch=arch).model
        if config.channels_last:
            model.to(memory_format=torch.channels_last)

        def accuracy_of(m: torch.nn.Module) -> float:
            return evaluate(m, self.dataset, channels_last=config.channels_last, threads=config.threads)

        found = evaluate_model_formats(model, accuracy_of, formats=self.formats, grid=self.grid, known=known)
        sizes = {name: storage_bytes(parse_format(name), model) for name in found.accuracy}
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
    emit: Callable[..., None],
) -> None:
    """Each model at the top fidelity in every format of the study; then the best fine-tuned.

    Args:
        workdir: the folder of a model's files, by model key.
        emit: ``emit(message, completed=None, total=None, detail=None)`` reports progress.
    """
    from iotnas.results.points import study_points
    from iotnas.results.winners import winners

    done = store.trainings(status=TrainingStatus.DONE)
    if not done:
        return
    top = max(t.epochs for t in done)
    models = [t for t in done if t.epochs == top and t.checkpoint]
    stored = store.precision_results()
    candidates = {c.key: c for c in store.candidates()}
    for i, training in enumerate(models):
        emit(f"number formats of {training.arch_key}", i, len(models))
        known = {r.format_name: r.accuracy for r in stored
                 if r.arch_key == training.arch_key and r.epochs == top and not r.finetuned}
        arch = Arch.from_json(candidates[training.arch_key].arch_json)
        found = runner.evaluate(arch, training.checkpoint, known=known)
        for name, accuracy in found.accuracy.items():
            if name not in known:
                store.add_precision(PrecisionResult(
                    arch_key=training.arch_key, epochs=top, format_name=name, bits=parse_format(name).bits,
                    weight_bytes=found.weight_bytes[name], accuracy=accuracy, finetuned=False,
                    checkpoint=training.checkpoint,
                ))
    if not runner.finetune_formats:
        return
    plain = winners(study_points(store, limits=study.constraints, finetuned=False))
    checkpoints = {t.arch_key: t.checkpoint for t in models}
    chosen = [p.key for p in plain if p.key in checkpoints][: study.precision.finetune_top]
    finetuned = {(r.arch_key, r.format_name) for r in store.precision_results() if r.finetuned}
    for key in chosen:
        arch = Arch.from_json(candidates[key].arch_json)
        for fmt in runner.finetune_formats:
            if (key, fmt.name) in finetuned:
                continue
            emit(f"fine-tuning {key} in {fmt.name}")
            result = runner.finetune(
                arch, checkpoints[key], fmt, workdir=workdir(key) / f"finetune-{fmt.name}",
                callbacks=(lambda stats, k=key: emit(f"fine-tuning {k}", detail=stats),),
            )
            store.add_precision(PrecisionResult(
                arch_key=key, epochs=top, format_name=fmt.name, bits=fmt.bits, weight_bytes=result.weight_bytes,
                accuracy=result.accuracy, finetuned=True, checkpoint=result.checkpoint,
            ))
