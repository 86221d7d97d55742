"""Evaluate a torch model as if its numbers were stored in a reduced-precision format.

What is emulated: every floating-point parameter and buffer (conv and linear
weights and biases, BatchNorm weights, biases, running means and variances)
holds the value it would have after storage in the weight format; optionally,
every module's output is rounded to the activation format. What stays float32:
the arithmetic inside each layer (products, sums, BatchNorm's normalisation),
as on hardware that accumulates in a wider register; only stored values are
narrowed.

The model keeps one float32 master copy of its values while a format is
active and gets it back exactly afterwards, so formats can be swapped on the
same model without rebuilding it or holding a copy per format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from iotnas.errors import FormatError
from iotnas.formats import FloatFormat, NumberFormat, parse_format


class _RoundSTE(torch.autograd.Function):
    """Round in the forward pass; pass the gradient through unchanged (straight-through)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:  # noqa: ARG004
        return fmt.round(x).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


def ste_round(x: torch.Tensor, fmt: NumberFormat | str) -> torch.Tensor:
    """``fmt.round(x)`` whose gradient is the identity, for format-aware fine-tuning."""
    return _RoundSTE.apply(x, parse_format(fmt))


def _stored_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Floating-point parameters and buffers, each once (shared tensors included once)."""
    seen: set[int] = set()
    tensors = []
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            tensors.append(t)
    return tensors


def _round_output(fmt: NumberFormat, output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        if not output.is_floating_point():
            return output
        return ste_round(output, fmt) if output.requires_grad else fmt.round(output).to(output.dtype)
    if isinstance(output, tuple):
        items = [_round_output(fmt, o) for o in output]
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)  # namedtuple or tuple
    if isinstance(output, list):
        return [_round_output(fmt, o) for o in output]
    if isinstance(output, dict):
        return {k: _round_output(fmt, v) for k, v in output.items()}
    return output


@contextlib.contextmanager
def emulated(
    model: nn.Module,
    *,
    weights: NumberFormat | str | None = None,
    activations: FloatFormat | str | None = None,
) -> Iterator[nn.Module]:
    """Run ``model`` inside the block as if stored in ``weights``, computing with ``activations``.

    On exit (also on an exception) the exact original values come back and the
    hooks are removed. Contexts nest: the inner one starts from the outer one's values.

    Args:
        model: any module; changed in place, never rebuilt.
        weights: format of the stored numbers (``None``: leave them in float32).
        activations: float format every module output (leaf layers and the
            blocks that contain them, so functional additions inside a block are
            covered at its output) is rounded to (``None``: float32 activations).

    Raises:
        FormatError: a format name is unknown, or ``activations`` is an integer
            format (those need calibrated scales, which this emulation does not do).
    """
    w_fmt = parse_format(weights) if weights is not None else None
    a_fmt = parse_format(activations) if activations is not None else None
    if a_fmt is not None and not isinstance(a_fmt, FloatFormat):
        raise FormatError(
            f"activations must be a float format, got {a_fmt.name}; integer activations need calibration"
        )
    tensors = _stored_tensors(model) if w_fmt is not None else []
    masters: list[torch.Tensor] = []
    handles = []
    try:
        with torch.no_grad():
            for t in tensors:
                masters.append(t.detach().clone())
                t.copy_(w_fmt.round(t))
        if a_fmt is not None:
            hook = lambda _module, _inputs, output: _round_output(a_fmt, output)  # noqa: E731
            handles = [m.register_forward_hook(hook) for m in model.modules()]
        yield model
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for t, master in zip(tensors, masters):
                t.copy_(master)

