"""A trained model rebuilt from its checkpoint: the one way precision, export and eval get one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from torch import nn

from iotnas.arch import Arch
from iotnas.errors import CheckpointError, ConfigError
from iotnas.train._checkpoint import Checkpoint
from iotnas.train._checkpoint import load as load_checkpoint


@dataclass(frozen=True, slots=True)
class TrainedModel:
    arch: Arch
    model: nn.Module  # in eval mode, holding the checkpoint's final weights
    checkpoint: Checkpoint


def rebuild(arch: Arch, weights: Mapping, *, num_classes: int, in_channels: int) -> nn.Module:
    """``arch`` built for this geometry with ``weights`` loaded (strictly), in eval mode.

    Raises:
        CheckpointError: the weights do not fit the architecture.
    """
    from iotnas.spaces import build

    model = build(arch, num_classes=num_classes, in_channels=in_channels)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit {arch.key}: {exc}") from None
    return model.eval()


def load_trained(checkpoint: str | Path, *, arch: Arch | None = None) -> TrainedModel:
    """The trained network of a checkpoint (its weight average, when training kept one).

    The architecture is the one the checkpoint records, unless ``arch`` is given; the
    geometry (classes, input channels) is that of the data it was trained on.

    Raises:
        CheckpointError: unreadable, naming no architecture, or not fitting it.
    """
    ckpt = load_checkpoint(checkpoint)
    if arch is None:
        if "arch" not in ckpt.meta:
            raise CheckpointError(f"{checkpoint}: the checkpoint does not say which architecture it holds; "
                                  "it was not written by iotnas training")
        try:
            arch = Arch.from_json(ckpt.meta["arch"])
        except ConfigError as exc:  # ArchError and the unknown space or law errors
            raise CheckpointError(f"{checkpoint}: the recorded architecture is not valid ({exc})") from None
    model = rebuild(arch, ckpt.final_weights(), num_classes=int(ckpt.dataset["num_classes"]),
                    in_channels=int(ckpt.dataset["in_channels"]))
    return TrainedModel(arch=arch, model=model, checkpoint=ckpt)
