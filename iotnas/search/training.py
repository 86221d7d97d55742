"""Train mode's components: real training on the study's dataset, latency from the device.

The workflow reaches the training and calibration stages only through these
adapters, so the stages never import each other.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from iotnas.arch import Arch
from iotnas.data import Dataset, load_dataset
from iotnas.errors import ConfigError, TrainingError
from iotnas.spaces import build
from iotnas.store import Latency
from iotnas.study import Study


def load_study_dataset(study: Study) -> Dataset:
    """The study's dataset (a name, or a path relative to the study file), limited if asked."""
    spec = study.data.dataset
    location = spec if spec in ("digits",) else str(study.resolve(spec))
    dataset = load_dataset(location, layout=study.data.layout)
    if study.data.num_classes is not None and study.data.num_classes != dataset.num_classes:
        raise ConfigError(
            f"data.num_classes: the study says {study.data.num_classes} but {dataset.describe()}; "
            "fix the study or drop the key"
        )
    if study.data.limit is not None:
        dataset = dataset.subset(train=study.data.limit)
    return dataset


def train_config(study: Study, epochs: float):
    """The training recipe of a study at one fidelity."""
    from iotnas.train import TrainConfig

    # A fixed thread count (not one chosen from the machine's load) keeps resumed trainings bit-exact.
    settings = {"threads": len(os.sched_getaffinity(0)), **study.training, "epochs": float(epochs)}
    try:
        return TrainConfig.from_dict(settings)
    except TrainingError as exc:
        raise ConfigError(f"training: {exc}") from None


class TrainingEvaluator:
    """Trains a candidate on the study's dataset; a higher fidelity continues the lower one's checkpoint."""

    def __init__(self, study: Study, dataset: Dataset):
        self.study = study
        self.dataset = dataset
        train_config(study, 1.0)  # validate the recipe before any work

    def evaluate(self, arch: Arch, epochs: float, *, workdir: Path,
                 callbacks: Sequence[Callable] = ()) -> tuple[float, str | None, float]:
        from iotnas.train import train

        model = build(arch, num_classes=self.dataset.num_classes, in_channels=self.dataset.in_channels,
                      seed=self.study.seed)  # same initial weights on every (re)start
        result = train(
            model, self.dataset, train_config(self.study, epochs), checkpoint_dir=workdir, resume=True,
            callbacks=callbacks, seed=self.study.seed, meta={"arch": arch.to_json()},
        )
        checkpoint = None if result.checkpoint is None else str(result.checkpoint)
        return float(result.test_accuracy), checkpoint, float(result.resumed_from_epochs)


class PrecisionRunner:
    """Evaluates trained models in narrower formats, and fine-tunes them format-aware."""

    def __init__(self, study: Study, dataset: Dataset):
        from iotnas.search.precision import GridSpec, check_formats

        spec = study.precision
        self.study = study
        self.dataset = dataset
        self.formats = check_formats(study.formats)
        self.grid = GridSpec(spec.exp_bits, spec.man_bits, spec.tolerance) if spec.grid else None
        names = spec.finetune_formats or tuple(f.name for f in self.formats if f.name != "float32")
        self.finetune_formats = check_formats(names) if spec.finetune_epochs > 0 else []

    def evaluate(self, arch: Arch, checkpoint: str, *, known: dict[str, float]) -> tuple[dict[str, float], dict[str, int], int]:
        """Accuracy and weight bytes per format; returns (accuracy, bytes, new evaluations)."""
        from iotnas.formats import parse_format
        from iotnas.search.precision import evaluate_model_formats, load_trained, weight_bytes_in
        from iotnas.train import evaluate

        # The training recipe's layout and thread count: NHWC halves the time of each of the ~20
        # evaluations here, and the model is converted before any format swaps its stored values.
        config = train_config(self.study, 1.0)
        model = load_trained(checkpoint, arch, self.dataset)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)

        def accuracy_of(m: torch.nn.Module) -> float:
            return evaluate(m, self.dataset, channels_last=config.channels_last, threads=config.threads)

        accuracy, n = evaluate_model_formats(model, accuracy_of, formats=self.formats, grid=self.grid, known=known)
        sizes = {name: weight_bytes_in(parse_format(name), model) for name in accuracy}
        return accuracy, sizes, n

    def finetune(self, arch: Arch, checkpoint: str, fmt, *, workdir: Path,
                 callbacks: Sequence[Callable] = ()) -> tuple[float, str, int]:
        """Fine-tune in ``fmt``; returns (accuracy in fmt, checkpoint, weight bytes)."""
        from iotnas.search.finetune import finetune_in_format
        from iotnas.search.precision import load_trained, weight_bytes_in

        model = load_trained(checkpoint, arch, self.dataset).train()
        base = train_config(self.study, self.study.precision.finetune_epochs)
        config = dataclasses.replace(base, lr=base.lr / 10, warmup_epochs=0.0)  # a gentle nudge, not a retraining
        accuracy, path = finetune_in_format(model, self.dataset, fmt, config, workdir=workdir, seed=self.study.seed,
                                            meta={"arch": arch.to_json()}, callbacks=callbacks)
        return accuracy, path, weight_bytes_in(fmt, model)


class MeasuredLatency:
    """Times each candidate when it is proposed, here or on a device agent (not cheap: ~1 s each)."""

    cheap = False

    def __init__(self, study: Study, dataset: Dataset):
        self.key = study.device.key
        self._device = study.device
        self._geometry = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
        self._client = None
        if study.device.kind == "agent":
            from iotnas.latency import AgentClient

            self._client = AgentClient.connect(study.device.url)

    def latency(self, arch: Arch) -> Latency:
        from iotnas.latency import measure_latency

        m = measure_latency(arch, runtime=self._device.runtime, threads=self._device.threads,
                            device=self._client, **self._geometry)
        return Latency(arch_key=arch.key, device_key=self.key, source="measured", median_ms=m.median_ms,
                       detail=m.to_dict())


class PredictedLatency:
    """Latency from a predictor calibrated on the device: cheap, so the whole pool is screened first."""

    cheap = True

    def __init__(self, study: Study):
        from iotnas.latency import LatencyPredictor

        self.key = study.device.key
        self._predictor = LatencyPredictor.load(study.resolve(study.device.predictor))

    def latency(self, arch: Arch) -> Latency:
        return Latency(arch_key=arch.key, device_key=self.key, source="predicted",
                       median_ms=float(self._predictor.predict(arch)), detail={})


def make_latency_source(study: Study, dataset: Dataset):
    if study.device.kind == "predictor":
        return PredictedLatency(study)
    if study.device.kind == "released":
        raise ConfigError("device.kind: \"released\" timings exist only for the released models; use mode = \"tabular\"")
    return MeasuredLatency(study, dataset)


__all__ = ["PrecisionRunner", "TrainingEvaluator", "MeasuredLatency", "PredictedLatency", "make_latency_source", "load_study_dataset"]
