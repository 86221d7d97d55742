"""A network as a list of kernels: the units the predictor is calibrated on.

In the spirit of nn-Meter, a *kernel* is what the runtime executes as one unit:
a convolution with its folded BatchNorm and activation, a standalone
BatchNorm or activation, a linear layer, a pooling, an addition, a
concatenation. :func:`trace_kernels` records them, with their shapes, from one
forward pass of a module (every ATen operator is seen, functional calls
included); :meth:`Kernel.onnx` builds a one-kernel ONNX graph to time on the
device; :meth:`Kernel.features` describes it to the regressor.

Shapes are per image (batch 1). torch is imported only by the tracer, so a
board can build and time kernel graphs without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from iotnas.errors import LatencyError

if TYPE_CHECKING:
    from torch import nn

KINDS = ("conv", "bn", "act", "linear", "maxpool", "avgpool", "gap", "add", "cat")
_OPSET = 17


@dataclasses.dataclass(frozen=True, slots=True)
class Kernel:
    """One runtime kernel: kind, input shapes and output shape (batch 1, no batch dim), attributes."""

    kind: str
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LatencyError(f"unknown kernel kind {self.kind!r}; known: {', '.join(KINDS)}")

    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def key(self) -> str:
        """Stable identity (JSON text): equal keys are the same computation."""
        return json.dumps([self.kind, self.in_shapes, self.out_shape, self.attrs], separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> Kernel:
        try:
            kind, ins, out, attrs = json.loads(key)
            return cls(
                kind=kind,
                in_shapes=tuple(tuple(int(d) for d in s) for s in ins),
                out_shape=tuple(int(d) for d in out),
                attrs=tuple((str(k), _tuple(v)) for k, v in attrs),
            )
        except (ValueError, TypeError) as exc:
            raise LatencyError(f"malformed kernel key {key[:80]!r}: {exc}") from exc

    @property
    def flops(self) -> int:
        """Arithmetic per image: 2 x MACs for conv/linear, one per element visited otherwise."""
        out = math.prod(self.out_shape)
        a = self.attr
        if self.kind == "conv":
            cin = self.in_shapes[0][0]
            return 2 * out * (cin // a["groups"]) * math.prod(a["kernel"])
        if self.kind == "linear":
            return 2 * self.in_shapes[0][0] * self.out_shape[0]
        if self.kind in ("maxpool", "avgpool"):
            return out * math.prod(a["kernel"])
        if self.kind == "gap":
            return math.prod(self.in_shapes[0])
        return out

    @property
    def weight_values(self) -> int:
        a = self.attr
        if self.kind == "conv":
            cin, cout = self.in_shapes[0][0], self.out_shape[0]
            return cout * (cin // a["groups"]) * math.prod(a["kernel"]) + cout
        if self.kind == "linear":
            return (self.in_shapes[0][0] + 1) * self.out_shape[0]
        if self.kind == "bn":
            return 4 * self.out_shape[0]
        return 0

    def features(self) -> list[float]:
        """Numbers the per-kernel regressor sees: kind, log-sizes, and the convolution's shape."""
        a = self.attr
        cin = self.in_shapes[0][0]
        spatial = self.in_shapes[0][1] if len(self.in_shapes[0]) > 1 else 1
        kernel = a.get("kernel", (1, 1))
        stride = a.get("stride", (1, 1))
        groups = a.get("groups", 1)
        onehot = [1.0 if self.kind == k else 0.0 for k in KINDS]
        return onehot + [
            math.log2(1 + self.flops),
            math.log2(1 + sum(math.prod(s) for s in self.in_shapes)),
            math.log2(1 + math.prod(self.out_shape)),
            math.log2(1 + self.weight_values),
            math.log2(cin),
            math.log2(self.out_shape[0]),
            math.log2(spatial),
            float(kernel[0]),
            float(stride[0]),
            math.log2(groups),
            1.0 if groups == cin and groups > 1 else 0.0,
            float(len(self.in_shapes)),
            1.0 if a.get("act", "none") != "none" else 0.0,
        ]

    def onnx(self, *, seed: int = 0) -> bytes:
        """A one-kernel ONNX graph with random weights and one float input (the first operand)."""
        return _kernel_onnx(self, seed)


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def _kernel_onnx(k: Kernel, seed: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    a = k.attr
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, shape: tuple[int, ...], *, positive: bool = False) -> str:
        values = rng.standard_normal(shape).astype(np.float32) * np.float32(0.1)
        inits.append(numpy_helper.from_array(np.abs(values) + 0.5 if positive else values, name))
        return name

    x_shape = (1, *k.in_shapes[0])
    out = "y"
    act = a.get("act", "none")
    last = "z" if act != "none" else out
    if k.kind == "conv":
        cin, cout = k.in_shapes[0][0], k.out_shape[0]
        w = const("w", (cout, cin // a["groups"], *a["kernel"]))
        inputs = ["x", w] + ([const("b", (cout,))] if a["bias"] else [])
        p = a["padding"]
        nodes.append(
            helper.make_node(
                "Conv", inputs, [last], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                pads=[p[0], p[1], p[0], p[1]], dilations=list(a["dilation"]), group=a["groups"],
            )
        )
    elif k.kind == "bn":
        c = k.in_shapes[0][0]
        names = [const("s", (c,), positive=True), const("b", (c,)), const("m", (c,)), const("v", (c,), positive=True)]
        nodes.append(helper.make_node("BatchNormalization", ["x", *names], [last], epsilon=1e-5))
    elif k.kind == "act":
        last = "x"
    elif k.kind == "linear":
        w, b = const("w", (k.out_shape[0], k.in_shapes[0][0])), const("b", (k.out_shape[0],))
        nodes.append(helper.make_node("Gemm", ["x", w, b], [out], transB=1))
    elif k.kind in ("maxpool", "avgpool"):
        p = a["padding"]
        common = dict(kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[p[0], p[1], p[0], p[1]],
                      ceil_mode=int(a["ceil_mode"]))
        if k.kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", ["x"], [out], **common))
        else:
            nodes.append(helper.make_node("AveragePool", ["x"], [out], count_include_pad=int(a["count_include_pad"]),
                                          **common))
    elif k.kind == "gap":
        nodes.append(helper.make_node("GlobalAveragePool", ["x"], [out]))
    elif k.kind == "add":
        nodes.append(helper.make_node("Add", ["x", const("other", (1, *k.in_shapes[1]))], [out]))
    elif k.kind == "cat":
        others = [const(f"c{i}", (1, *s)) for i, s in enumerate(k.in_shapes[1:])]
        nodes.append(helper.make_node("Concat", ["x", *others], [out], axis=1))
    if act == "relu":
        nodes.append(helper.make_node("Relu", [last], [out]))
    elif act == "relu6":
        lo = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
        hi = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
        inits += [lo, hi]
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], [out]))
    graph = helper.make_graph(
        nodes,
        f"kernel_{k.kind}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, *k.out_shape])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    return model.SerializeToString()


def trace_kernels(module: nn.Module, *, input_shape: tuple[int, ...]) -> list[Kernel]:
    """The kernels of one forward pass of ``module`` on a ``(C, H, W)`` image, in execution order.

    BatchNorm after a convolution and an activation after either are folded
    into the convolution, as ONNX export and ONNX Runtime do. Shape-only
    operators (views, transposes) cost nothing and are dropped.

    Raises:
        LatencyError: the network uses an operator no kernel describes.
    """
    import torch

    from iotnas.latency._tracer import KernelRecorder

    module = module.eval()
    recorder = KernelRecorder()
    with torch.no_grad(), recorder:
        module(torch.zeros((1, *input_shape)))
    if recorder.unknown:
        raise LatencyError(f"cannot describe operators {sorted(recorder.unknown)} as kernels")
    return [
        Kernel(kind=k["kind"], in_shapes=k["in_shapes"], out_shape=k["out_shape"],
               attrs=tuple(sorted(k["attrs"].items())))
        for k in recorder.kernels
    ]


def arch_kernels(arch: Any, *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> list[Kernel]:
    """The kernels of an architecture (an :class:`~iotnas.arch.Arch` or its key).

    The network is built without initialising weights and the trace skips the
    arithmetic, so tracing even the largest released model takes a fraction of a second.
    """
    import torch

    from iotnas.arch import Arch
    from iotnas.spaces import build

    arch = Arch.parse(arch) if isinstance(arch, str) else arch
    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    model.to_empty(device="cpu")  # uninitialised: the trace reads shapes, never values
    return trace_kernels(model, input_shape=(in_channels, input_size, input_size))
