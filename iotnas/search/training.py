"""Train mode's evaluator: real training on the study's dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from iotnas.arch import Arch
from iotnas.data import Dataset, load_dataset
from iotnas.errors import ConfigError
from iotnas.search.components import Evaluation
from iotnas.spaces import build
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


class TrainingEvaluator:
    """Trains a candidate on the study's dataset; a higher fidelity continues the lower one's checkpoint."""

    def __init__(self, study: Study, dataset: Dataset):
        from iotnas.train import check_batches, recipe_for

        self.study = study
        self.dataset = dataset
        check_batches(dataset, recipe_for(study, 1.0))  # before a store or a run folder is made

    def evaluate(self, arch: Arch, epochs: float, *, workdir: Path, callbacks: Sequence[Callable] = ()) -> Evaluation:
        from iotnas.train import recipe_for, train

        model = build(arch, num_classes=self.dataset.num_classes, in_channels=self.dataset.in_channels,
                      seed=self.study.seed)  # same initial weights on every (re)start
        result = train(
            model, self.dataset, recipe_for(self.study, epochs), checkpoint_dir=workdir, resume=True,
            callbacks=callbacks, seed=self.study.seed, meta={"arch": arch.to_json()},
        )
        checkpoint = None if result.checkpoint is None else str(result.checkpoint)
        return Evaluation(float(result.test_accuracy), checkpoint, float(result.resumed_from_epochs))


__all__ = ["TrainingEvaluator", "load_study_dataset"]
