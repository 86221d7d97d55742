"""The network as a list of C operators, read from the ``torch.fx`` graph of the deployed model.

Why ``torch.fx`` and not the exported ONNX graph: the deployed network
(:func:`iotnas.export.deploy`) is already an ``fx.GraphModule`` whose graph names every
weight by its state-dict key, which is exactly how the packed stream is laid out, so each
operator points at its codes in flash with nothing to match; the ONNX graph renames its
initialisers and wraps each in the format's decoding operators.

BatchNorm is folded before the C code sees the network: into the convolution before it,
or into a per-channel scale and shift (:class:`~iotnas.export.ChannelAffine`). A ReLU that
follows a convolution, a scale-and-shift or an addition whose result nothing else reads is
applied in that kernel's epilogue, which saves a pass over memory and an arena buffer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from iotnas.errors import ExportError
from iotnas.export._deploy import ChannelAffine

#: The operators the generator emits; anything else is refused by name.
KINDS = ("input", "conv", "affine", "relu", "maxpool", "avgpool", "add", "concat", "linear")


@dataclass(frozen=True, slots=True)
class Op:
    """One C operator: reads tensors ``inputs`` (ids), writes tensor ``output``.

    ``weights`` maps a role (``weight``, ``bias``, ``scale``, ``shift``) to a state-dict key; ``params`` holds the integer settings (stride, padding…).
    """

    kind: str
    name: str
    inputs: tuple[int, ...]
    output: int
    shape: tuple[int, ...]  # of the output, without the batch dimension: (C, H, W) or (N,)
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    relu: bool = False  # a ReLU applied in the epilogue


@dataclass(frozen=True, slots=True)
class Graph:
    ops: tuple[Op, ...]  # in execution order; ops[0] is the input
    shapes: dict[int, tuple[int, ...]]  # tensor id -> shape without batch dimension
    output: int  # id of the logits

    def values(self, tensor: int) -> int:
        n = 1
        for d in self.shapes[tensor]:
            n *= d
        return n


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _pool_params(kernel: Any, stride: Any, padding: Any, *, ceil_mode: bool = False, count_include_pad: bool = True,
                 where: str) -> dict[str, Any]:
    if ceil_mode:
        raise ExportError(f"{where}: pooling with ceil_mode=True cannot be emitted as C; use ceil_mode=False")
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride not in (None, []) else kernel)
    ph, pw = _pair(padding)
    return {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw, "count_pad": int(bool(count_include_pad))}


def _adaptive_pool_params(size: Any, in_shape: tuple[int, ...], *, where: str) -> dict[str, Any]:
    """Adaptive average pooling whose output divides its input (global pooling: output 1) is an
    average pooling with a fixed window."""
    height, width = in_shape[1], in_shape[2]
    sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    oh, ow = (full if s is None else int(s) for s, full in zip(sizes, (height, width)))  # None: keep that side
    if not (oh and ow and height % oh == 0 and width % ow == 0):
        raise ExportError(f"{where}: adaptive average pooling of {height} x {width} to {oh} x {ow} cannot be "
                          "emitted as C; only to a size that divides the input (1 x 1: global pooling)")
    return _pool_params((height // oh, width // ow), None, 0, where=where)


def trace(model: nn.Module, *, in_channels: int, height: int, width: int) -> Graph:
    """The C operators of ``model`` (the deployed ``fx.GraphModule``, or any eval-mode module
    without BatchNorm) for one ``in_channels × height × width`` image.

    Raises:
        ExportError: the model uses an operator (or a setting of one) the generator cannot emit;
            the message names it.
    """
    model = model.eval()
    try:
        gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on untraceable Python
        raise ExportError(f"the model cannot be traced for C generation: {exc}") from exc
    ShapeProp(gm).propagate(torch.zeros(1, in_channels, height, width))
    modules = dict(gm.named_modules())
    ids: dict[fx.Node, int] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    ops: list[Op] = []
    output = -1

    def shape_of(node: fx.Node) -> tuple[int, ...]:
        return tuple(int(d) for d in node.meta["tensor_meta"].shape[1:])

    def new(node: fx.Node, kind: str, inputs: tuple[int, ...], **kw: Any) -> None:
        tid = len(shapes)
        ids[node] = tid
        shapes[tid] = shape_of(node)
        ops.append(Op(kind=kind, name=node.name, inputs=inputs, output=tid, shape=shapes[tid], **kw))

    for node in gm.graph.nodes:
        where = f"operator {node.name} ({node.op} {node.target})"
        if node.op == "placeholder":
            new(node, "input", ())
            continue
        if node.op == "output":
            output = ids[node.args[0]]
            continue
        if node.op == "get_attr":
            raise ExportError(f"{where}: a tensor attribute used in forward() cannot be emitted as C")
        src = [ids[a] for a in node.all_input_nodes]
        if node.op == "call_module":
            m = modules[node.target]
            prefix = f"{node.target}."
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros" or m.dilation != (1, 1) or isinstance(m.padding, str):
                    raise ExportError(f"{where}: convolution with dilation, string padding or padding_mode "
                                      f"{m.padding_mode!r} cannot be emitted as C")
                w = {"weight": prefix + "weight"} | ({"bias": prefix + "bias"} if m.bias is not None else {})
                new(node, "conv", (src[0],), weights=w, params={
                    "kh": m.kernel_size[0], "kw": m.kernel_size[1], "sh": m.stride[0], "sw": m.stride[1],
                    "ph": m.padding[0], "pw": m.padding[1], "groups": m.groups})
            elif isinstance(m, ChannelAffine):
                new(node, "affine", (src[0],), weights={"scale": prefix + "scale", "shift": prefix + "shift"})
            elif isinstance(m, nn.ReLU):
                new(node, "relu", (src[0],))
            elif isinstance(m, nn.MaxPool2d):
                if m.dilation not in (1, (1, 1)):
                    raise ExportError(f"{where}: dilated max pooling cannot be emitted as C")
                new(node, "maxpool", (src[0],), params=_pool_params(m.kernel_size, m.stride, m.padding,
                                                                     ceil_mode=m.ceil_mode, where=where))
            elif isinstance(m, nn.AvgPool2d):
                new(node, "avgpool", (src[0],), params=_pool_params(
                    m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                    count_include_pad=m.count_include_pad, where=where))
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                new(node, "avgpool", (src[0],), params=_adaptive_pool_params(m.output_size, shapes[src[0]], where=where))
            elif isinstance(m, nn.Linear):
                w = {"weight": prefix + "weight"} | ({"bias": prefix + "bias"} if m.bias is not None else {})
                new(node, "linear", (src[0],), weights=w)
            elif isinstance(m, (nn.Identity, nn.Flatten)):
                ids[node] = src[0]
            else:
                raise ExportError(f"{where}: module {type(m).__name__} cannot be emitted as C; "
                                  f"supported: {', '.join(KINDS[1:])}")
            continue
        target = node.target
        if target in (F.relu, torch.relu, "relu"):
            new(node, "relu", (src[0],))
        elif target in (F.max_pool2d, "max_pool2d"):
            if _arg(node, 4, "dilation", 1) not in (1, (1, 1)):
                raise ExportError(f"{where}: dilated max pooling cannot be emitted as C")
            new(node, "maxpool", (src[0],), params=_pool_params(
                _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None), _arg(node, 3, "padding", 0),
                ceil_mode=bool(_arg(node, 5, "ceil_mode", False)), where=where))
        elif target in (F.avg_pool2d, "avg_pool2d"):
            new(node, "avgpool", (src[0],), params=_pool_params(
                _arg(node, 1, "kernel_size", None), _arg(node, 2, "stride", None), _arg(node, 3, "padding", 0),
                ceil_mode=bool(_arg(node, 4, "ceil_mode", False)),
                count_include_pad=bool(_arg(node, 5, "count_include_pad", True)), where=where))
        elif target in (F.adaptive_avg_pool2d, "adaptive_avg_pool2d"):
            new(node, "avgpool", (src[0],), params=_adaptive_pool_params(
                _arg(node, 1, "output_size", None), shapes[src[0]], where=where))
        elif target in (operator.add, torch.add, "add") and len(src) == 2 and len(node.args) == 2:
            new(node, "add", (ids[node.args[0]], ids[node.args[1]]))
        elif target is torch.cat:
            dim = _arg(node, 1, "dim", 0)
            if dim not in (1, -3) or len(shape_of(node)) != 3:
                raise ExportError(f"{where}: concatenation along dimension {dim} cannot be emitted as C; "
                                  "only along channels")
            new(node, "concat", tuple(ids[a] for a in node.args[0]))
        elif target in (torch.flatten, "flatten", "view", "reshape") and len(shape_of(node)) == 1:
            ids[node] = src[0]  # channel-major memory is already flat
        else:
            raise ExportError(f"{where} cannot be emitted as C; supported: {', '.join(KINDS[1:])}")
    return Graph(ops=tuple(_fuse(ops)), shapes=shapes, output=output)


def _fuse(ops: list[Op]) -> list[Op]:
    """Apply a ReLU in the epilogue of the operator before it when nothing else reads that
    operator's output."""
    readers: dict[int, int] = {}
    for op in ops:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    out: list[Op] = []
    for op in ops:
        prev = out[-1] if out else None
        sole = prev is not None and op.inputs == (prev.output,) and readers.get(prev.output) == 1
        if sole and op.kind == "relu" and prev.kind in ("conv", "affine", "add") and not prev.relu:
            out[-1] = _replace(prev, op, relu=True)
        else:
            out.append(op)
    return out


def _replace(prev: Op, op: Op, **changes: Any) -> Op:
    fields = {"kind": prev.kind, "name": prev.name, "inputs": prev.inputs, "output": op.output, "shape": op.shape,
              "params": prev.params, "weights": prev.weights, "relu": prev.relu} | changes
    return Op(**fields)
