"""Bit packing: ``n`` codes of ``bits`` bits in exactly ``ceil(n * bits / 8)`` bytes.

Layout: code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of one little-endian
bit stream (least significant bit first); stream bit ``j`` is bit ``j % 8`` of
byte ``j // 8``. The last byte is padded with zero bits.
"""

from __future__ import annotations

import numpy as np
import torch

from iotnas.errors import FormatError
from iotnas.formats._base import _weight_bytes

MAX_BITS = 32
_CHUNK = 1 << 20  # codes per pass; a multiple of 8 so chunks end on byte boundaries


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise FormatError(f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}")


def pack(codes: torch.Tensor | np.ndarray, bits: int) -> bytes:
    """Pack non-negative integer codes, each below ``2^bits``, into bytes.

    Raises:
        FormatError: ``bits`` out of range, codes not integers, or a code does not fit.
    """
    _check_bits(bits)
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise FormatError(f"codes must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << bits):
        raise FormatError(f"codes must lie in [0, 2^{bits}) to be packed at {bits} bits")
    wide = arr.astype("<u8")
    out = bytearray()
    for start in range(0, wide.size, _CHUNK):
        chunk = wide[start : start + _CHUNK]
        stream = np.unpackbits(chunk.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :bits]
        out += np.packbits(stream.reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack(data: bytes, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``n`` codes as an int64 tensor.

    Raises:
        FormatError: ``data`` is not exactly ``ceil(n * bits / 8)`` bytes long.
    """
    _check_bits(bits)
    if not isinstance(n, int) or n < 0:
        raise FormatError(f"n must be a non-negative integer, got {n!r}")
    expected = _weight_bytes(n, bits)
    if len(data) != expected:
        raise FormatError(f"{n} codes of {bits} bits take {expected} bytes, got {len(data)}")
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    result = np.empty(n, dtype=np.int64)
    step = _CHUNK * bits // 8
    for i, start in enumerate(range(0, n, _CHUNK)):
        count = min(_CHUNK, n - start)
        stream = np.unpackbits(raw[i * step : i * step + _weight_bytes(count, bits)], bitorder="little")
        fields = stream[: count * bits].reshape(count, bits)
        wide = np.zeros((count, 64), dtype=np.uint8)
        wide[:, :bits] = fields
        result[start : start + count] = np.packbits(wide, axis=1, bitorder="little").view("<u8").reshape(-1)
    return torch.from_numpy(result)
