"""The training recipe and the values training reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from iotnas.errors import TrainingError


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train; the defaults are the recipe measured in BENCHMARKS.md (## Training).

    Fields marked *recipe* define the training trajectory: a checkpoint resumes only under the
    same recipe. The others (budget, evaluation, threads) may change between runs.
    """

    epochs: float = 10.0  # budget, in passes over the train split; fractional allowed
    batch_size: int = 128  # images per step; on CPU, per-image speed falls for larger batches (cache) (recipe)
    lr: float = 0.2  # peak learning rate for SGD-Nesterov at this batch size (recipe)
    momentum: float = 0.9  # Nesterov momentum (recipe)
    weight_decay: float = 5e-4  # L2 on conv and linear weights; BatchNorm and biases get none (recipe)
    label_smoothing: float = 0.1  # fraction of the target mass spread over all classes (recipe)
    warmup_fraction: float = 0.2  # linear warm-up from 0 to lr over this fraction of the budget, then linear
    #   decay to 0: every budget, even a 1-epoch rung, warms up and decays (recipe)
    warmup_epochs: float | None = None  # a fixed warm-up in epochs instead of a fraction (recipe)
    crop_padding: int = 2  # pixels: random translation by up to this many pixels, reflect-padded (recipe)
    flip: bool | None = None  # horizontal flips; None = where the dataset allows them (recipe)
    alternating_flip: bool = True  # flip each image on alternate epochs instead of at random (recipe)
    ema_decay: float = 0.0  # per-step decay of an exponential moving average of the weights; 0 = off (recipe)
    distill_weight: float = 0.0  # share of the loss taken from a teacher's softened outputs; 0 = off, and
    #   above 0 train() needs a teacher (knowledge distillation: small networks learn more from it) (recipe)
    distill_temperature: float = 4.0  # softens teacher and student outputs for that loss term (recipe)
    tta: bool = False  # test-time augmentation: average the predictions for an image and its mirror image
    eval_every: int = 0  # evaluate on the test split every this many epochs (0 = only at the end)
    channels_last: bool = True  # NHWC memory layout for activations and weights (1.8-2x faster on CPU here)
    threads: int | None = None  # torch intra-op threads during training; None = every core this process may use

    RECIPE = (
        "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "warmup_fraction", "warmup_epochs",
        "crop_padding", "flip", "alternating_flip", "ema_decay", "distill_weight", "distill_temperature",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self._check_types()
        checks = [
            (self.epochs > 0, "epochs must be positive"),
            (self.batch_size >= 2, "batch_size must be at least 2 (BatchNorm needs two images)"),
            (self.batch_size <= 65_536, "batch_size must be at most 65,536"),
            (self.epochs <= 10_000, "epochs must be at most 10,000"),
            (self.lr > 0, "lr must be positive"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
            (self.warmup_epochs is None or self.warmup_epochs >= 0, "warmup_epochs must be non-negative"),
            (0 <= self.crop_padding <= 8, "crop_padding must be 0..8 pixels"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (0 <= self.distill_weight <= 1, "distill_weight must be in [0, 1]"),
            (self.distill_temperature > 0, "distill_temperature must be positive"),
            (self.eval_every >= 0, "eval_every must be non-negative"),
            (self.threads is None or 1 <= self.threads <= 1024, "threads must be 1..1024"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(f"invalid TrainConfig: {message}")

    def _check_types(self) -> None:
        """Each setting of its declared type (a TOML string "0.1" or a 64.5 batch is refused, not coerced)."""
        for f in fields(self):
            value = getattr(self, f.name)
            kinds = f.type.replace(" ", "").split("|")
            if value is None and "None" in kinds:
                continue
            kind = kinds[0]
            if kind == "bool":
                ok, expected = isinstance(value, bool), "true or false"
            elif kind == "int":
                ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                expected = "a finite number"
            if not ok:
                raise TrainingError(f"invalid training setting {f.name}: expected {expected}, got {value!r}")

    def warmup_steps(self, total_steps: int, steps_per_epoch: int) -> int:
        """Warm-up length of a plan that ends after ``total_steps``."""
        if self.warmup_epochs is not None:
            return round(self.warmup_epochs * steps_per_epoch)
        return round(self.warmup_fraction * total_steps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(f"unknown training setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class EpochStats:
    """Progress after one epoch (or the last, partial one), passed to every callback."""

    epoch: int  # 1-based index of the epoch just finished
    epochs_done: float  # progress in epochs since the start of training (fractional at a partial end)
    total_epochs: float  # the budget of this run
    loss: float  # mean training loss over the epoch (label-smoothed cross-entropy)
    train_accuracy: float  # fraction of augmented training images classified right during the epoch
    test_accuracy: float | None  # fraction of the test split, when evaluated this epoch
    images_per_s: float  # training throughput over the epoch (evaluation excluded)
    seconds: float  # wall time of the epoch, evaluation included
    lr: float  # learning rate at the end of the epoch
    resumed_from_epochs: float = 0.0  # progress found in the checkpoint: not trained by this run


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a call to :func:`iotnas.train.train` achieved."""

    test_accuracy: float  # fraction of the test split classified right by the final weights
    epochs_done: float  # progress in epochs, counting earlier runs resumed from
    steps_done: int  # optimiser steps, counting earlier runs
    resumed_from_epochs: float  # progress found in the checkpoint (0.0 for a fresh start)
    seconds: float  # wall time of this call
    images_per_s: float  # training throughput of this call (0.0 when nothing was left to train)
    history: tuple[EpochStats, ...]  # the epochs trained in this call
    checkpoint: Path | None  # where the final state is, if a checkpoint folder was given


def recipe_for(study, epochs: float) -> TrainConfig:
    """The training recipe of a study (its ``[training]`` table) at one fidelity.

    The thread count defaults to the worker's share of the cores (``[workers] threads``, set by
    ``--workers``), else the cores this process may use; fixed for the run (not chosen from the
    machine's load).

    Raises:
        ConfigError: the ``[training]`` table names an unknown setting or a bad value.
    """
    import os

    from iotnas.errors import ConfigError

    threads = study.workers.threads or len(os.sched_getaffinity(0))
    settings = {"threads": threads, **study.training, "epochs": float(epochs)}
    try:
        return TrainConfig.from_dict(settings)
    except TrainingError as exc:
        raise ConfigError(f"training: {exc}") from None
