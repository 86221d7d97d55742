"""Packed weights: every stored number in one bit stream of exactly ``ceil(n_values * bits / 8)``
bytes, a JSON header that says where each tensor lies, and the loader that restores the model.

The stream follows :func:`iotnas.formats.pack` (value ``i`` in bits ``[i*bits, (i+1)*bits)``,
least significant bit first). Tensors follow one another in state-dict order; ``offset`` and
``count`` in the header are in values, not bytes, since a tensor need not start on a byte.
Integer formats' per-channel scales follow the stream, packed in their own scale format.
The tensors are the deployed network's (:func:`iotnas.export.deploy`: BatchNorm folded, then
rounded), so the stream is never longer than the search's promise, which counts the trained
network's state dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iotnas.arch import Arch
from iotnas.cost import weight_bytes
from iotnas.errors import ExportError, FormatError
from iotnas.formats import Encoded, IntFormat, NumberFormat, pack, parse_format, unpack

HEADER_VERSION = 2  # 2: the deployed network's tensors (BatchNorm folded)
BLOB_NAME = "weights.bin"
HEADER_NAME = "weights.json"


def _scale_format(fmt: NumberFormat) -> NumberFormat | None:
    return parse_format(fmt.scale_format) if isinstance(fmt, IntFormat) else None


def encode_state(state: dict[str, torch.Tensor], fmt: NumberFormat) -> tuple[bytes, bytes, list[dict[str, Any]]]:
    """(packed codes, packed scales, tensor table) of a state dict in ``fmt``.

    Float tensors are rounded to the format first (as :func:`iotnas.precision.emulate.emulated` does).
    """
    codes, scales, table = [], [], []
    offset = scale_offset = 0
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                                 "offset": offset, "count": t.numel()}
        if t.is_floating_point():
            enc = fmt.encode(fmt.round(t.float()))
            entry["stored"] = "values"
        else:  # counters: slot kept, contents not needed for inference
            enc = fmt.encode(torch.zeros(t.shape, dtype=torch.float32))
            entry["stored"] = "zeros"
        codes.append(enc.codes.reshape(-1))
        if enc.scales is not None:
            entry["scale_offset"], entry["n_scales"] = scale_offset, enc.scales.numel()
            scales.append(enc.scales.reshape(-1))
            scale_offset += enc.scales.numel()
        table.append(entry)
        offset += t.numel()
    all_codes = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.int64)
    blob = pack(all_codes, fmt.bits)
    scale_blob = b""
    sfmt = _scale_format(fmt)
    if sfmt is not None and scales:
        scale_blob = pack(sfmt.encode(torch.cat(scales)).codes, sfmt.bits)
    return blob, scale_blob, table


def write_packed(folder: Path, state: dict[str, torch.Tensor], fmt: NumberFormat, *, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``weights.bin`` (stream, then scales) and ``weights.json``; returns the header."""
    blob, scale_blob, table = encode_state(state, fmt)
    n_values = sum(e["count"] for e in table)
    if len(blob) != weight_bytes(n_values, fmt.bits):
        raise ExportError(f"packed stream is {len(blob)} bytes, expected {weight_bytes(n_values, fmt.bits)}")
    sfmt = _scale_format(fmt)
    header = {
        "iotnas_packed": HEADER_VERSION,
        "format": fmt.name,
        "bits": fmt.bits,
        "n_values": n_values,
        "codes_bytes": len(blob),
        "bit_order": "value i in bits [i*bits, (i+1)*bits) of a little-endian bit stream (LSB first)",
        "scale_format": None if sfmt is None else sfmt.name,
        "scales_offset_bytes": len(blob),
        "scales_bytes": len(scale_blob),
        "tensors": table,
        **meta,
    }
    (folder / BLOB_NAME).write_bytes(blob + scale_blob)
    (folder / HEADER_NAME).write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    return header


def read_packed(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and the decoded state dict of a packed export.

    Raises:
        ExportError: files missing, damaged or of another version.
    """
    folder = Path(folder)
    try:
        header = json.loads((folder / HEADER_NAME).read_text(encoding="utf-8"))
        data = (folder / BLOB_NAME).read_bytes()
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{folder}: not a packed iotnas export ({exc})") from None
    if header.get("iotnas_packed") != HEADER_VERSION:
        raise ExportError(f"{folder}: packed header version {header.get('iotnas_packed')}, this iotnas reads {HEADER_VERSION}")
    fmt = parse_format(header["format"])
    n, nbytes = header["n_values"], header["codes_bytes"]
    if len(data) != nbytes + header["scales_bytes"]:
        raise ExportError(f"{folder / BLOB_NAME}: {len(data)} bytes, the header promises {nbytes + header['scales_bytes']}")
    try:
        codes = unpack(data[:nbytes], fmt.bits, n)
        sfmt = parse_format(header["scale_format"]) if header["scale_format"] else None
        scales = None
        if sfmt is not None:
            n_scales = header["scales_bytes"] * 8 // sfmt.bits
            scales = sfmt.decode(Encoded(unpack(data[nbytes:], sfmt.bits, n_scales)))
        state = {}
        for e in header["tensors"]:
            shape = tuple(e["shape"])
            part = codes[e["offset"]:e["offset"] + e["count"]].reshape(shape)
            s = None if scales is None else scales[e["scale_offset"]:e["scale_offset"] + e["n_scales"]]
            values = fmt.decode(Encoded(part, s))
            dtype = getattr(torch, e["dtype"])
            state[e["name"]] = values if e["stored"] == "values" else torch.zeros(shape, dtype=dtype)
            state[e["name"]] = state[e["name"]].to(dtype)
    except FormatError as exc:
        raise ExportError(f"{folder}: damaged packed weights ({exc})") from exc
    return header, state


def load_packed(folder: str | Path) -> nn.Module:
    """Rebuild the exported (deployed) network from its packed weights, in eval mode.

    The packed tensors are those of :func:`iotnas.export.deploy` (BatchNorm folded, then rounded),
    so the rebuilt network's outputs equal ``deploy(trained_model, format).module``'s bit for bit.

    Raises:
        ExportError: files missing or damaged, or weights that do not fit the architecture.
    """
    from iotnas.export._deploy import fold_batchnorm
    from iotnas.spaces import build

    header, state = read_packed(folder)
    arch = Arch.from_json(header["arch"])
    module = fold_batchnorm(build(arch, num_classes=header["num_classes"], in_channels=header["in_channels"]))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{folder}: the packed weights do not fit {arch.key}: {exc}") from None
    return module.eval()


def promised_bytes(header: dict[str, Any]) -> int:
    """What the search promised: ``ceil(n_values * bits / 8)`` (plus scales for integer formats)."""
    return weight_bytes(header["n_values"], header["bits"]) + header["scales_bytes"]


__all__ = ["load_packed", "promised_bytes", "read_packed", "write_packed"]

