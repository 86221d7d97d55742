"""Bit-exact rounding of float32 (and float64) tensors to any IEEE-style (e, m) format.

The rounding works on the integer bit pattern of the source float, so it is
exact by construction and needs no wider arithmetic:

* In the target's normal range, round to nearest even at bit ``s0 = MAN - m``
  of the source pattern: add ``2^(s-1) - 1 + (the bit that must stay even)``
  and clear the low ``s`` bits. A carry out of the mantissa lands in the
  exponent field, which is exactly the next binade.
* Below the target's smallest normal number the quantum is fixed (the smallest
  subnormal ``q``), so the shift grows by one per binade: ``s = s0 + (be_min -
  be)``. The same add-and-clear works up to ``s = MAN``; anything smaller than
  ``q`` becomes ``0`` or ``q``.
* Overflow, infinities and NaN are selected at the end with ``where``.

Everything is one chain of element-wise integer operations, which
``torch.compile`` fuses into a single pass; the eager version runs the same
operations one by one and gives identical bits.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Tensors at least this large use the compiled kernel when ``compiled=None``:
#: compiling costs seconds once per process, the eager kernel ~10 ns/element.
COMPILE_MIN_NUMEL = 1 << 22


@dataclass(frozen=True)
class SourceFloat:
    """Layout of a source float type (the type whose bit patterns are rounded)."""

    dtype: torch.dtype
    int_dtype: torch.dtype
    np_dtype: type
    np_int_dtype: type
    man_bits: int
    bias: int

    @property
    def inf_bits(self) -> int:
        return ((1 << (self.int_bits - 1 - self.man_bits)) - 1) << self.man_bits

    @property
    def int_bits(self) -> int:
        return 32 if self.dtype == torch.float32 else 64

    @property
    def abs_mask(self) -> int:
        return (1 << (self.int_bits - 1)) - 1

    @property
    def implicit_clear(self) -> int:
        """Mask clearing the lowest exponent bit (where the implicit bit would be)."""
        return self.abs_mask & ~(1 << self.man_bits)

    @property
    def qnan_bits(self) -> int:
        return self.inf_bits | (1 << (self.man_bits - 1))

    def bits_of(self, value: float) -> int:
        """Bit pattern (as a non-negative int) of a non-negative ``value`` in this type."""
        return int(np.array(value, dtype=self.np_dtype).view(self.np_int_dtype))


FLOAT32 = SourceFloat(torch.float32, torch.int32, np.float32, np.int32, 23, 127)
FLOAT64 = SourceFloat(torch.float64, torch.int64, np.float64, np.int64, 52, 1023)


@dataclass(frozen=True)
class KernelParams:
    """Integer constants of one (target format, source type) pair."""

    s0: int  # shift in the normal range: MAN - m
    c: int  # s = clamp(c - be, s0, MAN) with be the source biased exponent
    q_bits: int  # smallest subnormal of the target
    half_q_bits: int  # half of it (0 when not representable: then nothing lies below q but 0)
    max_bits: int  # largest finite value of the target
    overflow_bits: int  # what finite values beyond max_bits become
    inf_bits_out: int  # what +-inf becomes
    tie_bit: int  # stands for the implicit bit when the kept significand is that bit alone


def make_params(
    src: SourceFloat,
    *,
    man_bits: int,
    emin: int,
    max_value: float,
    overflow_value: float,
    inf_value: float,
) -> KernelParams:
    """Derive the kernel constants from the target's description (all exact in float64)."""
    s0 = src.man_bits - man_bits
    be_min = emin + src.bias
    q = math.ldexp(1.0, emin - man_bits)
    half_q = q / 2
    representable = float(np.array(half_q, dtype=src.np_dtype)) == half_q
    half_q_bits = src.bits_of(half_q) if representable else 0
    return KernelParams(
        s0=s0,
        c=s0 + be_min,
        q_bits=src.bits_of(q),
        half_q_bits=half_q_bits,
        max_bits=src.bits_of(max_value),
        overflow_bits=src.bits_of(overflow_value),
        inf_bits_out=src.bits_of(inf_value),
        # A tie with m > 0 keeps the neighbour whose last kept significand bit is 0. With m = 0
        # that bit is the implicit 1 in both neighbours; like apytypes, such a tie then goes to
        # the smaller magnitude (no bits to make even).
        tie_bit=1 << src.man_bits if man_bits > 0 else 0,
    )


def round_bits(x: torch.Tensor, p: tuple[torch.Tensor, ...], src: SourceFloat) -> torch.Tensor:
    """Round ``x`` (of ``src.dtype``) to the target described by ``p``; same dtype out.

    ``p`` holds the :class:`KernelParams` fields as 0-d integer tensors, so one
    compiled graph serves every format.
    """
    s0, c, q_bits, half_q_bits, max_bits, overflow_bits, inf_out, tie_bit = p
    man = src.man_bits
    inf = src.inf_bits
    u = x.view(src.int_dtype)
    a = u & src.abs_mask
    sign = u & ~src.abs_mask
    a_clamped = a.clamp_max(inf)  # NaN patterns would overflow a + add into the sign bit
    be = torch.clamp_min(a >> man, 1)  # source denormals share the exponent of the smallest normal
    s = torch.maximum(c - be, s0).clamp_max(man)
    low = (1 << s) - 1
    # the last kept bit; at s == MAN it is the implicit bit, not the exponent's lowest
    even_bit = (((a_clamped & src.implicit_clear) | tie_bit) >> s) & 1
    r = (a_clamped + ((low + even_bit) >> 1)) & ~low
    r = torch.where(a < q_bits, torch.where(a > half_q_bits, q_bits, 0), r)
    r = torch.where(r > max_bits, overflow_bits, r)
    r = torch.where(a == inf, inf_out, r)
    r = torch.where(a > inf, src.qnan_bits, r)
    return (r | sign).view(src.dtype)


def round_into(
    x: torch.Tensor, p: tuple[torch.Tensor, ...], src: SourceFloat, out: torch.Tensor
) -> torch.Tensor:
    """:func:`round_bits` written into ``out`` (may be ``x``): one pass, no temporary."""
    out.copy_(round_bits(x, p, src))
    return out


_compiled: Callable | None = None
_compile_failed = False
_compile_lock = threading.Lock()


def compiled_round_into() -> Callable | None:
    """The fused kernel (``torch.compile``), or ``None`` where compiling is not possible."""
    global _compiled, _compile_failed
    with _compile_lock:
        if _compiled is None and not _compile_failed:
            try:
                _compiled = torch.compile(round_into, fullgraph=True)
            except RuntimeError as exc:  # e.g. no supported compiler on this platform
                logger.warning("torch.compile unavailable, rounding stays eager: %s", exc)
                _compile_failed = True
        return _compiled


def run(
    x: torch.Tensor,
    p: tuple[torch.Tensor, ...],
    src: SourceFloat,
    out: torch.Tensor,
    *,
    compiled: bool | None,
) -> torch.Tensor:
    """Round ``x`` into ``out``, compiled or eager (``None``: compiled for large tensors if available)."""
    global _compile_failed, _compiled
    use_compiled = compiled if compiled is not None else x.numel() >= COMPILE_MIN_NUMEL
    if use_compiled and src is FLOAT32:
        fn = compiled_round_into()
        if fn is not None:
            flat_x, flat_out = x.reshape(-1), out.view(-1)
            # one graph for every length (shapes dynamic); the format constants stay tensors
            torch._dynamo.maybe_mark_dynamic(flat_x, 0)
            torch._dynamo.maybe_mark_dynamic(flat_out, 0)
            try:
                with torch.no_grad():  # one graph whatever the caller's grad mode (bits carry none)
                    fn(flat_x, p, src, flat_out)
                return out
            except torch._dynamo.exc.BackendCompilerFailed as exc:  # no C++ toolchain at run time
                logger.warning("compiled rounding failed, falling back to eager: %s", exc)
                _compile_failed, _compiled = True, None
    return round_into(x, p, src, out)
