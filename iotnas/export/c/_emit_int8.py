"""The text of the int8 C library: the integer operators of :func:`~iotnas.export.c._int8.int8_graph`
with their constants in flash, a byte arena, and the kernels of ``runtime/iotnas_int8.c`` (their x86
vector forms in ``runtime/iotnas_int8_x86.h``).

Flash holds each layer's int8 filter (the int8 deployed network's codes: the TFLite model stores
them exactly), its int32 biases (holding the input zero point's share, see
:mod:`iotnas.export.c._int8`) and its per-channel Q31 multipliers and shifts. The input is
normalised and quantised in one step through a per-channel table of the 256 pixel values,
computed here as the export computes the reference input (``(pixel - mean) * (1 / std)`` in
float32, then the TFLite input quantisation), so the C input codes are the reference's exactly.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from iotnas import __version__
from iotnas.export._tflite import TensorQuantization
from iotnas.export.c._emit import _float_literal, model_header, runtime_source
from iotnas.export.c._graph import Graph, Op
from iotnas.export.c._plan import ArenaPlan

RUNTIME_FILES = ("iotnas_int8.h", "iotnas_int8_x86.h", "iotnas_int8.c", "iotnas_avx2.h")
_PER_LINE = 16
#: Zero bytes after a convolution's filter: the kernels' dot products run in steps of 8 over a
#: zero-padded copy of the input, so the last output channel's row is read up to 7 bytes past its end.
FILTER_SLACK_BYTES = 8


def _ints(ctype: str, name: str, values: np.ndarray) -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    text = [("(-2147483647 - 1)" if v == -(2**31) else str(v)) for v in flat] or ["0"]
    rows = ",\n".join("    " + ", ".join(text[i:i + _PER_LINE]) for i in range(0, len(text), _PER_LINE))
    return f"static const {ctype} {name}[{len(text)}] = {{\n{rows}\n}};\n"


def input_table(meta: dict[str, Any], scale: float, zero_point: int) -> np.ndarray:
    """(channels, 256) int8: the input code of each raw pixel value per channel."""
    inp = meta["input"]
    pixels = torch.arange(256, dtype=torch.float32).view(256, 1)
    mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1)
    std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1)
    x = ((pixels - mean) * (1.0 / std)).numpy()
    return TensorQuantization(shape=(), scale=scale, zero_point=zero_point).quantize(x).T.copy()


def _requant(ident: str, p: dict[str, Any]) -> tuple[str, str]:
    """(arrays, initialiser of an ``iotnas_requant_t``) of a layer's per-channel requantisation."""
    arrays = (_ints("int32_t", f"{ident}_bias", p["bias"]) + _ints("int32_t", f"{ident}_multiplier", p["multiplier"])
              + _ints("int8_t", f"{ident}_shift", p["shift"]))
    return arrays, (f"{{{ident}_bias, {ident}_multiplier, {ident}_shift, {p['in_zp']}, {p['out_zp']}, "
                    f"{p['act_min']}, {p['act_max']}}}")


def _geometry(p: dict[str, Any]) -> str:
    """Initialiser of an ``iotnas_geometry_t``."""
    return "{" + ", ".join(str(p[k]) for k in ("hin", "win", "hout", "wout", "kh", "kw", "sh", "sw", "pt", "pl")) + "}"


def _filter(p: dict[str, Any], slack: int) -> np.ndarray:
    """An operator's int8 filter, flat, followed by ``slack`` zero bytes."""
    flat = np.asarray(p["filter"]).reshape(-1)
    return np.concatenate([flat, np.zeros(slack, dtype=flat.dtype)])


def _declaration(op: Op, ident: str) -> tuple[str, str]:
    """(C declarations, kernel function) of an operator with parameters."""
    p = op.params
    if op.kind in ("conv", "depthwise"):
        arrays, requant = _requant(ident, p)
        fields = ", ".join(str(p[k]) for k in ("in_stride", "in_offset", "cin", "cout"))
        slack = FILTER_SLACK_BYTES if op.kind == "conv" else 0
        return (_ints("int8_t", f"{ident}_filter", _filter(p, slack)) + arrays
                + f"static const iotnas_qconv_t {ident} = {{{_geometry(p)}, {fields}, {ident}_filter, {requant}}};\n",
                "iotnas_qconv" if op.kind == "conv" else "iotnas_qdepthwise")
    if op.kind == "linear":
        arrays, requant = _requant(ident, p)
        return (_ints("int8_t", f"{ident}_filter", _filter(p, 0)) + arrays
                + f"static const iotnas_qlinear_t {ident} = {{{p['n_in']}, {p['n_out']}, {ident}_filter, "
                  f"{requant}}};\n", "iotnas_qlinear")
    if op.kind == "add":
        fields = ", ".join(str(p[k]) for k in ("n", "a_zp", "a_multiplier", "a_shift", "b_zp", "b_multiplier",
                                                "b_shift", "out_zp", "out_multiplier", "out_shift", "act_min",
                                                "act_max"))
        return f"static const iotnas_qadd_t {ident} = {{{fields}}};\n", "iotnas_qadd"
    if op.kind in ("maxpool", "avgpool"):
        fields = ", ".join(str(p[k]) for k in ("c", "count_pad", "pad_value", "act_min", "act_max"))
        return f"static const iotnas_qpool_t {ident} = {{{_geometry(p)}, {fields}}};\n", f"iotnas_q{op.kind}"
    if op.kind == "relu":
        n = int(np.prod(op.shape))
        fields = ", ".join(str(v) for v in (n, p["in_zp"], p["multiplier"], p["shift"], p["out_zp"], p["act_min"],
                                            p["act_max"]))
        return f"static const iotnas_qrelu_t {ident} = {{{fields}}};\n", "iotnas_qrelu"
    raise AssertionError(op.kind)


def constant_bytes(graph: Graph) -> int:
    """Bytes of the layers' constants in flash: filters, biases, multipliers, shifts."""
    return sum(np.asarray(v).nbytes for op in graph.ops for k, v in op.params.items()
               if k in ("filter", "bias", "multiplier", "shift"))


def int8_library(graph: Graph, plan: ArenaPlan, meta: dict[str, Any]) -> dict[str, str]:
    """File name -> text of the int8 C library (runtime kernels included).

    ``meta``: ``model_key``, ``num_classes``, ``in_channels`` and ``input`` (``height``,
    ``width``, per-channel ``mean`` and ``std`` on the 0-255 pixel scale).
    """
    inp = meta["input"]
    c, h, w = meta["in_channels"], inp["height"], inp["width"]

    def at(t: int) -> str:
        return "logits" if t == graph.output else f"iotnas_arena + {plan.offsets[t]}u"

    decls, calls = [], []
    for op in graph.ops:
        ident = "op_" + re.sub(r"\W", "_", op.name)
        p = op.params
        if op.kind == "input":
            decls.append("/* Raw pixel value -> input code, per channel: normalisation and quantisation. */\n"
                         + _ints("int8_t", "iotnas_input_table", input_table(meta, p["scale"], p["zero_point"])))
            calls.append(f"iotnas_qinput(image, {h * w}u, {c}u, iotnas_input_table, {at(op.output)});")
        elif op.kind == "concat":
            pixels, cout = int(np.prod(op.shape[:-1])), op.shape[-1]
            for t, offset in zip(op.inputs, p["offsets"]):
                calls.append(f"iotnas_qconcat({pixels}u, {graph.shapes[t][-1]}u, {at(t)}, {cout}u, {offset}u, "
                             f"{at(op.output)});")
        elif op.kind == "dequantize":
            calls.append(f"iotnas_dequantize({graph.values(op.output)}u, {at(op.inputs[0])}, {p['zero_point']}, "
                         f"{_float_literal(p['scale'])}, logits);")
        else:
            decl, fn = _declaration(op, ident)
            decls.append(f"/* {op.name} */\n{decl}")
            args = ", ".join(at(t) for t in op.inputs)
            calls.append(f"{fn}(&{ident}, {args}, {at(op.output)});")
    weights = constant_bytes(graph)
    model_c = f"""/* {meta['model_key']} in int8, integer arithmetic as TensorFlow Lite Micro's reference kernels:
 * generated by iotnas {__version__} from the full-integer int8 TFLite model. */
#include "iotnas_model.h"
#include "iotnas_int8.h"

/* Layer constants: {weights:,} bytes of int8 filters, int32 biases, Q31 multipliers and shifts. */
{chr(10).join(decls)}
/* Activations: {plan.arena_values:,} int8 values, planned by liveness (peak of live tensors: {plan.live_peak_values:,}). */
static int8_t iotnas_arena[{max(plan.arena_values, 1)}];

int iotnas_run(const uint8_t *image, float *logits) {{
    {(chr(10) + '    ').join(calls)}
    return 0;
}}
"""
    model_h = model_header(meta, arena_bytes=plan.arena_bytes, weight_bytes=weights,
                           arithmetic="int8 weights and activations, integer arithmetic",
                           preprocessing="the library normalises and quantises the pixels itself (one table lookup)")
    return {"iotnas_model.h": model_h, "iotnas_model.c": model_c,
            **{name: runtime_source(name) for name in RUNTIME_FILES}}


__all__ = ["RUNTIME_FILES", "constant_bytes", "input_table", "int8_library"]
