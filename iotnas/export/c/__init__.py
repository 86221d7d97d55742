"""A standalone C99 library for an exported model, for microcontrollers.

``iotnas export … --c`` writes ``c/``: ``iotnas_model.c``/``.h`` (the deployed network's
weights packed in the format, their decoder, the static arena, the call sequence) and the
fixed kernels ``iotnas_ops.c``/``.h``. One entry point, ``iotnas_run(image, logits)``, takes
raw pixels. No ``malloc``, no libm. See ``docs/c-inference.md``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iotnas.errors import ExportError
from iotnas.export._deploy import DeployedModel
from iotnas.export.c._build import (
    C_FLAGS,
    TARGETS,
    DeviceBudget,
    Target,
    build_host,
    build_target,
    device_budget,
    run_host,
    run_qemu,
    tool,
)
from iotnas.export.c._emit import c_library, deployed_stream, scratch_values
from iotnas.export.c._graph import Graph, Op, trace
from iotnas.export.c._plan import FLOAT_BYTES, ArenaPlan, plan_arena

#: The C logits must match the reference within this fraction of max(1, largest |logit|): the
#: C code sums in another order than PyTorch and ONNX Runtime, which changes float32 results
#: in the last bits only.
C_TOLERANCE = 1e-4
#: The core whose flash and RAM the export reports.
BUDGET_TARGET = "cortex-m4"


@dataclass(frozen=True, slots=True)
class CCheck:
    images: int  # real test images compared
    max_abs_diff: float  # largest |C - reference| over all logits
    agreement: float  # fraction of images with the same predicted class
    tolerance: float  # allowed |difference| as a fraction of max(1, |logit|)


@dataclass(frozen=True, slots=True)
class CLibrary:
    """The generated library and what it needs at run time."""

    files: dict[str, int]  # file name -> bytes
    arena_bytes: int  # static activation arena
    live_peak_bytes: int  # most activation bytes live at once under this plan's operators
    scratch_bytes: int  # one decoded weight row
    check: CCheck | None  # host build against the reference logits
    budget: DeviceBudget | None  # Cortex-M4 flash and RAM, when arm-none-eabi-gcc is installed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.budget is not None:
            d["budget"] |= {"flash_bytes": self.budget.flash_bytes, "ram_bytes": self.budget.ram_bytes}
        return d


def write_c_library(folder: str | Path, deployed: DeployedModel, meta: dict[str, Any]) -> tuple[Graph, ArenaPlan]:
    """Write the C library of the deployed network into the new ``folder``.

    ``meta``: ``model_key``, ``num_classes``, ``in_channels`` and ``input`` (``height``,
    ``width``, per-channel ``mean`` and ``std`` on the 0-255 pixel scale), as in ``weights.json``.

    Raises:
        ExportError: an operator or a format the generator cannot emit (named), or an
            unwritable folder; nothing is written then.
    """
    inp = meta["input"]
    graph = trace(deployed.module, in_channels=meta["in_channels"], height=inp["height"], width=inp["width"])
    plan = plan_arena(graph)
    header, blob = deployed_stream(deployed, meta)
    files = c_library(graph, plan, header, blob)
    folder = Path(folder)
    try:
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write the C library to {folder}: {exc.strerror}") from None
    return graph, plan


def check_c_library(folder: str | Path, images: np.ndarray, reference: np.ndarray) -> CCheck:
    """Compile the library in ``folder`` for this machine (``gcc -std=c99 -Wall -Wextra -Werror``),
    run it on ``images`` (n × H × W × C uint8) and compare with the ``reference`` logits.

    Raises:
        ExportError: gcc missing, the build fails, or the logits differ beyond :data:`C_TOLERANCE`.
    """
    with tempfile.TemporaryDirectory(prefix="iotnas-c-") as tmp:
        program = build_host(Path(folder), Path(tmp) / "model")
        got = run_host(program, images, num_classes=reference.shape[1])
    diff = float(np.abs(got - reference).max())
    allowed = C_TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if not diff <= allowed:
        raise ExportError(f"the C library differs from the reference logits by {diff:.3g} (allowed {allowed:.3g}); "
                          "the generated code is wrong")
    return CCheck(images=len(images), max_abs_diff=diff, agreement=float((got.argmax(1) == reference.argmax(1)).mean()),
                  tolerance=C_TOLERANCE)


def export_c(folder: Path, deployed: DeployedModel, meta: dict[str, Any], *, pixels: torch.Tensor,
             images: torch.Tensor) -> CLibrary:
    """Write, check on the host and measure for a Cortex-M4 the C library of an export.

    ``pixels``: the check images as stored (n × C × H × W uint8); ``images``: the same,
    normalised as in training, on which the deployed network gives the reference logits. The
    device budget is left out (``None``) when the Arm toolchain is not installed; the host
    check is not optional.
    """
    graph, plan = write_c_library(folder, deployed, meta)
    with torch.no_grad():
        reference = deployed.module(images).numpy()
    check = check_c_library(folder, np.ascontiguousarray(pixels.numpy().transpose(0, 2, 3, 1)), reference)
    budget = None
    if shutil.which("arm-none-eabi-gcc") and shutil.which("arm-none-eabi-size"):
        budget = device_budget(folder, TARGETS[BUDGET_TARGET])
    return CLibrary(
        files={p.name: p.stat().st_size for p in sorted(folder.iterdir())}, arena_bytes=plan.arena_bytes,
        live_peak_bytes=plan.live_peak_values * FLOAT_BYTES, scratch_bytes=scratch_values(graph) * FLOAT_BYTES,
        check=check, budget=budget,
    )


__all__ = [
    "BUDGET_TARGET", "C_FLAGS", "C_TOLERANCE", "TARGETS", "ArenaPlan", "CCheck", "CLibrary", "DeviceBudget", "Graph",
    "Op", "Target", "build_host", "build_target", "check_c_library", "device_budget", "export_c", "plan_arena",
    "run_host", "run_qemu", "tool", "trace", "write_c_library",
]
