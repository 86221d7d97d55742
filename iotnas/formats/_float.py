"""IEEE-754-style binary floating-point formats with any exponent/mantissa split."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from iotnas.errors import FormatError
from iotnas.formats import _kernel
from iotnas.formats._base import Encoded, NumberFormat, check_float_tensor

Overflow = Literal["inf", "saturate"]

#: Finite-only ("fn") formats of at least this many bits keep one NaN code
#: (S.1111.111, as OCP/ml_dtypes float8_e4m3fn); narrower ones (OCP fp6/fp4)
#: have neither infinity nor NaN.
FN_NAN_MIN_BITS = 8

FLOAT32_MAX = math.ldexp(2 - 2.0**-23, 127)

#: IEEE formats known by a name of their own; (e, m) -> name.
COMMON_NAMES = {(8, 23): "float32", (8, 10): "tf32", (8, 7): "bfloat16", (5, 10): "float16"}


@dataclass(frozen=True)
class FloatFormat(NumberFormat):
    """A sign bit, ``exp_bits`` exponent bits and ``man_bits`` mantissa bits.

    IEEE semantics: bias ``2^(e-1) - 1``, subnormals, signed zeros, round to
    nearest with ties to even. IEEE formats reserve the top exponent for
    infinities and NaN. ``finite_only`` formats (OCP "fn") use it for one more
    binade of finite values instead: at 8 bits and more the all-ones pattern
    stays NaN (e4m3fn: largest 448), below 8 bits there is no NaN at all
    (e2m1fn: largest 6).

    Args:
        exp_bits: 1 to 8.
        man_bits: 0 to 23.
        overflow: what finite values beyond the largest finite one become:
            ``"inf"`` (IEEE; NaN for a finite-only format with a NaN code, as
            ml_dtypes does) or ``"saturate"`` (the largest finite value).
            Defaults to ``"inf"``, or ``"saturate"`` for a format that has
            neither infinity nor NaN. Infinite inputs stay infinite where the
            format has infinities, otherwise they follow the overflow rule.
        finite_only: no infinities (OCP "fn" formats).
    """

    exp_bits: int
    man_bits: int
    overflow: Overflow | None = field(default=None, kw_only=True)
    finite_only: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        for label, value, lo, hi in (("exp_bits", self.exp_bits, 1, 8), ("man_bits", self.man_bits, 0, 23)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise FormatError(f"{label} must be an integer from {lo} to {hi}, got {value!r}")
        if self.overflow is None:
            object.__setattr__(self, "overflow", "inf" if self.has_inf or self.has_nan else "saturate")
        if self.overflow not in ("inf", "saturate"):
            raise FormatError(f"overflow must be 'inf' or 'saturate', got {self.overflow!r}")
        if self.overflow == "inf" and not (self.has_inf or self.has_nan):
            raise FormatError(f"{self.base_name} has neither infinity nor NaN; use overflow='saturate'")
        if self.max_value <= 0:
            raise FormatError(f"{self.base_name} has no positive finite value; add exponent or mantissa bits")
        if self.max_value > FLOAT32_MAX:
            raise FormatError(f"{self.base_name} reaches beyond float32's range; use at most 7 exponent bits")

    # -- description -------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def base_name(self) -> str:
        """``float16``-style name of a common IEEE format, else ``eXmY[fn]``."""
        if not self.finite_only and (self.exp_bits, self.man_bits) in COMMON_NAMES:
            return COMMON_NAMES[self.exp_bits, self.man_bits]
        return f"e{self.exp_bits}m{self.man_bits}" + ("fn" if self.finite_only else "")

    @property
    def name(self) -> str:
        default = "inf" if self.has_inf or self.has_nan else "saturate"
        return self.base_name + ("-sat" if self.overflow != default else "")

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def has_inf(self) -> bool:
        return not self.finite_only

    @property
    def has_nan(self) -> bool:
        if self.finite_only:
            return self.bits >= FN_NAN_MIN_BITS
        return self.man_bits > 0  # IEEE NaN needs a non-zero mantissa under the top exponent

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def _magnitude_mask(self) -> int:
        return (1 << (self.exp_bits + self.man_bits)) - 1

    @property
    def _max_code(self) -> int:
        """Magnitude code of the largest finite value."""
        if not self.finite_only:
            return ((1 << self.exp_bits) - 1 << self.man_bits) - 1
        return self._magnitude_mask - (1 if self.has_nan else 0)

    def _value_of_magnitude(self, code: int) -> float:
        ec, mc = code >> self.man_bits, code & ((1 << self.man_bits) - 1)
        if ec == 0:
            return math.ldexp(mc, self.emin - self.man_bits)
        return math.ldexp((1 << self.man_bits) + mc, ec - self.bias - self.man_bits)

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        return self._value_of_magnitude(self._max_code)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.man_bits)

    @property
    def epsilon(self) -> float:
        """Distance from 1 to the next larger value (``2^-m``)."""
        return math.ldexp(1.0, -self.man_bits)

    def _params(self, src: _kernel.SourceFloat) -> _kernel.KernelParams:
        overflow_value = (
            self.max_value if self.overflow == "saturate" else (math.inf if self.has_inf else math.nan)
        )
        return _kernel.make_params(
            src,
            man_bits=self.man_bits,
            emin=self.emin,
            max_value=self.max_value,
            overflow_value=overflow_value,
            inf_value=math.inf if self.has_inf else overflow_value,
        )

    def _param_tensors(self, src: _kernel.SourceFloat, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (self, src.dtype, device)
        cached = _PARAM_CACHE.get(key)
        if cached is None:
            p = self._params(src)
            cached = tuple(
                torch.tensor(v, dtype=src.int_dtype, device=device)
                for v in dataclasses.astuple(p)
            )
            _PARAM_CACHE[key] = cached
        return cached

    # -- rounding ------------------------------------------------------------------------------
    def round(
        self, x: torch.Tensor, *, out: torch.Tensor | None = None, compiled: bool | None = None
    ) -> torch.Tensor:
        """Round to nearest, ties to even; returns float32.

        float16/bfloat16/float32 inputs are rounded from their exact values,
        float64 inputs directly from their float64 bits (no double rounding).
        NaN stays NaN even in a format without NaN (then :meth:`encode` refuses it).

        Args:
            x: input tensor.
            out: float32 tensor of ``x``'s shape to write into (may be ``x``
                itself); saves allocating fresh memory, which costs more than
                the rounding.
            compiled: use the fused ``torch.compile`` kernel (``None``: for
                float32 tensors of at least ``COMPILE_MIN_NUMEL`` elements,
                where available). Both give identical bits.
        """
        x = check_float_tensor(x)
        src = _kernel.FLOAT32 if x.dtype == torch.float32 else _kernel.FLOAT64
        if out is None:
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        elif out.dtype != torch.float32 or out.shape != x.shape:
            raise FormatError(f"out must be a float32 tensor of shape {tuple(x.shape)}")
        if src is _kernel.FLOAT64:
            rounded = _kernel.round_bits(x, self._param_tensors(src, x.device), src)
            return out.copy_(rounded)
        if not out.is_contiguous():
            return out.copy_(self.round(x, compiled=compiled))
        return _kernel.run(x, self._param_tensors(src, x.device), src, out, compiled=compiled)

    def round_(self, x: torch.Tensor, *, compiled: bool | None = None) -> torch.Tensor:
        """Round a float32 tensor in place (see :meth:`round`); returns ``x``."""
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            raise FormatError("round_ works in place on float32 tensors only; use round()")
        return self.round(x, out=x, compiled=compiled)

    # -- codes ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        x = check_float_tensor(x).float()
        r = self.round(x)
        nan = torch.isnan(x)
        same = (r.view(torch.int32) == x.view(torch.int32)) & ~nan
        if self.has_nan:
            same |= nan
        if not bool(same.all()):
            bad = x[~same].flatten()[0].item()
            raise FormatError(
                f"{bad!r} is not representable in {self.name} (nearest: {self.round(torch.tensor([bad])).item()!r}); "
                f"round the tensor with {self.name}.round() before encoding"
            )
        xd = x.double()
        a = xd.abs()
        sign = torch.signbit(x).long() << (self.exp_bits + self.man_bits)
        # normal numbers: exponent and mantissa fields straight from the float64 bits
        bits64 = a.view(torch.int64)
        ec = (bits64 >> 52) - 1023 + self.bias
        mc = (bits64 & ((1 << 52) - 1)) >> (52 - self.man_bits)
        normal = (ec << self.man_bits) | mc
        subnormal = (a * math.ldexp(1.0, self.man_bits - self.emin)).long()  # exact: a multiple of q
        mag = torch.where(a < self.min_normal, subnormal, normal)
        if self.has_inf:
            mag = torch.where(torch.isinf(a), (1 << self.exp_bits) - 1 << self.man_bits, mag)
        if self.has_nan:
            nan_code = self._magnitude_mask if self.finite_only else (
                (1 << self.exp_bits) - 1 << self.man_bits | 1 << (self.man_bits - 1)
            )
            mag = torch.where(torch.isnan(a), nan_code, mag)
        return Encoded(codes=sign | mag)

    def decode(self, encoded: Encoded) -> torch.Tensor:
        codes = encoded.codes if isinstance(encoded, Encoded) else encoded
        codes = _check_codes(codes, self.bits)
        e, m = self.exp_bits, self.man_bits
        mag = codes & self._magnitude_mask
        ec, mc = mag >> m, mag & ((1 << m) - 1)
        normal = (((ec - self.bias + 1023) << 52) | (mc << (52 - m))).view(torch.float64)
        value = torch.where(ec == 0, mc.double() * self.min_subnormal, normal)
        if not self.finite_only:
            top = ec == (1 << e) - 1
            value = torch.where(top & (mc == 0), math.inf, value)
            value = torch.where(top & (mc != 0), math.nan, value)
        elif self.has_nan:
            value = torch.where(mag == self._magnitude_mask, math.nan, value)
        value = torch.where(((codes >> (e + m)) & 1).bool(), -value, value)
        return value.float()


_PARAM_CACHE: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _check_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise FormatError("codes must be an integer tensor (as returned by encode)")
    codes = codes.long()
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise FormatError(f"codes must lie in [0, 2^{bits}) for a {bits}-bit format")
    return codes
