"""Training: a fast whole-batch pipeline, multi-fidelity budgets, atomic checkpoints and exact resume.

>>> result = train(model, dataset, TrainConfig(epochs=2), checkpoint_dir="runs/m", seed=0)
>>> result.test_accuracy
"""

from iotnas.train._checkpoint import Checkpoint
from iotnas.train._checkpoint import load as load_checkpoint
from iotnas.train._config import EpochStats, TrainConfig, TrainResult, recipe_for
from iotnas.train._loop import check_batches, check_model_input, evaluate, train
from iotnas.train._trained import TrainedModel, load_trained, rebuild

__all__ = [
    "Checkpoint", "EpochStats", "TrainConfig", "TrainResult", "TrainedModel",
    "check_batches", "check_model_input", "evaluate", "load_checkpoint", "load_trained", "rebuild", "recipe_for", "train",
]  # fmt: skip
