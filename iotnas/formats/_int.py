"""Symmetric integer formats with one scale per output channel (the MCU int8 baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from iotnas.errors import FormatError
from iotnas.formats._base import Encoded, NumberFormat, Shape, check_float_tensor
from iotnas.formats._float import FloatFormat, _check_codes

ScaleFormat = Literal["float16", "float32"]

_SCALE_FORMATS: dict[str, FloatFormat] = {
    # A scale beyond the scale format's range saturates: codes are clamped anyway.
    "float16": FloatFormat(5, 10, overflow="saturate"),
    "float32": FloatFormat(8, 23, overflow="saturate"),
}


@dataclass(frozen=True)
class IntFormat(NumberFormat):
    """``bits``-bit signed integers times a per-output-channel scale.

    A tensor with two or more dimensions gets one scale per index of its first
    dimension (the output channel of conv and linear weights); a vector or a
    scalar (biases, BatchNorm parameters and statistics) gets one scale. The
    scale is ``max|w| / (2^(b-1) - 1)`` rounded to ``scale_format``, values
    become ``clamp(round_half_even(w / scale), -(2^(b-1)-1), 2^(b-1)-1)``,
    computed in float32. The scales are stored and counted
    (:meth:`extra_bytes`).

    Args:
        bits: 2 to 8.
        scale_format: ``"float16"`` or ``"float32"``.
    """

    int_bits: int
    scale_format: ScaleFormat = field(default="float16", kw_only=True)

    def __post_init__(self) -> None:
        b = self.int_bits
        if not isinstance(b, int) or isinstance(b, bool) or not 2 <= b <= 8:
            raise FormatError(f"integer formats take 2 to 8 bits, got {b!r}")
        if self.scale_format not in _SCALE_FORMATS:
            raise FormatError(f"scale_format must be 'float16' or 'float32', got {self.scale_format!r}")

    @property
    def bits(self) -> int:
        return self.int_bits

    @property
    def name(self) -> str:
        return f"int{self.int_bits}" + ("" if self.scale_format == "float16" else "-s32")

    @property
    def qmax(self) -> int:
        """Largest code magnitude, ``2^(b-1) - 1`` (symmetric: ``-2^(b-1)`` is unused)."""
        return (1 << (self.int_bits - 1)) - 1

    @property
    def scale_bits(self) -> int:
        return _SCALE_FORMATS[self.scale_format].bits

    @staticmethod
    def n_scales(shape: Shape) -> int:
        """One scale per output channel (first dimension) of a 2-D+ tensor, else one."""
        return int(shape[0]) if len(shape) >= 2 else 1

    def extra_bytes(self, shape: Shape) -> int:
        return self.n_scales(shape) * self.scale_bits // 8

    def scales(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel scales of ``x`` (shape ``(n_scales,)``), rounded to the scale format.

        Raises:
            FormatError: ``x`` holds infinities or NaN.
        """
        x = check_float_tensor(x).float()
        if not bool(torch.isfinite(x).all()):
            raise FormatError(f"{self.name} cannot store infinities or NaN")
        rows = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
        amax = rows.abs().amax(dim=1) if rows.numel() else torch.zeros(rows.shape[0])
        return _SCALE_FORMATS[self.scale_format].round(amax / self.qmax)

    def _integers(self, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(scales.shape[0], -1)
        safe = torch.where(scales == 0, 1.0, scales).unsqueeze(1)  # all-zero channel: codes 0
        q = torch.div(rows, safe).round_().clamp_(-self.qmax, self.qmax)  # round_: ties to even
        return q.reshape(x.shape)

    def _channel_view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.reshape((-1,) + (1,) * (x.dim() - 1)) if x.dim() >= 2 else t.reshape(())

    def round(self, x: torch.Tensor) -> torch.Tensor:
        x = check_float_tensor(x).float()
        s = self.scales(x)
        return self._integers(x, s).mul_(self._channel_view(s, x))

    def encode(self, x: torch.Tensor) -> Encoded:
        """Codes (two's complement in ``bits``) and scales of ``x``.

        Any finite tensor can be encoded: integer formats are lossy by design,
        so ``decode(encode(x)) == round(x)``.
        """
        x = check_float_tensor(x).float()
        s = self.scales(x)
        q = self._integers(x, s).long()
        return Encoded(codes=q & ((1 << self.int_bits) - 1), scales=s)

    def decode(self, encoded: Encoded) -> torch.Tensor:
        if not isinstance(encoded, Encoded) or encoded.scales is None:
            raise FormatError(f"{self.name} needs the scales: pass the Encoded returned by encode()")
        codes = _check_codes(encoded.codes, self.int_bits)
        q = torch.where(codes >= 1 << (self.int_bits - 1), codes - (1 << self.int_bits), codes)
        if bool((q < -self.qmax).any()):
            raise FormatError(f"code {-(self.qmax + 1)} is unused in symmetric {self.name}")
        s = encoded.scales.float()
        if s.numel() != (codes.shape[0] if codes.dim() >= 2 else 1):
            raise FormatError(f"expected {self.n_scales(codes.shape)} scales, got {s.numel()}")
        return q.float() * self._channel_view(s, q)
