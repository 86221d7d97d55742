"""Number formats: bit-exact rounding to IEEE-style (e, m) floats and scaled integers,
packed storage, and what a model costs to store in each.

    >>> from iotnas.formats import parse_format, pack
    >>> fmt = parse_format("e4m3")
    >>> codes = fmt.encode(fmt.round(w)).codes
    >>> blob = pack(codes, fmt.bits)        # exactly ceil(w.numel() * 8 / 8) bytes
"""

from iotnas.formats._base import Encoded, NumberFormat, storage_bytes
from iotnas.formats._float import FloatFormat
from iotnas.formats._int import IntFormat
from iotnas.formats._pack import pack, unpack
from iotnas.formats._registry import FORMATS, NAMED_FORMATS, format_names, parse_format

__all__ = [
    "Encoded",
    "FORMATS",
    "FloatFormat",
    "IntFormat",
    "NAMED_FORMATS",
    "NumberFormat",
    "format_names",
    "pack",
    "parse_format",
    "storage_bytes",
    "unpack",
]
