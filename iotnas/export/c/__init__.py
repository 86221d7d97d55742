"""A standalone C99 library for an exported model, for microcontrollers.

``iotnas export … --c`` writes ``c/``: ``iotnas_model.c``/``.h`` (the deployed network's
weights packed in the format, their decoder, the static arena, the call sequence) and the
fixed kernels ``iotnas_ops.c``/``.h`` (their vector forms in ``iotnas_ops_kernels.h``, compiled
again for AVX2 by ``iotnas_ops_avx2.c``). An int8 export runs in integer arithmetic instead:
``iotnas_model.c`` holds the layers of the int8 TFLite model (int8 filters, int32 biases,
per-channel requantisation) and ``iotnas_int8.c``/``.h`` the integer kernels. One entry point,
``iotnas_run(image, logits)``, takes raw pixels. No ``malloc``, no libm. See ``docs/c-inference.md``.
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
from iotnas.export._tflite import TfliteFile
from iotnas.export._tflite_check import run_tflite
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
from iotnas.export.c._emit_int8 import int8_library
from iotnas.export.c._graph import Graph, Op, trace
from iotnas.export.c._int8 import int8_graph
from iotnas.export.c._plan import FLOAT_BYTES, ArenaPlan, plan_arena
from iotnas.export.c._sizing import BUDGET_TARGET, arch_device_budget, require_toolchain

#: The C logits must match the reference within this fraction of max(1, largest |logit|): the
#: C code sums in another order than PyTorch and ONNX Runtime, which changes float32 results
#: in the last bits only.
C_TOLERANCE = 1e-4
#: The int8 library's logits must match LiteRT's reference kernels on the same int8 TFLite model
#: within this many steps of the output scale: every layer computes the same integers, except that
#: LiteRT's reference linear layer requantises in double-precision float where TensorFlow Lite Micro
#: (and this library) use the fixed-point multiplier, which can move a logit by one step.
INT8_TOLERANCE_STEPS = 1


@dataclass(frozen=True, slots=True)
class CCheck:
    images: int  # real test images compared
    reference: str  # what the C logits were compared with
    max_abs_diff: float  # largest |C - reference| over all logits
    allowed_abs_diff: float  # the check fails above this
    agreement: float  # fraction of images with the same predicted class


@dataclass(frozen=True, slots=True)
class CLibrary:
    """The generated library and what it needs at run time."""

    files: dict[str, int]  # file name -> bytes
    arithmetic: str  # "float32": weights decoded to float; "int8": TensorFlow Lite's integer arithmetic
    arena_bytes: int  # static activation arena
    live_peak_bytes: int  # most activation bytes live at once under this plan's operators
    scratch_bytes: int  # decoded weights and a padded input plane or pooling row (0 in int8: filters used as stored)
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
    _write(Path(folder), c_library(graph, plan, header, blob))
    return graph, plan


def write_int8_c_library(folder: str | Path, model: TfliteFile, meta: dict[str, Any]) -> tuple[Graph, ArenaPlan]:
    """Write the integer C library of the full-integer int8 TFLite ``model`` into the new ``folder``.

    ``meta`` as for :func:`write_c_library`.

    Raises:
        ExportError: an operator the integer kernels do not cover (named), or an unwritable
            folder; nothing is written then.
    """
    graph = int8_graph(model.data)
    plan = plan_arena(graph, value_bytes=1)
    _write(Path(folder), int8_library(graph, plan, meta))
    return graph, plan


def _write(folder: Path, files: dict[str, str]) -> None:
    try:
        folder.mkdir()
    except OSError as exc:
        raise ExportError(f"cannot write the C library to {folder}: {exc.strerror}") from None
    try:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)  # the folder is ours: nothing half-written stays
        raise ExportError(f"cannot write the C library to {folder}: {exc.strerror}") from None


def check_c_library(folder: str | Path, images: np.ndarray, reference: np.ndarray, *, allowed: float | None = None,
                    what: str = "the deployed network in PyTorch") -> CCheck:
    """Compile the library in ``folder`` for this machine (``gcc -std=c99 -Wall -Wextra -Werror``),
    run it on ``images`` (n × H × W × C uint8) and compare with the ``reference`` logits (``what``).

    ``allowed``: the largest absolute difference; default :data:`C_TOLERANCE` × max(1, largest |logit|).

    Raises:
        ExportError: gcc missing, the build fails, or the logits differ beyond ``allowed``.
    """
    with tempfile.TemporaryDirectory(prefix="iotnas-c-") as tmp:
        program = build_host(Path(folder), Path(tmp) / "model")
        got = run_host(program, images, num_classes=reference.shape[1])
    diff = float(np.abs(got - reference).max())
    if allowed is None:
        allowed = C_TOLERANCE * max(1.0, float(np.abs(reference).max()))
    if not diff <= allowed:
        raise ExportError(f"the C library differs from {what} by {diff:.3g} (allowed {allowed:.3g}); "
                          "the generated code is wrong")
    return CCheck(images=len(images), reference=what, max_abs_diff=diff, allowed_abs_diff=allowed,
                  agreement=float((got.argmax(1) == reference.argmax(1)).mean()))


def check_int8_c_library(folder: str | Path, model: TfliteFile, pixels: np.ndarray, images: torch.Tensor) -> CCheck:
    """:func:`check_c_library` for the integer library of ``model``, against the same model in LiteRT's
    reference kernels (the integer arithmetic TensorFlow Lite Micro runs) within
    :data:`INT8_TOLERANCE_STEPS` steps of its output scale.

    ``pixels``: n × H × W × C uint8; ``images``: the same, normalised as in training (NCHW float32).
    """
    reference = run_tflite(model, images, reference_kernels=True)
    # (steps + 1e-3): the dequantised logits carry float32 rounding, about 1e-5 of a step
    return check_c_library(folder, pixels, reference, allowed=(INT8_TOLERANCE_STEPS + 1e-3) * model.output.scale,
                           what="model_int8.tflite in LiteRT's reference kernels")


def export_c(folder: Path, deployed: DeployedModel, meta: dict[str, Any], *, pixels: torch.Tensor,
             images: torch.Tensor, int8_model: TfliteFile | None = None) -> CLibrary:
    """Write, check on the host and measure for a Cortex-M4 the C library of an export.

    ``pixels``: the check images as stored (n × C × H × W uint8); ``images``: the same,
    normalised as in training, on which the deployed network gives the reference logits. With
    ``int8_model`` (the int8 TFLite model of an int8 export) the library computes in integer
    arithmetic and is checked against that model in LiteRT. The device budget is left out
    (``None``) when the Arm toolchain is not installed; the host check is not optional.
    """
    hwc = np.ascontiguousarray(pixels.numpy().transpose(0, 2, 3, 1))
    if int8_model is not None:
        graph, plan = write_int8_c_library(folder, int8_model, meta)
        check = check_int8_c_library(folder, int8_model, hwc, images)
        scratch = 0
    else:
        graph, plan = write_c_library(folder, deployed, meta)
        with torch.no_grad():
            reference = deployed.module(images).numpy()
        check = check_c_library(folder, hwc, reference)
        scratch = scratch_values(graph) * FLOAT_BYTES
    budget = None
    if shutil.which("arm-none-eabi-gcc") and shutil.which("arm-none-eabi-size"):
        budget = device_budget(folder, TARGETS[BUDGET_TARGET])
    return CLibrary(
        files={p.name: p.stat().st_size for p in sorted(folder.iterdir())},
        arithmetic="float32" if int8_model is None else "int8", arena_bytes=plan.arena_bytes,
        live_peak_bytes=plan.live_peak_bytes, scratch_bytes=scratch, check=check, budget=budget,
    )


__all__ = [
    "BUDGET_TARGET", "C_FLAGS", "C_TOLERANCE", "INT8_TOLERANCE_STEPS", "TARGETS", "ArenaPlan", "CCheck", "CLibrary",
    "DeviceBudget", "Graph", "Op", "Target", "arch_device_budget", "build_host", "build_target", "check_c_library", "check_int8_c_library",
    "device_budget", "export_c", "int8_graph", "plan_arena", "require_toolchain", "run_host", "run_qemu", "tool", "trace",
    "write_c_library", "write_int8_c_library",
]
