"""Records ATen operators as kernels during one forward pass (used by :func:`trace_kernels`)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Operators that only reshape, alias or allocate: no kernel of their own.
_FREE = {
    "aten.view.default", "aten.t.default", "aten._unsafe_view.default", "aten.reshape.default",
    "aten.flatten.using_ints", "aten.empty.memory_format", "aten.detach.default", "aten.alias.default",
    "aten.expand.default", "aten.permute.default", "aten.squeeze.dim", "aten.unsqueeze.default",
    "aten.contiguous.default", "aten.zeros.default", "aten.clone.default", "aten.dropout.default",
}
_ACTS = {
    "aten.relu.default": "relu", "aten.relu_.default": "relu",
    "aten.hardtanh.default": "relu6", "aten.hardtanh_.default": "relu6",
}


def _pair(v: Any) -> tuple[int, int]:
    v = list(v) if isinstance(v, list | tuple) else [v]
    return (int(v[0]), int(v[-1])) if v else (0, 0)


def _shape_only(func: Any, args: tuple) -> Any:
    """An uninitialised output of the right shape for the operators whose cost is in their arithmetic.

    The trace needs shapes, not values; running convolutions would make oneDNN compile a
    kernel for every new shape, and BatchNorm and the rest cost more than everything else
    together. Returns None for operators that must run (pooling, concatenation, views).
    """
    if func is aten.convolution.default and not args[6]:
        x, w, _, stride, padding, dilation = args[:6]
        size = [
            (x.shape[2 + i] + 2 * _pair(padding)[i] - _pair(dilation)[i] * (w.shape[2 + i] - 1) - 1)
            // _pair(stride)[i] + 1
            for i in range(2)
        ]
        return torch.empty(x.shape[0], w.shape[0], *size)
    if func is aten.addmm.default:
        return torch.empty(args[1].shape[0], args[2].shape[1])
    if func is aten.mm.default:
        return torch.empty(args[0].shape[0], args[1].shape[1])
    if func in (aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default):
        return torch.empty_like(args[0]), torch.empty(0), torch.empty(0)
    if func in (aten.relu_.default, aten.hardtanh_.default, aten.add_.Tensor):
        return args[0]
    if func in (aten.relu.default, aten.hardtanh.default):
        return torch.empty_like(args[0])
    if func is aten.add.Tensor and isinstance(args[1], torch.Tensor) and args[0].shape == args[1].shape:
        return torch.empty_like(args[0])
    return None


class KernelRecorder(TorchDispatchMode):
    """Turns each ATen call into a kernel dict, folding BN and activations into convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[dict[str, Any]] = []
        self.unknown: set[str] = set()
        self._producer: dict[int, int] = {}  # id(tensor) -> index of the kernel that wrote it
        self._alive: list[torch.Tensor] = []  # keeps ids unique for the pass

    def _add(self, kind: str, inputs: list[torch.Tensor], out: torch.Tensor, **attrs: Any) -> None:
        self.kernels.append({
            "kind": kind,
            "in_shapes": tuple(tuple(t.shape[1:]) for t in inputs),
            "out_shape": tuple(out.shape[1:]),
            "attrs": attrs,
        })
        self._mark(out, len(self.kernels) - 1)

    def _mark(self, out: torch.Tensor, index: int) -> None:
        self._producer[id(out)] = index
        self._alive.append(out)

    def _fusable(self, t: torch.Tensor, *, bn: bool) -> int | None:
        index = self._producer.get(id(t))
        if index is None:
            return None
        k = self.kernels[index]
        if k["kind"] == "conv" and k["attrs"]["act"] == "none" and (not bn or not k["attrs"]["bn"]):
            return index
        if not bn and k["kind"] == "bn" and k["attrs"]["act"] == "none":
            return index
        return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = _shape_only(func, args)
        if out is None:
            out = func(*args, **(kwargs or {}))
        name = str(func)
        if name in _FREE:
            if isinstance(out, torch.Tensor) and isinstance(args[0], torch.Tensor) and id(args[0]) in self._producer:
                self._mark(out, self._producer[id(args[0])])
            return out
        if func is aten.convolution.default:
            x, w, b, stride, padding, dilation, transposed, _, groups = args
            if transposed:
                self.unknown.add("transposed convolution")
            self._add("conv", [x], out, kernel=tuple(w.shape[2:]), stride=_pair(stride), padding=_pair(padding),
                      dilation=_pair(dilation), groups=int(groups), bias=b is not None, bn=False, act="none")
        elif func in (aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default):
            y = out[0]
            index = self._fusable(args[0], bn=True)
            if index is not None:
                self.kernels[index]["attrs"].update(bn=True, bias=True)
                self._mark(y, index)
            else:
                self._add("bn", [args[0]], y, act="none")
        elif name in _ACTS:
            index = self._fusable(args[0], bn=False)
            act = _ACTS[name]
            if act == "relu6" and (float(args[1]), float(args[2])) != (0.0, 6.0):
                self.unknown.add(f"hardtanh{args[1:3]}")
            if index is not None:
                self.kernels[index]["attrs"]["act"] = act
                self._mark(out, index)
            else:
                self._add("act", [args[0]], out, act=act)
        elif func in (aten.add.Tensor, aten.add_.Tensor) and all(isinstance(a, torch.Tensor) for a in args[:2]):
            self._add("add", list(args[:2]), out)
        elif func is aten.cat.default:
            dim = args[1] if len(args) > 1 else 0
            if dim not in (1, -3):
                self.unknown.add(f"cat(dim={dim})")
            self._add("cat", list(args[0]), out)
        elif func in (aten.max_pool2d_with_indices.default, aten.max_pool2d.default):
            x, kernel = args[0], args[1]
            stride = args[2] if len(args) > 2 and args[2] else kernel
            padding = args[3] if len(args) > 3 else 0
            ceil = bool(args[5]) if len(args) > 5 else False
            y = out[0] if isinstance(out, tuple) else out
            self._add("maxpool", [x], y, kernel=_pair(kernel), stride=_pair(stride), padding=_pair(padding),
                      ceil_mode=ceil)
        elif func is aten.avg_pool2d.default:
            x, kernel = args[0], args[1]
            stride = args[2] if len(args) > 2 and args[2] else kernel
            padding = args[3] if len(args) > 3 else 0
            ceil = bool(args[4]) if len(args) > 4 else False
            include = bool(args[5]) if len(args) > 5 else True
            self._add("avgpool", [x], out, kernel=_pair(kernel), stride=_pair(stride), padding=_pair(padding),
                      ceil_mode=ceil, count_include_pad=include)
        elif func is aten._adaptive_avg_pool2d.default and _pair(args[1]) == (1, 1):
            self._add("gap", [args[0]], out)
        elif func is aten.mean.dim and {d % 4 for d in args[1]} == {2, 3} and args[0].dim() == 4:
            self._add("gap", [args[0]], out)
        elif func is aten.addmm.default:
            self._add("linear", [args[1]], out)
        elif func is aten.mm.default:
            self._add("linear", [args[0]], out)
        else:
            self.unknown.add(name)
        return out
