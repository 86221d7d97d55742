"""What a network costs: stored values, MACs, FLOPs, weight bytes, peak activation bytes.

Everything is counted in one pass over a copy of the network built on PyTorch's ``meta``
device (shapes only, no weights allocated), so costing all 1,617 released models is cheap.

Conventions (``search-spaces.md`` section 11):

* ``n_values``: the sum of ``numel()`` over every ``state_dict`` tensor, BatchNorm running
  statistics and ``num_batches_tracked`` included. This is the released ``params`` field.
* ``flops``: the hook rules of the 2018 sovrasov ``flops_counter.py`` that produced the
  released ``flops`` field, summed over every module *call* for one image:
  conv MACs (+ one per output element if biased), linear ``in*out``, BatchNorm
  ``2*numel(input)``, ReLU module ``numel(output)``, MaxPool/AvgPool module ``numel(input)``;
  functional ops, additions and concatenations count 0.
* ``macs``: plain multiply-accumulates of convolutions and linear layers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from iotnas.arch import Arch
from iotnas.errors import FormatError
from iotnas.spaces import SUPPORTED_INPUT_SIZE, build


def weight_bytes(n_values: int, bits: int) -> int:
    """Bytes to store ``n_values`` numbers of ``bits`` bits each, packed: ``ceil(n_values * bits / 8)``.

    This is the one place the formula lives; activation bytes use it too.

    Raises:
        FormatError: ``bits`` is not a positive integer.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        raise FormatError(f"bits per value must be a positive integer, got {bits!r}")
    if isinstance(n_values, bool) or not isinstance(n_values, int) or n_values < 0:
        raise ValueError(f"n_values must be a non-negative integer, got {n_values!r}")
    return (n_values * bits + 7) // 8


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """Counts for one inference of one image (batch 1)."""

    #: Values in the state dict (the released ``params`` convention).
    n_values: int
    #: Multiply-accumulates of convolutions and linear layers.
    macs: int
    #: Operation count under the released ``flops`` rules (see module docstring).
    flops: int
    #: Largest number of activation values alive at once during an eager forward pass:
    #: the maximum, over every operator call in execution order, of the summed sizes of
    #: all activation tensors still referenced (input image included; weights and BN
    #: statistics excluded; in-place ops and views allocate nothing). Skip connections
    #: and concatenation inputs count while they are held.
    peak_activation_values: int

    def weight_bytes(self, bits: int) -> int:
        """Bytes of the weights stored with ``bits`` bits per value."""
        return weight_bytes(self.n_values, bits)

    def peak_activation_bytes(self, bits: int) -> int:
        """Peak activation memory, in bytes, with activations held at ``bits`` bits per value."""
        return weight_bytes(self.peak_activation_values, bits)


def cost(arch: Arch | str, *, num_classes: int = 10, in_channels: int = 3) -> Cost:
    """Cost of ``arch`` for one ``in_channels`` x 32 x 32 image (cached per arguments).

    Raises:
        UnknownSpaceError, UnknownLawError, ArchError: ``arch`` is invalid.
    """
    if isinstance(arch, str):
        arch = Arch.parse(arch)
    return _cost(arch, num_classes, in_channels)


@functools.lru_cache(maxsize=4096)
def _cost(arch: Arch, num_classes: int, in_channels: int) -> Cost:
    with torch.device("meta"):
        model = build(arch, num_classes=num_classes, in_channels=in_channels)
    return count(model, (1, in_channels, SUPPORTED_INPUT_SIZE, SUPPORTED_INPUT_SIZE))


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Count any network with one forward pass on a meta tensor of ``input_shape`` (batch 1).

    The model may live on any device; it is moved to ``meta`` (a copy is not made, so pass a
    throw-away or meta model if its weights matter).
    """
    n_values = sum(t.numel() for t in model.state_dict().values())
    model = model.to("meta").eval()
    counter = _OpCounter()
    handles = [m.register_forward_hook(counter.hook(m)) for m in model.modules() if counter.counts(m)]
    try:
        x = torch.empty(input_shape, device="meta")
        with torch.no_grad(), _LiveActivations() as live:
            live.track(x)
            model(x)
    finally:
        for h in handles:
            h.remove()
    return Cost(n_values=n_values, macs=counter.macs, flops=counter.flops, peak_activation_values=live.peak)


class _OpCounter:
    """Forward hooks implementing the released ``flops`` rules, plus plain MACs."""

    def __init__(self) -> None:
        self.macs = 0
        self.flops = 0

    _COUNTED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)

    def counts(self, module: nn.Module) -> bool:
        return isinstance(module, self._COUNTED)

    def hook(self, module: nn.Module) -> Callable[..., None]:
        if isinstance(module, nn.Conv2d):
            return self._conv
        if isinstance(module, nn.Linear):
            return self._linear
        if isinstance(module, nn.BatchNorm2d):
            return self._batchnorm
        if isinstance(module, nn.ReLU):
            return self._relu
        return self._pool

    def _conv(self, m: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        batch, c_out, h, w = out.shape
        kh, kw = m.kernel_size
        macs = batch * h * w * kh * kw * (m.in_channels // m.groups) * c_out
        self.macs += macs
        self.flops += macs + (out.numel() if m.bias is not None else 0)

    def _linear(self, m: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        macs = (out.numel() // m.out_features) * m.in_features * m.out_features
        self.macs += macs
        self.flops += macs  # bias not counted by the released rules

    def _batchnorm(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += 2 * inputs[0].numel()

    def _relu(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += out.numel()

    def _pool(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += inputs[0].numel()


class _LiveActivations(TorchDispatchMode):
    """Tracks the values held by live activation tensors, operator by operator.

    Every non-aliasing operator output is a new allocation; it stays live until its storage
    is freed (tracked with storage weak references, so views keep their base alive).
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        ref = StorageWeakRef(t.untyped_storage())
        if ref.cdata not in self._live:
            self._live[ref.cdata] = (ref, t.numel())
            self._current += t.numel()
            self.peak = max(self.peak, self._current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for key, (ref, n) in list(self._live.items()):
            if ref.expired():
                del self._live[key]
                self._current -= n
        results = out if isinstance(out, (tuple, list)) else (out,)
        for ret, value in zip(func._schema.returns, results):
            if isinstance(value, torch.Tensor) and ret.alias_info is None:
                self.track(value)
        return out


__all__ = ["Cost", "cost", "count", "weight_bytes"]
