"""``model_int8.tflite``: the deployed network as a full-integer int8 TFLite model, what TensorFlow Lite Micro runs.

The converter walks the ``torch.fx`` graph of the deployed module (:func:`iotnas.export.deploy`,
BatchNorm already folded) rather than the exported ONNX graph: the fx graph names each layer by
its PyTorch module, with exact padding, groups and strides, and holds the deployed values
themselves, while ``model.onnx`` carries the format's decoding nodes and would have to be pattern
matched back into layers. One pass over the same graph calibrates the activations, so every
TFLite tensor has the range of exactly the PyTorch value it stands for.

Quantization follows the TFLite int8 specification:

* weights: symmetric int8 (zero point 0), one float32 scale per output channel (axis 0 of
  ``CONV_2D`` and ``FULLY_CONNECTED`` filters, axis 3 of ``DEPTHWISE_CONV_2D`` filters);
  taken from the int8 deployed network they are its codes exactly;
* biases: int32, scale = input scale x weight scale of the channel, zero point 0;
* activations, input and output: asymmetric int8, scale and zero point from the min/max of the
  value over calibration images (the training images, preprocessed as in training), the range
  widened to contain 0 so that zero padding and ReLU are exact; ``CONCATENATION``, pooling and
  ``RESHAPE`` keep their input's parameters (TFLite requires it), so those values share one range.

Lowerings: a ReLU (or ReLU6) that is the only reader of a convolution, linear layer or addition is
fused into it; PyTorch's explicit padding becomes TFLite ``SAME`` where both pad the same rows and
columns, else an explicit ``PAD`` (``PADV2`` with -128 before a max pool) and ``VALID``; a grouped
convolution that is not depthwise becomes ``SPLIT`` + one ``CONV_2D`` per group + ``CONCATENATION``
(TensorFlow Lite Micro's ``CONV_2D`` has no groups); a BatchNorm left as a per-channel affine
(:class:`ChannelAffine`) becomes a 1x1 ``DEPTHWISE_CONV_2D``; ``flatten`` becomes ``RESHAPE``, and
the linear layer that reads a flattened NHWC map takes its columns in NHWC order.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from torch import fx, nn

from iotnas.errors import ExportError
from iotnas.export._deploy import ChannelAffine, DeployedModel
from iotnas.export._tflite_schema import FlatModel, Quantization, write_table
from iotnas.formats import IntFormat

#: Training images the activation ranges are calibrated on: a few hundred, as TFLite's converter advises.
CALIBRATION_IMAGES = 512
_CALIBRATION_BATCH = 128  # images per forward pass
_QMIN, _QMAX = -128, 127
_INT32_MAX = 2**31 - 1
#: TFLite's weights: symmetric int8, one float32 scale per output channel (rows of a 2-D view).
_WEIGHTS = IntFormat(8, scale_format="float32")
B, O = tflite.BuiltinOperator, tflite.BuiltinOptions
#: Operator versions TensorFlow's converter writes for int8 operands (runtimes resolve kernels by them).
_VERSIONS = {B.CONV_2D: 3, B.DEPTHWISE_CONV_2D: 3, B.FULLY_CONNECTED: 4, B.ADD: 2, B.CONCATENATION: 2,
             B.MAX_POOL_2D: 2, B.AVERAGE_POOL_2D: 2, B.RESHAPE: 1, B.PAD: 2, B.PADV2: 2, B.SPLIT: 2, B.RELU: 2,
             B.RELU6: 2}
_OP_NAMES = {v: k for k, v in vars(B).items() if not k.startswith("_")}
_ACTIVATIONS = {None: tflite.ActivationFunctionType.NONE, "relu": tflite.ActivationFunctionType.RELU,
                "relu6": tflite.ActivationFunctionType.RELU6}


@dataclass(frozen=True, slots=True)
class TensorQuantization:
    """An int8 tensor at the model's edge: ``real = scale * (q - zero_point)``, shape NHWC."""

    shape: tuple[int, ...]
    scale: float
    zero_point: int
    dtype: str = "int8"

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x / self.scale) + self.zero_point, _QMIN, _QMAX).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float32) - self.zero_point) * np.float32(self.scale)


@dataclass(frozen=True, slots=True)
class TfliteFile:
    """An int8 TFLite model, its edge tensors and what it is made of."""

    data: bytes
    input: TensorQuantization
    output: TensorQuantization
    operators: dict[str, int]  # TFLite operator -> how many
    constant_bytes: int  # weights, biases and shape constants (the rest: graph, names, quantization tables)
    calibration_images: int


def int8_tflite(deployed: DeployedModel, calibration: torch.Tensor, *, description: str = "") -> TfliteFile:
    """The full-integer int8 TFLite model of ``deployed`` (batch 1), activations calibrated on ``calibration``.

    ``deployed`` is best the int8 deployed network: its weights are then stored exactly.
    ``calibration`` holds NCHW float32 images preprocessed as in training.

    Raises:
        ExportError: a layer or function the converter cannot emit (named), or a bias beyond int32.
    """
    module = deployed.module
    ranges, shapes = _calibrate(module, calibration)
    converter = _Converter(module, ranges, shapes)
    flat = converter.convert()
    data = flat.serialize(description=description)
    return TfliteFile(data=data, input=converter.edge(flat.inputs[0]), output=converter.edge(flat.outputs[0]),
                      operators=dict(sorted(converter.counts.items())), constant_bytes=flat.constant_bytes,
                      calibration_images=len(calibration))


# ------------------------------------------------------------------------------------------- calibration


class _Observer(fx.Interpreter):
    """Runs the graph and keeps each node's output range and per-image shape."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.ranges: dict[fx.Node, tuple[float, float]] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            lo, hi = self.ranges.get(n, (math.inf, -math.inf))
            low, high = torch.aminmax(out)
            self.ranges[n] = (min(lo, float(low)), max(hi, float(high)))
            self.shapes[n] = tuple(out.shape[1:])
        return out


def _calibrate(module: fx.GraphModule, images: torch.Tensor):
    if images.dim() != 4 or len(images) == 0:
        raise ExportError("calibrating the int8 TFLite model needs at least one NCHW image")
    observer = _Observer(module)
    with torch.no_grad():
        for start in range(0, len(images), _CALIBRATION_BATCH):
            observer.run(images[start:start + _CALIBRATION_BATCH].float())
    return observer.ranges, observer.shapes


def _activation(lo: float, hi: float) -> Quantization:
    """Asymmetric int8 over [lo, hi] widened to contain 0 (zero is then exactly a code)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / (_QMAX - _QMIN))) if hi > lo else 1.0
    zero_point = int(np.clip(round(_QMIN - lo / scale), _QMIN, _QMAX))
    return Quantization(scale=(scale,), zero_point=(zero_point,))


# ------------------------------------------------------------------------------------------- the graph


@dataclass(frozen=True, slots=True)
class _Conv:
    """A convolution in PyTorch's terms; a per-channel affine is the 1x1 depthwise one."""

    weight: torch.Tensor  # (out, in / groups, kh, kw)
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass(slots=True)
class _Step:
    node: fx.Node
    kind: str
    inputs: tuple[fx.Node, ...]
    layer: object = None  # _Conv, nn.Linear, a pooling module, or the concatenation dim
    activation: str | None = None  # a fused ReLU
    fused_into: _Step | None = None
    users: list[_Step] = field(default_factory=list)


_FUNCTIONS: dict[object, str] = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", operator.add: "add",
                                 torch.add: "add", torch.cat: "cat", torch.concat: "cat", F.max_pool2d: "maxpool",
                                 F.avg_pool2d: "avgpool", F.adaptive_avg_pool2d: "adaptiveavg",
                                 torch.flatten: "flatten", F.dropout: "identity"}
_METHODS = {"relu": "relu", "add": "add", "flatten": "flatten"}
_MODULES: tuple[tuple[type, str], ...] = (
    (nn.Conv2d, "conv"), (ChannelAffine, "conv"), (nn.Linear, "linear"), (nn.ReLU, "relu"), (nn.ReLU6, "relu6"),
    (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"), (nn.AdaptiveAvgPool2d, "adaptiveavg"),
    (nn.Flatten, "flatten"), (nn.Identity, "identity"), (nn.Dropout, "identity"))
_FUSES_ACTIVATION = ("conv", "linear", "add")


def _refuse(node: fx.Node, what: str) -> ExportError:
    return ExportError(f"the int8 TFLite converter cannot emit {what} (node {node.name}); export without it "
                       "with --no-tflite")


def _step(module: fx.GraphModule, node: fx.Node) -> _Step:
    """What ``node`` computes, in the converter's terms."""
    args, kwargs = node.args, node.kwargs
    if node.op == "call_module":
        layer = module.get_submodule(node.target)
        kind = next((k for t, k in _MODULES if isinstance(layer, t)), None)
        if kind is None:
            raise _refuse(node, f"layer {node.target} ({type(layer).__name__})")
        if kind == "conv":
            layer = _conv(node, layer)
        if kind == "flatten" and (layer.start_dim, layer.end_dim) != (1, -1):
            raise _refuse(node, f"{node.target}: a flatten other than flatten(1)")
        return _Step(node, kind, (args[0],), layer)
    if node.op == "call_function":
        kind = _FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        kind = _METHODS.get(node.target)
    else:
        kind = None
    if kind is None:
        raise _refuse(node, f"{node.op} {getattr(node.target, '__name__', node.target)}")
    if kind == "cat":
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        return _Step(node, kind, tuple(args[0]), dim)
    if kind == "add":
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args) or kwargs.get("alpha", 1) != 1:
            raise _refuse(node, "an addition other than of two tensors")
        return _Step(node, kind, tuple(args))
    if kind == "flatten":
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if (start, end) != (1, -1):
            raise _refuse(node, "a flatten other than flatten(1)")
    pools = {"maxpool": nn.MaxPool2d, "avgpool": nn.AvgPool2d, "adaptiveavg": nn.AdaptiveAvgPool2d}
    layer = pools[kind](*args[1:], **kwargs) if kind in pools else None
    return _Step(node, kind, (args[0],), layer)


def _conv(node: fx.Node, layer: nn.Module) -> _Conv:
    if isinstance(layer, ChannelAffine):
        channels = layer.scale.numel()
        return _Conv(layer.scale.detach().reshape(channels, 1, 1, 1), layer.shift.detach(), (1, 1), (0, 0), (1, 1),
                     channels)
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise _refuse(node, f"convolution {node.target} with padding {layer.padding!r} ({layer.padding_mode})")
    return _Conv(layer.weight.detach(), None if layer.bias is None else layer.bias.detach(), tuple(layer.stride),
                 tuple(layer.padding), tuple(layer.dilation), layer.groups)


# ------------------------------------------------------------------------------------------- the converter


class _Converter:
    """Emits one TFLite operator (or a short lowering) per fx node, in graph order."""

    def __init__(self, module: fx.GraphModule, ranges, shapes):
        self.module, self.ranges, self.shapes = module, ranges, shapes
        self.flat = FlatModel()
        self.counts: Counter[str] = Counter()
        self.steps: dict[fx.Node, _Step] = {}
        self.alias: dict[fx.Node, fx.Node] = {}  # identity nodes -> the node holding their value
        self.tensors: dict[fx.Node, int] = {}
        self.parent: dict[fx.Node, fx.Node] = {}  # union-find: values sharing one quantization
        self._classes: dict[fx.Node, tuple[float, float]] = {}  # root -> range of its values

    # -- planning -----------------------------------------------------------------------------
    def _value(self, node: fx.Node) -> fx.Node:
        """The node whose output tensor holds ``node``'s value (through identities and fused activations)."""
        node = self.alias.get(node, node)
        step = self.steps.get(node)
        while step is not None and step.fused_into is not None:
            node, step = step.fused_into.node, step.fused_into
        return node

    def _root(self, node: fx.Node) -> fx.Node:
        while self.parent.get(node, node) is not node:
            node = self.parent[node]
        return node

    def _join(self, a: fx.Node, b: fx.Node) -> None:
        ra, rb = self._root(self._value(a)), self._root(self._value(b))
        if ra is not rb:
            self.parent[rb] = ra

    def _plan(self) -> fx.Node:
        graph_input = output = None
        for node in self.module.graph.nodes:
            if node.op == "placeholder":
                if graph_input is not None:
                    raise _refuse(node, "a second model input")
                graph_input = node
            elif node.op == "output":
                output = node.args[0]
                if not isinstance(output, fx.Node):
                    raise _refuse(node, "an output other than one tensor")
            elif node.op != "get_attr":
                step = _step(self.module, node)
                if step.kind == "identity":
                    self.alias[node] = self.alias.get(step.inputs[0], step.inputs[0])
                    continue
                self.steps[node] = step
                for i in step.inputs:
                    if (source := self.steps.get(self.alias.get(i, i))) is not None:
                        source.users.append(step)
        for step in self.steps.values():  # fuse a ReLU into its only reader's producer
            source = self.steps.get(self.alias.get(step.inputs[0], step.inputs[0]))
            if step.kind in ("relu", "relu6") and source is not None and source.kind in _FUSES_ACTIVATION \
                    and source.users == [step] and source.activation is None and self._alias_free(source.node):
                source.activation, source.fused_into = step.kind, step
        for step in self.steps.values():
            if step.kind in ("cat", "maxpool", "avgpool", "adaptiveavg", "flatten"):
                for i in step.inputs:
                    self._join(step.node, i)
        return graph_input

    def _alias_free(self, node: fx.Node) -> bool:
        """No identity node reads ``node`` (fusing through one would skip its own tensor)."""
        return all(self.steps.get(u) is not None for u in node.users)

    def _quantization(self, node: fx.Node) -> Quantization:
        if not self._classes:  # every value's range, joined over the values that share a quantization
            for n, (lo, hi) in self.ranges.items():
                if n in self.alias or (n in self.steps and self.steps[n].fused_into is not None):
                    continue  # an identity's value is its input's; a fused producer's pre-activation is not stored
                root = self._root(n)
                old_lo, old_hi = self._classes.get(root, (lo, hi))
                self._classes[root] = (min(lo, old_lo), max(hi, old_hi))
        return _activation(*self._classes[self._root(self._value(node))])

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        """NHWC shape (batch 1) of a node's value."""
        shape = self.shapes[self._value(node)]
        return (1, shape[1], shape[2], shape[0]) if len(shape) == 3 else (1, *shape)

    def _new(self, node: fx.Node) -> int:
        """The int8 activation tensor of ``node``'s value."""
        value = self._value(node)
        index = self.flat.tensor(value.name, self._shape(value), np.int8, quantization=self._quantization(value))
        self.tensors[value] = index
        return index

    def _tensor(self, node: fx.Node) -> int:
        return self.tensors[self._value(node)]

    def edge(self, index: int) -> TensorQuantization:
        q = self.flat.quantization(index)
        return TensorQuantization(shape=self.flat.shape(index), scale=q.scale[0], zero_point=q.zero_point[0])

    # -- emission -----------------------------------------------------------------------------
    def convert(self) -> FlatModel:
        graph_input = self._plan()
        self.flat.inputs = [self._new(graph_input)]
        for step in self.steps.values():
            if step.kind in ("relu", "relu6") and self._value(step.node) in self.tensors:
                continue  # fused into its producer
            getattr(self, f"_emit_{step.kind}")(step)
        output = next(n for n in self.module.graph.nodes if n.op == "output").args[0]
        self.flat.outputs = [self._tensor(output)]
        return self.flat

    def _op(self, builtin: int, inputs: list[int], outputs: list[int], options: tuple[int, Callable] | None = None,
            ) -> None:
        options_type, writer = options if options is not None else (O.NONE, None)
        self.flat.operator(builtin, inputs, outputs, version=_VERSIONS[builtin], options_type=options_type,
                           options=writer)
        self.counts[_OP_NAMES[builtin]] += 1

    def _const(self, name: str, data: np.ndarray, quantization: Quantization | None = None) -> int:
        return self.flat.tensor(name, data.shape, data.dtype, quantization=quantization, data=data)

    def _emit_conv(self, step: _Step) -> None:
        conv: _Conv = step.layer
        x = self._tensor(step.inputs[0])
        channels = self.flat.shape(x)[3]
        kernel = tuple((k - 1) * d + 1 for k, d in zip(conv.weight.shape[2:], conv.dilation))
        padding, x = self._padding(step, x, kernel, conv.stride, conv.padding, fill=None)
        out = self._new(step.node)
        n_out = conv.weight.shape[0]
        if conv.groups == 1:
            return self._conv2d(step, x, out, conv, slice(0, n_out), padding)
        if conv.groups == channels and n_out % channels == 0:
            return self._depthwise(step, x, out, conv, padding)
        groups = conv.groups
        pieces = [self.flat.tensor(f"{step.node.name}/in{g}", (*self.flat.shape(x)[:3], channels // groups), np.int8,
                                   quantization=self.flat.quantization(x)) for g in range(groups)]
        axis = self._const(f"{step.node.name}/axis", np.array(3, dtype=np.int32))
        self._op(B.SPLIT, [axis, x], pieces, (O.SplitOptions, _options(tflite.SplitOptions, NumSplits=groups)))
        per_group = n_out // groups
        outs = []
        for g, piece in enumerate(pieces):
            outs.append(self.flat.tensor(f"{step.node.name}/out{g}", (*self.flat.shape(out)[:3], per_group), np.int8,
                                         quantization=self.flat.quantization(out)))
            self._conv2d(step, piece, outs[-1], conv, slice(g * per_group, (g + 1) * per_group), padding)
        self._op(B.CONCATENATION, outs, [out],
                 (O.ConcatenationOptions, _options(tflite.ConcatenationOptions, Axis=3)))

    def _filter(self, step: _Step, weight: torch.Tensor, x: int, bias: torch.Tensor | None, *,
                layout: Callable[[torch.Tensor], torch.Tensor], axis: int) -> tuple[int, int]:
        """Per-channel int8 filter (rows of ``weight``, laid out by ``layout``) and its int32 bias."""
        encoded = _WEIGHTS.encode(weight.reshape(weight.shape[0], -1).float())
        codes = torch.where(encoded.codes >= 128, encoded.codes - 256, encoded.codes).reshape(weight.shape)
        scales = torch.where(encoded.scales == 0, 1.0, encoded.scales).numpy().astype(np.float32)
        q = layout(codes).to(torch.int8).contiguous().numpy()
        name = step.node.name
        filt = self._const(f"{name}/filter", q, Quantization(tuple(scales.tolist()), (0,) * len(scales), axis))
        bias_scale = np.float32(self.flat.quantization(x).scale[0]) * scales  # float32, as the runtime checks it
        b = np.zeros(len(scales)) if bias is None else bias.double().numpy()
        integers = np.round(b / bias_scale.astype(np.float64))
        if np.abs(integers).max(initial=0) > _INT32_MAX:
            raise ExportError(f"the bias of {name} does not fit int32 at its scale; the int8 TFLite model cannot "
                              "hold it")
        return filt, self._const(f"{name}/bias", integers.astype(np.int32),
                                 Quantization(tuple(bias_scale.tolist()), (0,) * len(scales)))

    def _conv2d(self, step: _Step, x: int, out: int, conv: _Conv, rows: slice, padding: int) -> None:
        bias = None if conv.bias is None else conv.bias[rows]
        filt, b = self._filter(step, conv.weight[rows], x, bias, layout=lambda q: q.permute(0, 2, 3, 1), axis=0)
        self._op(B.CONV_2D, [x, filt, b], [out], (O.Conv2DOptions, _options(
            tflite.Conv2DOptions, Padding=padding, StrideH=conv.stride[0], StrideW=conv.stride[1],
            DilationHFactor=conv.dilation[0], DilationWFactor=conv.dilation[1],
            FusedActivationFunction=_ACTIVATIONS[step.activation])))

    def _depthwise(self, step: _Step, x: int, out: int, conv: _Conv, padding: int) -> None:
        filt, b = self._filter(step, conv.weight, x, conv.bias, layout=lambda q: q.permute(1, 2, 3, 0), axis=3)
        multiplier = conv.weight.shape[0] // conv.groups
        self._op(B.DEPTHWISE_CONV_2D, [x, filt, b], [out], (O.DepthwiseConv2DOptions, _options(
            tflite.DepthwiseConv2DOptions, Padding=padding, StrideH=conv.stride[0], StrideW=conv.stride[1],
            DepthMultiplier=multiplier, DilationHFactor=conv.dilation[0], DilationWFactor=conv.dilation[1],
            FusedActivationFunction=_ACTIVATIONS[step.activation])))

    def _emit_linear(self, step: _Step) -> None:
        layer: nn.Linear = step.layer
        source = self.steps.get(self.alias.get(step.inputs[0], step.inputs[0]))
        weight = layer.weight.detach()
        if source is not None and source.kind == "flatten" and len(chw := self.shapes[source.inputs[0]]) == 3:
            # The flattened map is NHWC in TFLite: take the columns in (h, w, c) order.
            weight = weight.reshape(weight.shape[0], *chw).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        x = self._tensor(step.inputs[0])
        filt, b = self._filter(step, weight, x, None if layer.bias is None else layer.bias.detach(),
                               layout=lambda q: q, axis=0)
        self._op(B.FULLY_CONNECTED, [x, filt, b], [self._new(step.node)], (O.FullyConnectedOptions, _options(
            tflite.FullyConnectedOptions, FusedActivationFunction=_ACTIVATIONS[step.activation])))

    def _emit_relu(self, step: _Step) -> None:
        self._op(B.RELU, [self._tensor(step.inputs[0])], [self._new(step.node)])

    def _emit_relu6(self, step: _Step) -> None:
        self._op(B.RELU6, [self._tensor(step.inputs[0])], [self._new(step.node)])

    def _emit_add(self, step: _Step) -> None:
        a, b = (self._tensor(i) for i in step.inputs)
        if self.flat.shape(a) != self.flat.shape(b):
            raise _refuse(step.node, "an addition with broadcasting")
        self._op(B.ADD, [a, b], [self._new(step.node)], (O.AddOptions, _options(
            tflite.AddOptions, FusedActivationFunction=_ACTIVATIONS[step.activation])))

    def _emit_cat(self, step: _Step) -> None:
        rank = len(self.shapes[step.node]) + 1
        if step.layer % rank != 1:
            raise _refuse(step.node, f"a concatenation along dimension {step.layer} (only channels are supported)")
        axis = 3 if rank == 4 else 1
        self._op(B.CONCATENATION, [self._tensor(i) for i in step.inputs], [self._new(step.node)],
                 (O.ConcatenationOptions, _options(tflite.ConcatenationOptions, Axis=axis)))

    def _emit_flatten(self, step: _Step) -> None:
        chw = self.shapes[step.inputs[0]]
        if len(chw) == 3 and chw[1] * chw[2] > 1 and any(u.kind != "linear" for u in step.users):
            raise _refuse(step.node, "a flattened feature map read by other than a linear layer (its NHWC order "
                          "differs from PyTorch's)")
        out = self._new(step.node)
        shape = np.array(self.flat.shape(out), dtype=np.int32)
        self._op(B.RESHAPE, [self._tensor(step.inputs[0]), self._const(f"{step.node.name}/shape", shape)], [out],
                 (O.ReshapeOptions, _options(tflite.ReshapeOptions, NewShape=shape)))

    def _emit_maxpool(self, step: _Step) -> None:
        pool: nn.MaxPool2d = step.layer
        if pool.ceil_mode or pool.return_indices or _pair(pool.dilation) != (1, 1):
            raise _refuse(step.node, "a max pooling with ceil_mode, indices or dilation")
        self._pool(step, B.MAX_POOL_2D, _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size),
                   _pair(pool.padding), fill=_QMIN)

    def _emit_avgpool(self, step: _Step) -> None:
        pool: nn.AvgPool2d = step.layer
        if pool.ceil_mode or pool.divisor_override is not None:
            raise _refuse(step.node, "an average pooling with ceil_mode or divisor_override")
        padding = _pair(pool.padding)
        if padding != (0, 0) and not pool.count_include_pad:
            raise _refuse(step.node, "an average pooling with padding left out of the count")
        self._pool(step, B.AVERAGE_POOL_2D, _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size),
                   padding, fill=None)  # padded zeros counted: an explicit PAD, then VALID

    def _emit_adaptiveavg(self, step: _Step) -> None:
        _, h, w = self.shapes[step.inputs[0]]
        size = _pair(step.layer.output_size)
        size = (size[0] or h, size[1] or w)
        if h % size[0] or w % size[1]:
            raise _refuse(step.node, f"an adaptive average pooling of {h}x{w} to {size[0]}x{size[1]}")
        kernel = (h // size[0], w // size[1])
        self._pool(step, B.AVERAGE_POOL_2D, kernel, kernel, (0, 0), fill=None)

    def _pool(self, step: _Step, builtin: int, kernel, stride, padding, *, fill: int | None) -> None:
        x = self._tensor(step.inputs[0])
        tf_padding, x = self._padding(step, x, kernel, stride, padding, fill=fill,
                                      same_ok=builtin == B.MAX_POOL_2D)
        self._op(builtin, [x], [self._new(step.node)], (O.Pool2DOptions, _options(
            tflite.Pool2DOptions, Padding=tf_padding, StrideH=stride[0], StrideW=stride[1], FilterHeight=kernel[0],
            FilterWidth=kernel[1], FusedActivationFunction=tflite.ActivationFunctionType.NONE)))

    def _padding(self, step: _Step, x: int, kernel, stride, padding, *, fill: int | None,
                 same_ok: bool = True) -> tuple[int, int]:
        """TFLite padding for PyTorch's ``padding``: ``SAME`` when it pads the same rows and columns, else
        an explicit ``PAD`` (zeros; ``PADV2`` with ``fill`` codes) and ``VALID``. Returns (padding, input)."""
        if tuple(padding) == (0, 0):
            return tflite.Padding.VALID, x
        _, h, w, c = self.flat.shape(x)
        same = (_same_padding(h, kernel[0], stride[0]), _same_padding(w, kernel[1], stride[1]))
        if same_ok and same == ((padding[0],) * 2, (padding[1],) * 2):
            return tflite.Padding.SAME, x
        quantization = self.flat.quantization(x)
        pads = np.array([[0, 0], [padding[0]] * 2, [padding[1]] * 2, [0, 0]], dtype=np.int32)
        padded = self.flat.tensor(f"{step.node.name}/padded", (1, h + 2 * padding[0], w + 2 * padding[1], c),
                                  np.int8, quantization=quantization)
        inputs = [x, self._const(f"{step.node.name}/pads", pads)]
        if fill is None:
            self._op(B.PAD, inputs, [padded])
        else:
            value = self._const(f"{step.node.name}/fill", np.array(fill, dtype=np.int8), quantization)
            self._op(B.PADV2, [*inputs, value], [padded])
        return tflite.Padding.VALID, padded


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TFLite's ``SAME``: the output has ceil(size / stride) positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _options(table, **fields) -> Callable:
    """A writer of an options table: ``fields`` named as the ``tflite`` builder's ``<Table>Add<Field>``."""
    def write(b) -> int:
        vectors = {k: b.CreateNumpyVector(v) for k, v in fields.items() if isinstance(v, np.ndarray)}
        return write_table(b, table.__name__, **{k: vectors.get(k, v) for k, v in fields.items()})

    return write


__all__ = ["CALIBRATION_IMAGES", "TensorQuantization", "TfliteFile", "int8_tflite"]
