"""The interface every number format offers, and what a tensor costs to store in one."""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import torch

from iotnas.errors import FormatError

Shape = Sequence[int]


@dataclass(frozen=True)
class Encoded:
    """A tensor as stored: integer codes plus, for scaled formats, one scale per channel.

    Attributes:
        codes: int64 tensor of the input's shape; each code is an unsigned
            ``bits``-wide field (signed integers in two's complement).
        scales: float32 tensor of scales, already rounded to the scale format
            (``None`` for float formats).
    """

    codes: torch.Tensor
    scales: torch.Tensor | None = None


class NumberFormat(abc.ABC):
    """A way of storing real numbers in a fixed number of bits.

    Subclasses: :class:`~iotnas.formats.FloatFormat`, :class:`~iotnas.formats.IntFormat`.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Canonical name; :func:`~iotnas.formats.parse_format` gives the format back."""

    @property
    @abc.abstractmethod
    def bits(self) -> int:
        """Bits per stored number."""

    @abc.abstractmethod
    def round(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 tensor of the values ``x`` takes once stored in this format."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> Encoded:
        """Codes of ``x``, which must already be representable.

        Raises:
            FormatError: some value of ``x`` is not representable (round it first).
        """

    @abc.abstractmethod
    def decode(self, encoded: Encoded) -> torch.Tensor:
        """The float32 tensor the codes stand for (inverse of :meth:`encode`).

        Raises:
            FormatError: a code does not fit in :attr:`bits` or is malformed.
        """

    def round_(self, x: torch.Tensor) -> torch.Tensor:
        """Replace the values of the float32 tensor ``x`` by :meth:`round`'s; returns ``x``."""
        return x.copy_(self.round(x))

    def extra_bytes(self, shape: Shape) -> int:  # noqa: ARG002 - hook, no overhead by default
        """Bytes stored beside the packed codes of a tensor of ``shape`` (scales)."""
        return 0

    def __str__(self) -> str:
        return self.name


def _weight_bytes(n_values: int, bits: int) -> int:
    """``iotnas.cost.weight_bytes``, imported late: cost builds models, formats must not wait for that."""
    from iotnas.cost import weight_bytes

    return weight_bytes(n_values, bits)


TensorsLike = Union[torch.nn.Module, Mapping[str, torch.Tensor], Iterable[Union[torch.Tensor, Shape]]]


def _shapes(tensors: TensorsLike) -> list[tuple[int, ...]]:
    if isinstance(tensors, torch.nn.Module):
        tensors = tensors.state_dict()
    if isinstance(tensors, Mapping):
        tensors = tensors.values()
    return [tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t) for t in tensors]


def storage_bytes(fmt: NumberFormat, tensors: TensorsLike) -> int:
    """Bytes to store ``tensors`` in ``fmt``: all values packed in one stream, plus scales.

    Args:
        fmt: the number format.
        tensors: a model (every tensor of its state dict, BatchNorm statistics
            included), a state dict, or an iterable of tensors or shapes.
    """
    shapes = _shapes(tensors)
    n_values = sum(math.prod(s) for s in shapes)
    return _weight_bytes(n_values, fmt.bits) + sum(fmt.extra_bytes(s) for s in shapes)


def check_float_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a float32/float64 tensor (float16/bfloat16 widen exactly)."""
    if not isinstance(x, torch.Tensor):
        raise FormatError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    if x.dtype not in (torch.float32, torch.float64):
        raise FormatError(f"expected a floating-point tensor, got dtype {x.dtype}; convert it with .float()")
    return x
