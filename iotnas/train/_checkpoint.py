"""Checkpoints: written atomically, read with ``weights_only=True`` (no pickle code execution)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from iotnas.errors import CheckpointError

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pt"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Everything needed to continue a training, or to rebuild and evaluate its model."""

    model: dict  # state dict of the trained weights
    optimizer: dict  # SGD state (momentum buffers)
    ema: dict | None  # state dict of the weight average, when ema_decay > 0
    step: int  # optimiser steps done
    steps_per_epoch: int
    plan: dict  # the learning-rate plan in force (see _schedule.Plan)
    seed: int
    config: dict  # TrainConfig.to_dict() of the run that wrote it
    dataset: dict  # name, n_train, num_classes, in_channels, mean, std of the data it was trained on
    meta: dict  # caller's description of the model, e.g. {"arch": "<Arch JSON>"}
    test_accuracy: float | None  # at the time of writing, if evaluated

    @property
    def epochs_done(self) -> float:
        return self.step / self.steps_per_epoch

    def final_weights(self) -> dict:
        """The weights to evaluate: the average when one was kept, else the trained weights."""
        return self.ema if self.ema is not None else self.model


def save(path: Path, ckpt: Checkpoint) -> None:
    """Write to a temporary file in the same folder, then rename over ``path`` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_VERSION, **{k: getattr(ckpt, k) for k in Checkpoint.__slots__}}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path | str) -> Checkpoint:
    """Read a checkpoint file (or ``<folder>/checkpoint.pt``).

    Raises:
        CheckpointError: missing, unreadable, or not an iotnas checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; give a checkpoint.pt file or the folder holding one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many kinds (IndexError, TypeError, ...) on a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}); it is damaged or not from iotnas") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an iotnas checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'}, expected {FORMAT_VERSION})")
    try:
        return Checkpoint(**{k: payload[k] for k in Checkpoint.__slots__})
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint lacks {exc}; it is incomplete or from another version") from exc
