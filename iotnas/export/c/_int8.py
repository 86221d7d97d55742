"""The int8 TFLite model as C integer operators: what ``iotnas_run`` computes for an int8 export.

Why read ``model_int8.tflite`` rather than the ``torch.fx`` graph: the int8 model already fixes
every quantity of integer inference (activation scales and zero points calibrated on training
images, per-channel int8 weights, int32 biases; see :mod:`iotnas.export._tflite`), so the C
library computes what TensorFlow Lite computes from the same file, and its check against the
LiteRT interpreter compares one model with itself.

The requantisation constants are derived as TensorFlow Lite's ``Prepare`` functions derive them:
a convolution's or linear layer's channel rescales by ``input_scale * weight_scale[c] /
output_scale`` (in double), turned into a Q31 multiplier and a power-of-two shift
(``QuantizeMultiplier``: ``frexp``, round half away from zero); an addition rescales both inputs
to twice the larger input scale over 2^20 and the sum to the output's; a ReLU between two
scales by ``input_scale / output_scale`` (float32 division, as the kernel computes it); fused
activations clamp to TensorFlow Lite's quantised ranges.

Lowerings: a ``SPLIT`` piece is a view of its input (the grouped convolution reading it takes a
channel offset) and a ``RESHAPE`` output is its input; a ``PAD``/``PADV2`` is folded into the
convolution or pooling that reads it (padding with the input zero point adds nothing to a
convolution, -128 never wins a max pooling, and an average pooling counts the pad values);
concatenation and pooling keep their input's scale (TensorFlow Lite requires it), so they copy
and compare codes without requantising. The logits are dequantised into the caller's floats by
a final ``dequantize`` operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tflite

from iotnas.errors import ExportError
from iotnas.export.c._graph import Graph, Op

B = tflite.BuiltinOperator
_NAMES = {v: k for k, v in vars(B).items() if not k.startswith("_")}
_QMIN, _QMAX = -128, 127
#: TensorFlow Lite's headroom for int8 additions (``left_shift`` in ``add.cc``); the C kernel uses the same.
ADD_LEFT_SHIFT = 20
_SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "CONCATENATION", "MAX_POOL_2D",
              "AVERAGE_POOL_2D", "RESHAPE", "PAD", "PADV2", "SPLIT", "RELU", "RELU6")


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(Q31 multiplier, shift) with ``real ≈ multiplier * 2^(shift - 31)``: TensorFlow Lite's
    ``QuantizeMultiplier`` (``frexp``, then the mantissa times 2^31 rounded half away from zero)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    fixed = math.floor(abs(mantissa) * 2.0**31 + 0.5) * (1 if mantissa > 0 else -1)
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def _round_away(v: float) -> int:
    """C's ``roundf``: halves away from zero."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """The codes a fused activation clamps to (``CalculateActivationRangeQuantized``)."""
    def code(real: float) -> int:
        return zero_point + _round_away(float(np.float32(real) / np.float32(scale)))

    kinds = tflite.ActivationFunctionType
    if activation == kinds.NONE:
        return _QMIN, _QMAX
    if activation == kinds.RELU:
        return max(_QMIN, code(0.0)), _QMAX
    if activation == kinds.RELU6:
        return max(_QMIN, code(0.0)), min(_QMAX, code(6.0))
    raise ExportError(f"fused activation {activation} of the int8 TFLite model cannot be emitted as C")


@dataclass(frozen=True, slots=True)
class _Tensor:
    shape: tuple[int, ...]  # as stored, batch included
    scale: np.ndarray  # float32, one per channel of a per-channel tensor
    zero_point: np.ndarray  # int64
    data: np.ndarray | None  # a constant's values

    @property
    def s(self) -> float:
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        return int(self.zero_point[0])


@dataclass(frozen=True, slots=True)
class _View:
    """Where an operator's input lies: channels ``[offset, offset + channels)`` of ``base``,
    after zero or more folded pads."""

    base: int
    offset: int
    channels: int
    pad: tuple[int, int] = (0, 0)  # rows above, columns left of an explicit pad
    pad_value: int | None = None


def _read(data: bytes) -> tuple[Any, Any, list[_Tensor]]:
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ExportError("the int8 TFLite model must have one subgraph to be emitted as C")
    graph = model.Subgraphs(0)
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        q = t.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and not q.ScaleIsNone() else np.ones(1, np.float32)
        zp = q.ZeroPointAsNumpy() if q is not None and not q.ZeroPointIsNone() else np.zeros(1, np.int64)
        buffer = model.Buffers(t.Buffer())
        dtype = {tflite.TensorType.INT8: np.int8, tflite.TensorType.INT32: np.int32}.get(t.Type())
        if dtype is None:
            raise ExportError(f"tensor {t.Name().decode()} of the TFLite model is not int8 or int32; only "
                              "full-integer int8 models are emitted as integer C")
        data_ = None
        if buffer is not None and not buffer.DataIsNone() and buffer.DataLength() > 0:
            data_ = buffer.DataAsNumpy().view(np.dtype(dtype).newbyteorder("<")).reshape(
                () if t.ShapeIsNone() else tuple(t.ShapeAsNumpy()))
        shape = () if t.ShapeIsNone() else tuple(int(d) for d in t.ShapeAsNumpy())
        tensors.append(_Tensor(shape, np.asarray(scale, np.float32),
                               np.asarray(zp, np.int64), data_))
    return model, graph, tensors


def _options(op: Any, table: type) -> Any:
    options = table()
    raw = op.BuiltinOptions()
    options.Init(raw.Bytes, raw.Pos)
    return options


def _same_before(size: int, out: int, kernel: int, stride: int) -> int:
    """Rows (columns) ``SAME`` pads before the input (``ComputePaddingWithOffset``)."""
    return max((out - 1) * stride + kernel - size, 0) // 2


def int8_graph(data: bytes) -> Graph:
    """The C integer operators of the full-integer int8 TFLite model ``data`` (batch 1).

    The operators' ``params`` hold their integers and constant arrays; tensor ids are the
    model's tensor indices, plus one for the float logits (``Graph.output``), and
    ``Graph.shapes`` are NHWC without the batch (one byte per value).

    Raises:
        ExportError: an operator, type or setting the C integer kernels do not cover (named).
    """
    model, g, tensors = _read(data)
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise ExportError("the int8 TFLite model must have one input and one output to be emitted as C")
    views: dict[int, _View] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    ops: list[Op] = []

    def view(t: int) -> _View:
        return views.get(t) or _View(t, 0, tensors[t].shape[-1])

    def add(kind: str, name: str, inputs: tuple[int, ...], output: int, **params: Any) -> None:
        shapes[output] = tensors[output].shape[1:]
        ops.append(Op(kind=kind, name=name, inputs=inputs, output=output, shape=shapes[output], params=params))

    first = int(g.Inputs(0))
    add("input", "input", (), first, scale=tensors[first].s, zero_point=tensors[first].zp)
    for index in range(g.OperatorsLength()):
        op = g.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kind = _NAMES.get(builtin, str(builtin))
        inputs, outputs = [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()]
        out = outputs[0]
        name = f"{kind.lower()}_{index}"
        if kind not in _SUPPORTED:
            raise ExportError(f"operator {kind} of the int8 TFLite model cannot be emitted as C; supported: "
                              f"{', '.join(_SUPPORTED)}")
        if kind == "RESHAPE":
            src = view(inputs[0])
            if src.offset or src.channels != tensors[src.base].shape[-1] or src.pad != (0, 0):
                raise ExportError(f"{name}: a reshape of a channel slice or a pad cannot be emitted as C")
            views[out] = src
        elif kind == "SPLIT":
            axis = int(tensors[inputs[0]].data)
            src = view(inputs[1])
            if axis not in (3, -1):
                raise ExportError(f"{name}: a split along axis {axis} cannot be emitted as C; only along channels")
            width = tensors[inputs[1]].shape[-1] // len(outputs)
            for k, piece in enumerate(outputs):  # a padded input stays padded in each piece
                views[piece] = _View(src.base, src.offset + k * width, width, src.pad, src.pad_value)
        elif kind in ("PAD", "PADV2"):
            src = view(inputs[0])
            pads = tensors[inputs[1]].data
            (top, bottom), (left, right) = (int(v) for v in pads[1]), (int(v) for v in pads[2])
            if pads[0].any() or pads[3].any() or top != bottom or left != right or src.pad != (0, 0):
                raise ExportError(f"{name}: only an equal pad of rows and columns before one layer can be emitted as C")
            fill = tensors[out].zp if kind == "PAD" else int(tensors[inputs[2]].data)
            views[out] = _View(src.base, src.offset, src.channels, (top, left), fill)
        elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            _conv(add, name, kind, op, inputs, out, tensors, view(inputs[0]))
        elif kind == "FULLY_CONNECTED":
            src = view(inputs[0])
            x, w, o = tensors[inputs[0]], tensors[inputs[1]], tensors[out]
            if src.offset or src.pad != (0, 0) or w.data is None:
                raise ExportError(f"{name}: a linear layer on a channel slice or a pad cannot be emitted as C")
            activation = _options(op, tflite.FullyConnectedOptions).FusedActivationFunction()
            add("linear", name, (src.base,), out, n_in=int(w.shape[1]), n_out=int(w.shape[0]), filter=w.data,
                **_requant(x, w, tensors[inputs[2]] if len(inputs) > 2 and inputs[2] >= 0 else None, o, activation))
        elif kind == "ADD":
            a, b = (view(i) for i in inputs)
            if any(v.offset or v.pad != (0, 0) or v.channels != tensors[v.base].shape[-1] for v in (a, b)) \
                    or tensors[inputs[0]].shape != tensors[inputs[1]].shape:
                raise ExportError(f"{name}: an addition of slices or with broadcasting cannot be emitted as C")
            activation = _options(op, tflite.AddOptions).FusedActivationFunction()
            add("add", name, (a.base, b.base), out, **_add(tensors[inputs[0]], tensors[inputs[1]], tensors[out],
                                                            activation))
        elif kind == "CONCATENATION":
            options = _options(op, tflite.ConcatenationOptions)
            rank = len(tensors[out].shape)
            if options.Axis() % rank != rank - 1 or options.FusedActivationFunction():
                raise ExportError(f"{name}: a concatenation other than along channels cannot be emitted as C")
            sources = [view(i) for i in inputs]
            o = tensors[out]
            for i, v in zip(inputs, sources):
                if v.offset or v.pad != (0, 0) or (tensors[i].s, tensors[i].zp) != (o.s, o.zp):
                    raise ExportError(f"{name}: a concatenation of slices, pads or inputs at another scale cannot be "
                                      "emitted as C")
            offsets = np.cumsum([0] + [tensors[i].shape[-1] for i in inputs[:-1]]).tolist()
            add("concat", name, tuple(v.base for v in sources), out, offsets=offsets)
        elif kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            _pool(add, name, kind, op, inputs, out, tensors, view(inputs[0]))
        else:  # RELU, RELU6
            src = view(inputs[0])
            if src.offset or src.pad != (0, 0):
                raise ExportError(f"{name}: a ReLU of a channel slice or a pad cannot be emitted as C")
            x, o = tensors[inputs[0]], tensors[out]
            multiplier, shift = quantize_multiplier(float(np.float32(x.s) / np.float32(o.s)))
            act = tflite.ActivationFunctionType.RELU if kind == "RELU" else tflite.ActivationFunctionType.RELU6
            act_min, act_max = activation_range(act, o.s, o.zp)
            add("relu", name, (src.base,), out, in_zp=x.zp, multiplier=multiplier, shift=shift, out_zp=o.zp,
                act_min=act_min, act_max=act_max)
    last = view(int(g.Outputs(0)))
    logits = len(tensors)
    shapes[logits] = tensors[last.base].shape[1:]
    ops.append(Op(kind="dequantize", name="logits", inputs=(last.base,), output=logits, shape=shapes[logits],
                  params={"scale": tensors[last.base].s, "zero_point": tensors[last.base].zp}))
    return Graph(ops=tuple(ops), shapes=shapes, output=logits)


def _requant(x: _Tensor, w: _Tensor, bias: _Tensor | None, out: _Tensor, activation: int, *,
             channel_axis: int = 0) -> dict[str, Any]:
    """Bias and per-channel multiplier and shift of a convolution or linear layer: the rescale
    ``input_scale * weight_scale[c] / output_scale`` in double (``PopulateConvolutionQuantizationParams``).

    The bias holds the input zero point's share too, ``bias[c] - input_zp * sum(w[c])``
    (``channel_axis``: the filter's output-channel axis): the weights are symmetric, so
    ``sum((x - zp) * w) + bias = sum(x * w) + that bias``, and the kernels sum plain products
    (taps in the padding read the zero point).

    Raises:
        ExportError: that bias does not fit in int32.
    """
    channels = out.shape[-1]
    scales = np.broadcast_to(w.scale, (channels,))
    pairs = [quantize_multiplier(float(x.scale[0]) * float(s) / float(out.scale[0])) for s in scales]
    act_min, act_max = activation_range(activation, out.s, out.zp)
    sums = np.moveaxis(w.data.astype(np.int64), channel_axis, 0).reshape(channels, -1).sum(axis=1)
    folded = (np.zeros(channels, np.int64) if bias is None else bias.data.astype(np.int64)) - x.zp * sums
    if np.abs(folded).max(initial=0) >= 2**31:
        raise ExportError("a layer's bias with the input zero point folded in exceeds int32; the int8 model "
                          "cannot be emitted as C")
    return {"bias": folded.astype(np.int32),
            "multiplier": np.array([m for m, _ in pairs], np.int32), "shift": np.array([s for _, s in pairs], np.int8),
            "in_zp": x.zp, "out_zp": out.zp, "act_min": act_min, "act_max": act_max}


def _add(a: _Tensor, b: _Tensor, out: _Tensor, activation: int) -> dict[str, Any]:
    twice = 2.0 * max(a.s, b.s)
    ma, sa = quantize_multiplier(a.s / twice)
    mb, sb = quantize_multiplier(b.s / twice)
    mo, so = quantize_multiplier(twice / float(np.float32((1 << ADD_LEFT_SHIFT) * np.float32(out.s))))
    act_min, act_max = activation_range(activation, out.s, out.zp)
    return {"n": int(np.prod(out.shape)), "a_zp": a.zp, "a_multiplier": ma, "a_shift": sa, "b_zp": b.zp,
            "b_multiplier": mb, "b_shift": sb, "out_zp": out.zp, "out_multiplier": mo, "out_shift": so,
            "act_min": act_min, "act_max": act_max}


def _geometry(name: str, src: _View, tensors: list[_Tensor], out: int, kernel: tuple[int, int],
              stride: tuple[int, int], padding: int) -> dict[str, int]:
    """Input and output sizes, strides and the padding above and left of a window operator."""
    _, hin, win, _ = tensors[src.base].shape
    _, hout, wout, _ = tensors[out].shape
    if padding == tflite.Padding.SAME:
        if src.pad != (0, 0):
            raise ExportError(f"{name}: SAME padding after an explicit pad cannot be emitted as C")
        pt, pl = _same_before(hin, hout, kernel[0], stride[0]), _same_before(win, wout, kernel[1], stride[1])
    else:
        pt, pl = src.pad
    return {"hin": hin, "win": win, "hout": hout, "wout": wout, "kh": kernel[0], "kw": kernel[1], "sh": stride[0],
            "sw": stride[1], "pt": pt, "pl": pl}


def _conv(add, name: str, kind: str, op: Any, inputs: list[int], out: int, tensors: list[_Tensor],
          src: _View) -> None:
    table = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
    options = _options(op, table)
    if (options.DilationHFactor(), options.DilationWFactor()) != (1, 1):
        raise ExportError(f"{name}: a dilated convolution cannot be emitted as C")
    x, w, o = tensors[inputs[0]], tensors[inputs[1]], tensors[out]
    if w.data is None:
        raise ExportError(f"{name}: a convolution with a non-constant filter cannot be emitted as C")
    if src.pad_value is not None and src.pad_value != x.zp:
        raise ExportError(f"{name}: a convolution after a pad with other than the zero point cannot be emitted as C")
    kernel = (w.shape[1], w.shape[2])
    geometry = _geometry(name, src, tensors, out, kernel, (options.StrideH(), options.StrideW()), options.Padding())
    bias = tensors[inputs[2]] if len(inputs) > 2 and inputs[2] >= 0 else None
    cout = o.shape[-1]
    if kind == "DEPTHWISE_CONV_2D" and cout % src.channels:
        raise ExportError(f"{name}: a depthwise convolution of {src.channels} to {cout} channels cannot be emitted")
    if kind == "CONV_2D" and w.shape[3] != src.channels:
        raise ExportError(f"{name}: the filter reads {w.shape[3]} channels of {src.channels}; the model is inconsistent")
    add("conv" if kind == "CONV_2D" else "depthwise", name, (src.base,), out, **geometry,
        in_stride=tensors[src.base].shape[-1], in_offset=src.offset, cin=src.channels, cout=cout, filter=w.data,
        **_requant(x, w, bias, o, options.FusedActivationFunction(), channel_axis=0 if kind == "CONV_2D" else 3))


def _pool(add, name: str, kind: str, op: Any, inputs: list[int], out: int, tensors: list[_Tensor],
          src: _View) -> None:
    options = _options(op, tflite.Pool2DOptions)
    x, o = tensors[inputs[0]], tensors[out]
    if src.offset or (x.s, x.zp) != (o.s, o.zp):
        raise ExportError(f"{name}: a pooling of a channel slice or that rescales cannot be emitted as C")
    if kind == "MAX_POOL_2D" and src.pad_value not in (None, _QMIN):
        raise ExportError(f"{name}: a max pooling after a pad with other than -128 cannot be emitted as C")
    geometry = _geometry(name, src, tensors, out, (options.FilterHeight(), options.FilterWidth()),
                         (options.StrideH(), options.StrideW()), options.Padding())
    act_min, act_max = activation_range(options.FusedActivationFunction(), o.s, o.zp)
    counted = kind == "AVERAGE_POOL_2D" and src.pad_value is not None
    add("maxpool" if kind == "MAX_POOL_2D" else "avgpool", name, (src.base,), out, **geometry, c=o.shape[-1],
        count_pad=int(counted), pad_value=src.pad_value if counted else 0, act_min=act_min, act_max=act_max)


__all__ = ["ADD_LEFT_SHIFT", "activation_range", "int8_graph", "quantize_multiplier"]
