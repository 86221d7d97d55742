"""The text of the generated C library: the model file (weights, decoder, arena, the call
sequence) and its header, beside the fixed kernels in ``runtime/``.

Weights stay in flash as the packed stream of the deployed network (:func:`deployed_stream`:
its codes, ``ceil(n_values * bits / 8)`` bytes, then the scales of integer formats); each layer decodes a row of weights
at a time into a small scratch buffer before using it, so decoding costs once per row
and not once per multiply. Codes of ≤ 8-bit float formats are decoded by a table of their
2^bits values; wider float formats and the scales of integer formats by integer operations.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from typing import Any

from iotnas import __version__
from iotnas.errors import ExportError
from iotnas.export._cheader import _array
from iotnas.export._deploy import DeployedModel
from iotnas.export._packed import encode_state
from iotnas.export.c._graph import Graph, Op
from iotnas.export.c._plan import ArenaPlan
from iotnas.formats import Encoded, FloatFormat, IntFormat, NumberFormat, parse_format

#: Files of the library, as written into the export's ``c/`` folder.
RUNTIME_FILES = ("iotnas_ops.h", "iotnas_ops_kernels.h", "iotnas_ops.c", "iotnas_ops_avx2.c", "iotnas_avx2.h")
MODEL_FILES = ("iotnas_model.h", "iotnas_model.c")
#: Float formats up to this width are decoded by table (2^bits floats of rodata).
LUT_MAX_BITS = 8
_STREAM_LIMIT_BITS = 1 << 32  # stream bit positions are computed in uint32_t


def runtime_source(name: str) -> str:
    """A fixed file of the C runtime (package data)."""
    return resources.files("iotnas.export.c").joinpath("runtime").joinpath(name).read_text(encoding="utf-8")


def _float_literal(v: float) -> str:
    if math.isnan(v):
        return '__builtin_nanf("")'
    if math.isinf(v):
        return "__builtin_inff()" if v > 0 else "-__builtin_inff()"
    return f"{float(v).hex()}f" if v != 0 else ("-0.0f" if math.copysign(1.0, v) < 0 else "0.0f")


def _ieee_call(code: str, fmt: FloatFormat) -> str:
    step = _float_literal(math.ldexp(1.0, fmt.emin - fmt.man_bits))
    nan_fn = int(fmt.finite_only and fmt.has_nan)
    return f"iotnas_ieee_value({code}, {fmt.exp_bits}u, {fmt.man_bits}u, {int(fmt.has_inf)}, {nan_fn}, {step})"


def _code_reader(bits: int) -> str:
    if bits == 8:
        body = "return iotnas_weights[i];"
    elif bits in (16, 32):
        body = (f"uint32_t v = 0;\n    for (uint32_t b = 0; b < {bits // 8}u; ++b) "
                f"v |= (uint32_t)iotnas_weights[i * {bits // 8}u + b] << (8u * b);\n    return v;")
    elif bits == 4:
        body = "return (uint32_t)(iotnas_weights[i >> 1] >> ((i & 1u) << 2)) & 15u;"
    else:
        body = (f"const uint32_t bit = i * {bits}u, shift = bit & 7u, n = (shift + {bits}u + 7u) >> 3;\n"
                "    uint64_t window = 0;\n"
                "    for (uint32_t b = 0; b < n; ++b) window |= (uint64_t)iotnas_weights[(bit >> 3) + b] << (8u * b);\n"
                f"    return (uint32_t)(window >> shift) & {(1 << bits) - 1:#x}u;")
    return f"/* Code of value i of the stream: bits [i*{bits}, (i+1)*{bits}), least significant first. */\n" \
           f"static inline uint32_t code_at(uint32_t i) {{\n    {body}\n}}\n"


def _decoder(fmt: NumberFormat) -> str:
    import torch

    if isinstance(fmt, FloatFormat) and fmt.bits <= LUT_MAX_BITS:
        values = fmt.decode(Encoded(torch.arange(1 << fmt.bits))).tolist()
        rows = ",\n".join("    " + ", ".join(_float_literal(v) for v in values[i:i + 8]) for i in range(0, len(values), 8))
        return (f"/* The {1 << fmt.bits} values of {fmt.name}, by code. */\n"
                f"static const float iotnas_lut[{1 << fmt.bits}] = {{\n{rows}\n}};\n\n"
                "void iotnas_decode(uint32_t first, uint32_t count, uint32_t scale, float *out) {\n"
                "    (void)scale;\n"
                "    for (uint32_t i = 0; i < count; ++i) out[i] = iotnas_lut[code_at(first + i)];\n}\n")
    if isinstance(fmt, FloatFormat) and (fmt.exp_bits, fmt.man_bits, fmt.has_inf) == (8, 23, True):
        # float32's codes are float32's bits: a copy (PNASNet in float32 took 0.88x of the time with it)
        return ("/* float32 codes are float32 bits: copied, a NaN made quiet without its payload (as\n"
                " * iotnas_ieee_value makes it). */\n"
                "void iotnas_decode(uint32_t first, uint32_t count, uint32_t scale, float *out) {\n"
                "    (void)scale;\n"
                "    for (uint32_t i = 0; i < count; ++i) {\n"
                "        uint32_t bits = code_at(first + i);\n"
                "        if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u)\n"
                "            bits = (bits & 0x80000000u) | 0x7fc00000u;\n"
                "        memcpy(out + i, &bits, sizeof bits);\n    }\n}\n")
    if isinstance(fmt, FloatFormat):
        return ("void iotnas_decode(uint32_t first, uint32_t count, uint32_t scale, float *out) {\n"
                "    (void)scale;\n"
                f"    for (uint32_t i = 0; i < count; ++i) out[i] = {_ieee_call('code_at(first + i)', fmt)};\n}}\n")
    if isinstance(fmt, IntFormat):
        sfmt = parse_format(fmt.scale_format)
        nbytes = sfmt.bits // 8
        sign_bit, wrap = 1 << (fmt.bits - 1), 1 << fmt.bits
        return (f"/* Scale number i ({sfmt.name}, little-endian). */\n"
                "static float scale_at(uint32_t i) {\n"
                f"    uint32_t v = 0;\n    for (uint32_t b = 0; b < {nbytes}u; ++b) "
                f"v |= (uint32_t)iotnas_scales[i * {nbytes}u + b] << (8u * b);\n"
                f"    return {_ieee_call('v', sfmt)};\n}}\n\n"
                "void iotnas_decode(uint32_t first, uint32_t count, uint32_t scale, float *out) {\n"
                "    const float s = scale_at(scale);\n"
                "    for (uint32_t i = 0; i < count; ++i) {\n"
                "        const uint32_t c = code_at(first + i);\n"
                f"        const int32_t q = (c & {sign_bit}u) ? (int32_t)c - {wrap} : (int32_t)c;\n"
                "        out[i] = (float)q * s;\n    }\n}\n")
    raise ExportError(f"format {fmt.name} cannot be emitted as C; use a float (eXmY) or integer (intB) format")


class _Weights:
    """Where each state-dict tensor lies in the stream, as C initialisers."""

    def __init__(self, header: dict[str, Any]) -> None:
        self._table = {e["name"]: e for e in header["tensors"]}

    def ref(self, name: str | None) -> str:
        if name is None:
            return "{0u, 0u, 0u}"
        e = self._table.get(name)
        if e is None or e.get("stored") != "values":
            raise ExportError(f"tensor {name} is not among the packed weights; the export is inconsistent")
        return f"{{{e['offset']}u, {e.get('scale_offset', 0)}u, 1u}}"


def _struct(op: Op, graph: Graph, w: _Weights) -> tuple[str, str]:
    """(C type, initialiser) of an operator's parameters."""
    p, src = op.params, graph.shapes[op.inputs[0]] if op.inputs else ()
    if op.kind == "conv":
        c, h, wd = src
        co, ho, wo = op.shape
        return "iotnas_conv_t", (
            f"{c}u, {h}u, {wd}u, {co}u, {ho}u, {wo}u, {p['kh']}u, {p['kw']}u, {p['sh']}u, {p['sw']}u, {p['ph']}u, "
            f"{p['pw']}u, {p['groups']}u, {w.ref(op.weights['weight'])}, {w.ref(op.weights.get('bias'))}, "
            f"{int(op.relu)}u")
    if op.kind == "affine":
        c, h, wd = src
        return "iotnas_affine_t", (f"{c}u, {h}u, {wd}u, {w.ref(op.weights['scale'])}, {w.ref(op.weights['shift'])}, "
                                   f"{int(op.relu)}u")
    if op.kind in ("maxpool", "avgpool"):
        c, h, wd = src
        _, ho, wo = op.shape
        return "iotnas_pool_t", (f"{c}u, {h}u, {wd}u, {ho}u, {wo}u, {p['kh']}u, {p['kw']}u, {p['sh']}u, {p['sw']}u, "
                                 f"{p['ph']}u, {p['pw']}u, {p['count_pad']}u")
    if op.kind == "linear":
        return "iotnas_linear_t", (f"{graph.values(op.inputs[0])}u, {op.shape[0]}u, {w.ref(op.weights['weight'])}, "
                                   f"{w.ref(op.weights.get('bias'))}")
    raise AssertionError(op.kind)


def _f32(v: float) -> float:
    import numpy as np

    return float(np.float32(v))


def deployed_stream(deployed: DeployedModel, meta: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """(header, packed bytes) of the deployed network's weights, laid out as ``weights.bin`` is:
    ``meta`` adds the model key, the input geometry and normalisation, the class count."""
    fmt = deployed.format
    state = dict(deployed.module.state_dict())
    codes, scales, table = encode_state(state, fmt)  # the values are the format's already: encoding is exact
    header = {"format": fmt.name, "bits": fmt.bits, "n_values": sum(e["count"] for e in table),
              "codes_bytes": len(codes), "scales_bytes": len(scales), "tensors": table, **meta}
    return header, codes + scales


#: Floats read past the padded plane by the widest vector the kernels use (8 lanes, AVX).
VECTOR_SLACK_VALUES = 8


def _window_scratch_values(h: int, w: int, cout_g: int, p: dict[str, Any]) -> int:
    """Floats a window convolution needs (``iotnas_conv`` in ``iotnas_ops.c``): the taps of its
    group's output channels for one input channel, then that input plane padded with zeros, its
    rows split into ``sw`` phases of ``ceil((w + 2 pw) / sw)`` floats, and the vectors' overrun."""
    phase = -(-(w + 2 * p["pw"]) // p["sw"])
    return cout_g * p["kh"] * p["kw"] + (h + 2 * p["ph"]) * p["sw"] * phase + VECTOR_SLACK_VALUES


def _pointwise(p: dict[str, Any]) -> bool:
    return p["kh"] == p["kw"] == p["sh"] == p["sw"] == 1 and p["ph"] == p["pw"] == 0


def scratch_values(graph: Graph) -> int:
    """Floats of the scratch buffer: the largest decoded weight row of a pointwise convolution or
    a linear layer, what a window convolution needs, or a max pooling's row of column maxima."""
    rows = [1]
    for op in graph.ops:
        if op.kind == "conv":
            c, h, w = graph.shapes[op.inputs[0]]
            p = op.params
            cout_g = op.shape[0] // p["groups"]
            rows.append(c // p["groups"] if _pointwise(p) else _window_scratch_values(h, w, cout_g, p))
        elif op.kind == "linear":
            rows.append(graph.values(op.inputs[0]))
        elif op.kind == "maxpool":  # a row of column maxima with its padding, and a float read past it
            p, win = op.params, graph.shapes[op.inputs[0]][2]
            rows.append(max((op.shape[2] - 1) * p["sw"] + p["kw"], p["pw"] + win) + 1)
    return max(rows)


def c_library(graph: Graph, plan: ArenaPlan, header: dict[str, Any], blob: bytes) -> dict[str, str]:
    """File name -> text of the generated C library (runtime kernels included)."""
    fmt = parse_format(header["format"])
    if header["n_values"] * fmt.bits >= _STREAM_LIMIT_BITS:
        raise ExportError(f"{header['n_values']:,} values of {fmt.bits} bits are beyond the C library's 512 MiB stream")
    weights = _Weights(header)
    inp = header["input"]
    c, h, wd = header["in_channels"], inp["height"], inp["width"]
    mean = ", ".join(_float_literal(_f32(v)) for v in inp["mean"])
    inv_std = ", ".join(_float_literal(_f32(_f32(1.0) / _f32(v))) for v in inp["std"])

    def at(t: int) -> str:
        return "logits" if t == graph.output else f"iotnas_arena + {plan.offsets[t]}u"

    decls, calls = [], []
    for op in graph.ops:
        ident = "op_" + re.sub(r"\W", "_", op.name)
        if op.kind == "input":
            calls.append(f"iotnas_input(image, {c}u, {h}u, {wd}u, iotnas_mean, iotnas_inv_std, {at(op.output)});")
        elif op.kind == "relu":
            calls.append(f"iotnas_relu({graph.values(op.output)}u, {at(op.inputs[0])}, {at(op.output)});")
        elif op.kind == "add":
            a, b = op.inputs
            calls.append(f"iotnas_add({graph.values(op.output)}u, {at(a)}, {at(b)}, {int(op.relu)}u, {at(op.output)});")
        elif op.kind == "concat":
            start = 0
            for t in op.inputs:
                calls.append(f"iotnas_copy({graph.values(t)}u, {at(t)}, {at(op.output)} + {start}u);")
                start += graph.values(t)
        else:
            ctype, init = _struct(op, graph, weights)
            decls.append(f"static const {ctype} {ident} = {{{init}}};")
            fn = {"conv": "iotnas_conv", "affine": "iotnas_affine", "maxpool": "iotnas_maxpool",
                  "avgpool": "iotnas_avgpool", "linear": "iotnas_linear"}[op.kind]
            scratch = ", iotnas_scratch" if op.kind in ("conv", "linear", "maxpool") else ""
            calls.append(f"{fn}(&{ident}, {at(op.inputs[0])}, {at(op.output)}{scratch});")
    codes, scales = blob[:header["codes_bytes"]], blob[header["codes_bytes"]:]
    model_c = f"""/* {header['model_key']} with weights in {fmt.name}: generated by iotnas {__version__}. */
#include "iotnas_model.h"
#include "iotnas_ops.h"

/* The packed weights of the deployed network: {header['codes_bytes']:,} bytes of codes + {header['scales_bytes']:,} of scales. */
{_array("iotnas_weights", codes)}{_array("iotnas_scales", scales) if scales else ""}
{_code_reader(fmt.bits)}
{_decoder(fmt)}
static const float iotnas_mean[{c}] = {{{mean}}};
static const float iotnas_inv_std[{c}] = {{{inv_std}}};

/* Activations: {plan.arena_values:,} floats, planned by liveness (peak of live tensors: {plan.live_peak_values:,}). */
static float iotnas_arena[{max(plan.arena_values, 1)}];
/* Decoded weights, and a window convolution's zero-padded input plane or a max pooling's row. */
static float iotnas_scratch[{scratch_values(graph)}];

{chr(10).join(decls)}

int iotnas_run(const uint8_t *image, float *logits) {{
    {(chr(10) + '    ').join(calls)}
    return 0;
}}
"""
    model_h = model_header(
        header, arena_bytes=plan.arena_bytes, weight_bytes=header["codes_bytes"] + header["scales_bytes"],
        arithmetic=f"weights in {fmt.name}, decoded to float32; float32 activations",
        preprocessing="the library computes x = (pixel - mean) * inv_std per channel itself")
    return {"iotnas_model.h": model_h, "iotnas_model.c": model_c,
            **{name: runtime_source(name) for name in RUNTIME_FILES}}


def model_header(meta: dict[str, Any], *, arena_bytes: int, weight_bytes: int, arithmetic: str,
                 preprocessing: str) -> str:
    """``iotnas_model.h``: the entry point and the sizes a caller needs, the same in every arithmetic.

    ``meta``: ``model_key``, ``num_classes``, ``in_channels`` and ``input`` (``height``, ``width``).
    """
    inp = meta["input"]
    c, h, wd = meta["in_channels"], inp["height"], inp["width"]
    guard = "IOTNAS_MODEL_H"
    return f"""/* {meta['model_key']} ({arithmetic}): generated by iotnas {__version__}.
 *
 * iotnas_run(image, logits): image is {h}x{wd}x{c} raw pixels (row by row, channels interleaved,
 * 0-255; smaller images are zero-padded to {h}x{wd} first, as the dataset stores them);
 * {preprocessing} and writes
 * {meta['num_classes']} logits. Returns 0. Not reentrant: one static arena of IOTNAS_ARENA_BYTES.
 */
#ifndef {guard}
#define {guard}

#include <stdint.h>

#define IOTNAS_INPUT_CHANNELS {c}u
#define IOTNAS_INPUT_HEIGHT {h}u
#define IOTNAS_INPUT_WIDTH {wd}u
#define IOTNAS_NUM_CLASSES {meta['num_classes']}u
#define IOTNAS_ARENA_BYTES {arena_bytes}u
#define IOTNAS_WEIGHT_BYTES {weight_bytes}u

int iotnas_run(const uint8_t *image, float *logits);

#endif /* {guard} */
"""
