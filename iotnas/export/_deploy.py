"""The deployed weights: BatchNorm folded into the convolution before it, then every value rounded to the format.

A device runs the folded network, not the trained one: a BatchNorm that follows a
convolution (or a linear layer) becomes part of that layer's weights and bias, and one that
does not (DenseNet's pre-activation BatchNorm-ReLU-convolution) becomes a per-channel
scale and shift (:class:`ChannelAffine`). The folded network stores fewer values than the
trained one (four per channel of a BatchNorm become one bias, or two), so its bytes in a
format are at most the bytes the search promised, which count the trained network's state
dict (the paper's convention).

Rounding comes *after* folding, so the values a device holds are exactly the format's
values; every exporter (ONNX, C) and the precision stage's accuracy read them from
:func:`deploy`, so the accuracy a study reports in a format is the deployed network's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from iotnas.errors import ExportError
from iotnas.formats import Encoded, NumberFormat, parse_format, storage_bytes


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel of an NCHW tensor: an eval-mode BatchNorm with nothing to fold into."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone().float(), requires_grad=False)
        self.shift = nn.Parameter(shift.detach().clone().float(), requires_grad=False)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> ChannelAffine:
        """The same function as ``bn`` in eval mode: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
        inv_std = torch.rsqrt(bn.running_var.float() + bn.eps)
        weight = bn.weight.float() if bn.weight is not None else torch.ones_like(inv_std)
        bias = bn.bias.float() if bn.bias is not None else torch.zeros_like(inv_std)
        scale = weight * inv_std
        return cls(scale, bias - bn.running_mean.float() * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A copy of ``model`` (eval mode) with every BatchNorm folded away, in float32; ``model`` is not changed.

    Convolution → BatchNorm pairs (the convolution's output read by nothing else) are fused by
    ``torch.fx``'s own pass; any other BatchNorm becomes a :class:`ChannelAffine`.

    Raises:
        ExportError: the model cannot be traced (data-dependent control flow).
    """
    source = copy.deepcopy(model).eval()
    try:
        folded = fuse(source, inplace=True)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise ExportError(f"cannot trace the model to fold its BatchNorm layers: {exc}") from exc
    for node in folded.graph.nodes:
        if node.op == "call_module" and isinstance(bn := folded.get_submodule(node.target), nn.BatchNorm2d):
            parent, _, name = node.target.rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, name, ChannelAffine.from_batchnorm(bn))
    folded.recompile()
    if _channels_last(model):
        folded = folded.to(memory_format=torch.channels_last)
    return folded.eval()


def _channels_last(model: nn.Module) -> bool:
    """Whether the model's 4-D weights are laid out NHWC (the precision stage converts for speed)."""
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] * p.shape[2] * p.shape[3] > 1]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights) \
        and not all(p.is_contiguous() for p in weights)


@dataclass(frozen=True, slots=True)
class DeployedTensor:
    """One tensor of the deployed network as stored in the format."""

    name: str  # its state-dict name in :attr:`DeployedModel.module`
    values: torch.Tensor  # float32, the format's values (what the device computes with)
    encoded: Encoded  # the format's codes, and per-channel scales for integer formats

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


@dataclass(frozen=True, slots=True)
class DeployedModel:
    """The network a device runs: folded, every stored value rounded to ``format``.

    ``module`` computes with exactly the values of ``tensors`` (its state dict, in order);
    ``weight_bytes`` is what they take packed in the format (scales of integer formats
    included), never more than ``promised_bytes``, the search's count over the trained network.
    """

    module: fx.GraphModule  # eval mode; outputs are the deployed network's
    format: NumberFormat
    tensors: Mapping[str, DeployedTensor]  # by state-dict name, in state-dict order
    promised_bytes: int  # storage_bytes(format, trained model): the search's figure

    @property
    def n_values(self) -> int:
        return sum(t.values.numel() for t in self.tensors.values())

    @property
    def weight_bytes(self) -> int:
        return storage_bytes(self.format, [t.values for t in self.tensors.values()])


def deploy(model: nn.Module, fmt: NumberFormat | str) -> DeployedModel:
    """The deployed network of a trained ``model`` in ``fmt`` (``model`` itself is not changed).

    Raises:
        ExportError: the model cannot be traced.  FormatError: unknown format.
    """
    fmt = parse_format(fmt)
    module = fold_batchnorm(model)
    tensors = {}
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                raise ExportError(f"the folded network keeps a non-float tensor {name}; it cannot be deployed")
            encoded = fmt.encode(fmt.round(t.detach().float()))
            values = fmt.decode(encoded).reshape(t.shape)
            t.copy_(values)
            tensors[name] = DeployedTensor(name, values, encoded)
    return DeployedModel(module=module, format=fmt, tensors=MappingProxyType(tensors),
                         promised_bytes=storage_bytes(fmt, model))


__all__ = ["ChannelAffine", "DeployedModel", "DeployedTensor", "deploy", "fold_batchnorm"]
