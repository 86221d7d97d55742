"""A candidate's device budget before any training: its C library built for the Cortex-M4F.

Flash and RAM depend on the architecture and the format only (the weights' values change no
size), so the library of the untrained network, built exactly as the export builds it, gives
the figures the export will report for the trained one. An int8 library needs activation
scales to exist; random images calibrate it, which again changes values and no size.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from iotnas.arch import Arch
from iotnas.errors import ExportError
from iotnas.export._deploy import deploy
from iotnas.export._tflite import int8_tflite
from iotnas.export.c._build import TARGETS, DeviceBudget, device_budget, tool

_IMAGE_SIZE = 32
_SIZING_IMAGES = 4  # calibration images of an int8 library whose figures, not values, matter
#: The core whose flash and RAM the export reports and a study's device limits constrain.
BUDGET_TARGET = "cortex-m4"


def require_toolchain(what: str) -> None:
    """Raise the export's one-line error (which Debian packages to install) when the Arm
    toolchain is missing; ``what`` says what needs it.

    Raises:
        ExportError: ``arm-none-eabi-gcc`` or ``arm-none-eabi-size`` not installed.
    """
    try:
        tool("arm-none-eabi-gcc")
        tool("arm-none-eabi-size")
    except ExportError as exc:
        raise ExportError(f"{what} needs the Arm toolchain: {exc}") from None


def arch_device_budget(arch: Arch, format_name: str, *, in_channels: int = 3, num_classes: int = 10,
                       seed: int = 0) -> DeviceBudget:
    """Flash and RAM on a Cortex-M4F of the C library of ``arch`` (freshly built, seeded) in
    ``format_name``, as ``iotnas export --c`` would build it: integer kernels in int8, decoded
    float weights otherwise.

    Raises:
        ExportError: the Arm toolchain is missing, or the generator cannot emit the network.
    """
    from iotnas.export.c import write_c_library, write_int8_c_library
    from iotnas.spaces import build

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(arch, num_classes=num_classes, in_channels=in_channels).eval()
    deployed = deploy(model, format_name)
    meta = {"model_key": arch.key, "num_classes": num_classes, "in_channels": in_channels,
            "input": {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE, "mean": [0.0] * in_channels,
                      "std": [1.0] * in_channels}}
    with tempfile.TemporaryDirectory(prefix="iotnas-sizing-") as tmp:
        folder = Path(tmp) / "c"
        if deployed.format.name == "int8":
            images = torch.randn(_SIZING_IMAGES, in_channels, _IMAGE_SIZE, _IMAGE_SIZE, generator=generator)
            write_int8_c_library(folder, int8_tflite(deployed, images), meta)
        else:
            write_c_library(folder, deployed, meta)
        return device_budget(folder, TARGETS[BUDGET_TARGET])


__all__ = ["BUDGET_TARGET", "arch_device_budget", "require_toolchain"]
