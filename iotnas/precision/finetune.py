"""Format-aware fine-tuning: train briefly with weights rounded to the target format.

The forward pass sees every floating-point parameter rounded to the format
(straight-through gradient: the rounding is treated as the identity backwards),
so the network adapts to the values it will really store. The result is saved
as a new checkpoint; the plain training's checkpoint is never touched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from iotnas.data import Dataset
from iotnas.formats import NumberFormat
from iotnas.precision.emulate import ste_round

FINETUNED_FILE = "finetuned.pt"


class _StoredAs(nn.Module):
    """Parametrization: the parameter as the format stores it, identity gradient."""

    def __init__(self, fmt: NumberFormat):
        super().__init__()
        self.fmt = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_round(x, self.fmt)


def finetune_in_format(
    model: nn.Module, dataset: Dataset, fmt: NumberFormat, config, *, workdir: Path, seed: int,
    meta: dict, callbacks: Sequence[Callable] = (),
) -> tuple[float, str]:
    """Fine-tune ``model`` (trained weights loaded) for ``config.epochs`` with weights stored in ``fmt``.

    Returns:
        (test accuracy with the weights in ``fmt``, path of the fine-tuned checkpoint).
    """
    from iotnas.export import deploy
    from iotnas.train import evaluate, load_checkpoint, train
    from iotnas.train._checkpoint import save

    targets = [(m, name) for m in model.modules() for name, p in m.named_parameters(recurse=False)
               if p.is_floating_point()]
    for module, name in targets:
        parametrize.register_parametrization(module, name, _StoredAs(fmt))
    result = train(model, dataset, config, checkpoint_dir=workdir, resume=True, callbacks=callbacks, seed=seed,
                   meta=meta)
    for module, name in targets:
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    accuracy = evaluate(deploy(model, fmt).module, dataset)  # as deployed: BatchNorm folded, then rounded
    # A plain checkpoint (no parametrization keys), loadable like any trained model's.
    ckpt = load_checkpoint(result.checkpoint)
    final = workdir / FINETUNED_FILE
    save(final, dataclasses.replace(ckpt, model=model.state_dict(), ema=None, optimizer={},
                                    meta={**meta, "format": fmt.name}, test_accuracy=accuracy))
    return accuracy, str(final)
