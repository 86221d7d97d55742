"""The seven narrow search spaces, a registry in the style of timm, and one front door.

>>> from iotnas.spaces import build, list_spaces
>>> model = build("mobilenetv2/s4/39")        # or an iotnas.arch.Arch

Importing this package registers every space once in :data:`SPACES`; :func:`get_space`
and :func:`list_spaces` query it. The exact definitions are in
``search-spaces.md`` (sampling call order, module names, counting rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from iotnas.errors import ConfigError, InputSizeError, InvalidSampleError
from iotnas.spaces._registry import (
    MAX_ID,
    SPACES,
    Args,
    Choice,
    IntRange,
    Law,
    Space,
    canonical_name,
    check_id,
    get_space,
    list_spaces,
    register_space,
)

# Registration order is listing order: the paper's families, then iotnas' own.
# isort: off
from iotnas.spaces import densenet, googlenet, mobilenetv2, pnasnet, resnext, resnet, probenet, compact  # noqa: F401
# isort: on

if TYPE_CHECKING:
    from iotnas.arch import Arch

__all__ = [
    "MAX_ID",
    "SPACES",
    "SUPPORTED_INPUT_SIZE",
    "Args",
    "Choice",
    "IntRange",
    "Law",
    "Space",
    "build",
    "canonical_name",
    "check_id",
    "get_space",
    "list_spaces",
    "register_space",
    "runnable",
]

#: Height and width every family is designed for: the final pooling windows (4 or 8) assume it.
#: 28x28 (MNIST-like) images are zero-padded to this size by the data loaders.
SUPPORTED_INPUT_SIZE = 32


def build(
    arch: Arch | str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = SUPPORTED_INPUT_SIZE,
    seed: int | None = None,
) -> nn.Module:
    """Build the network of ``arch`` for ``in_channels`` x 32 x 32 inputs.

    Args:
        arch: an :class:`~iotnas.arch.Arch` or its key/``space/law/id`` string.
        num_classes: width of the classifier; the sampled arguments do not depend on it.
        in_channels: image channels (3 for CIFAR-10, 1 for MNIST-like data).
        input_size: image height and width; only 32 is supported.
        seed: if given, weights are initialised from ``torch.manual_seed(seed)`` without
            touching the global torch RNG; if None, PyTorch's global RNG is used as usual.

    Raises:
        UnknownSpaceError, UnknownLawError, ArchError: ``arch`` is invalid.
        InputSizeError: the input size or channel count is not supported.
        ConfigError: ``num_classes`` is not a positive integer.
    """
    from iotnas.arch import Arch

    if isinstance(arch, str):
        arch = Arch.parse(arch)
    if input_size != SUPPORTED_INPUT_SIZE:
        raise InputSizeError(
            f"input size {input_size}x{input_size} is not supported: the networks take "
            f"{SUPPORTED_INPUT_SIZE}x{SUPPORTED_INPUT_SIZE} images (pad smaller ones, such as 28x28, to 32x32)"
        )
    if not _positive_int(in_channels):
        raise InputSizeError(f"in_channels must be a positive integer (3 for RGB, 1 for grey), got {in_channels!r}")
    if not _positive_int(num_classes):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    space = get_space(arch.space)
    if seed is None:
        return space.build(arch.args, num_classes=num_classes, in_channels=in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return space.build(arch.args, num_classes=num_classes, in_channels=in_channels)


def runnable(arch: Arch) -> bool:
    """Whether a drawn model can run; an invalid draw (say, a layer with no channels) is skipped.

    The released model set skips such ids too, so a pool or a calibration set counts and drops them.
    """
    try:
        get_space(arch.space).check_args(arch.args)
    except InvalidSampleError:
        return False
    return True


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
