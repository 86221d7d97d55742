"""What a network costs: stored values, MACs, FLOPs, weight bytes, peak activation bytes.

Everything is counted in one forward pass on an empty batch (shapes only, no arithmetic)
over a copy of the network whose weights are allocated but never initialised, so costing
all 1,617 released models takes seconds, not minutes.

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
import itertools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

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
        UnknownSpaceError, UnknownLawError, ArchError: ``arch`` is invalid (or cannot run).
        InputSizeError, ConfigError: ``in_channels`` or ``num_classes`` is not a positive integer.
    """
    if isinstance(arch, str):
        arch = Arch.parse(arch)
    return _cost(arch, num_classes, in_channels)


@functools.lru_cache(maxsize=4096)
def _cost(arch: Arch, num_classes: int, in_channels: int) -> Cost:
    model = skeleton(arch, num_classes=num_classes, in_channels=in_channels)
    return count(model, (in_channels, SUPPORTED_INPUT_SIZE, SUPPORTED_INPUT_SIZE))


def skeleton(arch: Arch | str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The network of ``arch`` with its weights allocated but never initialised.

    For counting and for inspecting names and shapes: as fast as building on the ``meta``
    device for small models (module construction dominates) and ~50x faster than a normal
    build for 100M-value ones; weight memory is never written, and the global torch RNG is
    left alone. Its weights are garbage: never train or run it for real outputs.
    """
    with _NoRandomInit():
        return build(arch, num_classes=num_classes, in_channels=in_channels)


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Count any network for one image of ``input_shape`` (``(C, H, W)``, no batch dimension).

    Shapes are propagated by one forward pass on an *empty batch* (batch size 0): every
    kernel checks and computes shapes but does no arithmetic, and per-image counts are
    read from the shapes. A model built on the ``meta`` device (no weights allocated) is
    given uninitialised CPU storage in place first (:meth:`torch.nn.Module.to_empty`), so
    pass a throw-away model in that case.
    """
    n_values = sum(t.numel() for t in model.state_dict().values())
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model.to_empty(device="cpu")
    was_training = model.training
    model.eval()
    counter = _OpCounter()
    handles = [m.register_forward_hook(counter.hook(m)) for m in model.modules() if counter.counts(m)]
    try:
        x = torch.empty((0, *input_shape), device=next(itertools.chain(model.parameters(), [torch.empty(0)])).device)
        with torch.no_grad(), _LiveActivations() as live:
            live.track(x)
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Cost(n_values=n_values, macs=counter.macs, flops=counter.flops, peak_activation_values=live.peak)


def _per_image(t: torch.Tensor) -> int:
    """Values per image of a batch-first activation (``numel`` would be 0 for the empty batch)."""
    return math.prod(t.shape[1:])


class _NoRandomInit(TorchFunctionMode):
    """Within this context, ``torch.nn.init`` random fills leave tensors as allocated.

    Counting needs shapes only; skipping the fills avoids writing every weight and drawing
    from the global RNG.
    """

    _SKIPPED = frozenset(
        {
            nn.init.uniform_,
            nn.init.normal_,
            nn.init.trunc_normal_,
            nn.init.kaiming_uniform_,
            nn.init.kaiming_normal_,
            nn.init.xavier_uniform_,
            nn.init.xavier_normal_,
        }
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in self._SKIPPED:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


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
        kh, kw = m.kernel_size
        macs = _per_image(out) * kh * kw * (m.in_channels // m.groups)
        self.macs += macs
        self.flops += macs + (_per_image(out) if m.bias is not None else 0)

    def _linear(self, m: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        macs = _per_image(out) * m.in_features
        self.macs += macs
        self.flops += macs  # bias not counted by the released rules

    def _batchnorm(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += 2 * _per_image(inputs[0])

    def _relu(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += _per_image(out)

    def _pool(self, m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.flops += _per_image(inputs[0])


class _LiveActivations(TorchFunctionMode):
    """Tracks the values held by live activation tensors, call by call, at the torch-API level.

    Every ``torch`` function or tensor method that returns a batch-first tensor with storage
    of its own (not a view, not an in-place result) allocates an activation; it stays live
    until that storage is freed, i.e. as long as eager PyTorch holds a reference to it.
    Working at the API level (not the ATen level) keeps kernel internals (BatchNorm's
    saved statistics, max-pool indices) out of the count.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._current = 0
        self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        if t.dim() < 2:  # not batch-first
            return
        ref = StorageWeakRef(t.untyped_storage())
        if ref.cdata not in self._live:
            n = _per_image(t)
            self._live[ref.cdata] = (ref, n)
            self._current += n
            self.peak = max(self.peak, self._current)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        new = [t for t in results if isinstance(t, torch.Tensor) and t.dim() >= 2]
        if new:  # the live total matters only when something may have been allocated
            for key, (ref, n) in list(self._live.items()):
                if ref.expired():
                    del self._live[key]
                    self._current -= n
            for t in new:
                self.track(t)
        return out


__all__ = ["Cost", "cost", "count", "skeleton", "weight_bytes"]
