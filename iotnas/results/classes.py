"""How many classes a study's models tell apart, read from the store (the chance-level rule needs it)."""

from __future__ import annotations

from iotnas.errors import CheckpointError
from iotnas.store import Store, TrainingStatus
from iotnas.study import Study

#: The released models were trained on CIFAR-10.
RELEASED_CLASSES = 10


def study_classes(store: Store, study: Study | None = None) -> int | None:
    """The study's class count: ``[data] num_classes`` when the study gives it, else the header of a
    trained checkpoint (the data the model learned from); None when neither is known.

    ``study`` defaults to the stored one; a tabular study's models are the released CIFAR-10 ones.
    """
    study = study if study is not None else store.study()
    if study is not None and study.data.num_classes is not None:
        return study.data.num_classes
    if study is not None and study.mode == "tabular":
        return RELEASED_CLASSES
    from iotnas.train import load_checkpoint

    for training in store.trainings(status=TrainingStatus.DONE):
        if not training.checkpoint:
            continue
        try:
            return int(load_checkpoint(training.checkpoint).dataset["num_classes"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            continue  # a damaged or foreign checkpoint says nothing; try the next one
    return None
