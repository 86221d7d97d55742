"""Named formats and the one parser from a name to a format."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType

from iotnas.errors import FormatError
from iotnas.formats._base import NumberFormat
from iotnas.formats._float import FloatFormat
from iotnas.formats._int import IntFormat
from iotnas.registry import Registry

#: name (or alias) -> format. Registration order is the listing order.
FORMATS: Registry[NumberFormat] = Registry("number format", error=FormatError)
FORMATS.register("float32", FloatFormat(8, 23), aliases=("fp32",))
FORMATS.register("tf32", FloatFormat(8, 10))
FORMATS.register("bfloat16", FloatFormat(8, 7), aliases=("bf16",))
FORMATS.register("float16", FloatFormat(5, 10), aliases=("half", "fp16"))
FORMATS.register("e5m2", FloatFormat(5, 2), aliases=("fp8_e5m2",))
FORMATS.register("e4m3", FloatFormat(4, 3))
FORMATS.register("e4m3fn", FloatFormat(4, 3, finite_only=True), aliases=("fp8_e4m3",))
FORMATS.register("e3m2fn", FloatFormat(3, 2, finite_only=True), aliases=("fp6_e3m2",))
FORMATS.register("e2m3fn", FloatFormat(2, 3, finite_only=True), aliases=("fp6_e2m3",))
FORMATS.register("e2m1fn", FloatFormat(2, 1, finite_only=True), aliases=("fp4_e2m1",))
for _bits in range(8, 1, -1):
    FORMATS.register(f"int{_bits}", IntFormat(_bits))

#: name -> format (aliases aside), in listing order.
NAMED_FORMATS: Mapping[str, NumberFormat] = MappingProxyType({name: FORMATS.get(name) for name in FORMATS.names()})

_FLOAT_RE = re.compile(r"^e(\d+)m(\d+)(fn)?$")
_INT_RE = re.compile(r"^int(\d+)(-s32)?$")


def format_names() -> list[str]:
    """Names :func:`parse_format` knows, in listing order (``eXmY`` patterns aside)."""
    return [*FORMATS.names(), *FORMATS.aliases()]


def parse_format(name: str | NumberFormat) -> NumberFormat:
    """The format called ``name``: a named format, ``eXmY[fn][-sat]`` or ``intB[-s32]``.

    ``fn``: finite only (OCP); ``-sat``: saturate on overflow; ``-s32``: float32 scales.

    Raises:
        FormatError: the name is unknown or its numbers are out of range.
    """
    if isinstance(name, NumberFormat):
        return name
    if not isinstance(name, str):
        raise FormatError(f"a format name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    saturate = key.endswith("-sat")
    key = key.removesuffix("-sat")
    if key in FORMATS:
        fmt = FORMATS.get(key)
        if not saturate:
            return fmt
        if isinstance(fmt, FloatFormat):
            return dataclasses.replace(fmt, overflow="saturate")
    elif match := _FLOAT_RE.match(key):
        e, m, fn = match.groups()
        return FloatFormat(int(e), int(m), finite_only=bool(fn), overflow="saturate" if saturate else None)
    elif not saturate and (match := _INT_RE.match(key)):
        return IntFormat(int(match.group(1)), scale_format="float32" if match.group(2) else "float16")
    raise FormatError(
        f"unknown number format {name!r}; use one of {', '.join(format_names())}, "
        "or eXmY (X: 1-8 exponent bits, Y: 0-23 mantissa bits, optional 'fn'), a float name + '-sat', or intB (B: 2-8)"
    )
