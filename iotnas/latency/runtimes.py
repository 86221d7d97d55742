"""The runtimes a model is timed with: ONNX Runtime and PyTorch eager.

Each runtime turns a model into a zero-argument ``run_once`` with its thread
settings made explicit; those settings become part of the measurement's
identity. :data:`RUNTIMES` maps each runtime's name to its timing function.
torch is imported only by the torch runtime and the exporter, so the ONNX
Runtime path works on a board without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iotnas.errors import ExportError, LatencyError
from iotnas.latency.measure import (
    JsonSettings,
    LatencyMeasurement,
    Protocol,
    brief,
    check_bool,
    check_threads,
    environment,
    make_measurement,
    run_protocol,
)
from iotnas.registry import Registry

if TYPE_CHECKING:
    import onnxruntime
    from torch import nn

log = logging.getLogger(__name__)

#: ONNX opset used for every export; ONNX Runtime >= 1.18 supports it fully.
OPSET = 17

#: Runtime name -> the function that times a model with it in this process.
RUNTIMES: Registry[Callable[..., LatencyMeasurement]] = Registry("runtime", error=LatencyError)


@dataclasses.dataclass(frozen=True, slots=True)
class OrtSettings(JsonSettings):
    """ONNX Runtime session options that change timings; all are set explicitly."""

    WHAT = "onnxruntime settings"

    threads: int = 1  # intra-op threads
    inter_op_threads: int = 1
    allow_spinning: bool = True  # ORT's default; busy-waiting lowers latency with >1 thread
    graph_optimization: str = "all"  # basic | extended | all

    def __post_init__(self) -> None:
        """Check types and bounds; the cores of the machine that times are checked there (:meth:`check_cores`)."""
        for name in ("threads", "inter_op_threads"):
            check_threads(getattr(self, name), field=f"settings.{name}", remote=True)
        check_bool(self.allow_spinning, field="settings.allow_spinning")
        if self.graph_optimization not in ("basic", "extended", "all"):
            raise LatencyError(
                f"settings.graph_optimization must be basic, extended or all, got {brief(self.graph_optimization)}"
            )

    def check_cores(self) -> OrtSettings:
        """These settings, if their thread counts fit the cores this process may use."""
        for name in ("threads", "inter_op_threads"):
            check_threads(getattr(self, name), field=f"settings.{name}")
        return self



def onnx_target(onnx_bytes: bytes) -> str:
    """A stable name for an ONNX graph: ``onnx:`` and the first 16 hex digits of its sha256."""
    return "onnx:" + hashlib.sha256(onnx_bytes).hexdigest()[:16]


def session_options(settings: OrtSettings) -> onnxruntime.SessionOptions:
    """ONNX Runtime session options with every setting that changes timings made explicit."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.allow_spinning else "0")
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.graph_optimization]
    options.log_severity_level = 3  # errors only
    return options


def open_session(
    onnx_bytes: bytes, settings: OrtSettings, *, options: onnxruntime.SessionOptions | None = None
) -> tuple[onnxruntime.InferenceSession, dict[str, Any]]:
    """An ONNX Runtime session with explicit settings, and a fixed random input for it (batch 1).

    Args:
        options: session options built by :func:`session_options` and then
            extended (profiling, say); by default built from ``settings``.

    Raises:
        LatencyError: the bytes are not a graph ONNX Runtime can load, or it has
            more than one input, or one that is not float32.
    """
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, sess_options=options or session_options(settings),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for bad graphs
        raise LatencyError(f"ONNX Runtime cannot load the graph: {str(exc).splitlines()[0][:300]}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise LatencyError(f"the graph must have exactly one input (an image batch), it has {len(inputs)}")
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inputs[0].shape)
    if inputs[0].type != "tensor(float)":
        raise LatencyError(f"the graph input must be float32, got {inputs[0].type}")
    return session, {inputs[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def ort_runner(onnx_bytes: bytes, settings: OrtSettings) -> tuple[Callable[[], object], tuple[int, ...]]:
    """Open an ONNX Runtime session (:func:`open_session`) and wrap one inference as ``run_once``.

    Returns:
        ``run_once`` and the input shape (dynamic dimensions set to 1: batch 1).
    """
    session, feed = open_session(onnx_bytes, settings)
    outputs = [o.name for o in session.get_outputs()]
    (x,) = feed.values()

    def run_once() -> object:
        return session.run(outputs, feed)

    return run_once, tuple(x.shape)


@RUNTIMES.register("onnxruntime")
def time_onnx(
    onnx_bytes: bytes, *, settings: OrtSettings, protocol: Protocol, target: str | None = None
) -> LatencyMeasurement:
    """Time an ONNX graph with ONNX Runtime in this process, in ``protocol.sessions`` sessions one after
    another (each released before the next is opened)."""
    sessions = []
    for _ in range(protocol.sessions):
        run_once, shape = ort_runner(onnx_bytes, settings)
        sessions.append(run_protocol(run_once, protocol))
        del run_once
    return make_measurement(
        target=target or onnx_target(onnx_bytes),
        runtime="onnxruntime",
        settings=settings.to_dict(),
        sessions=sessions,
        input_shape=shape,
        environment=environment(),
    )


@RUNTIMES.register("torch")
def time_torch(
    module: nn.Module,
    *,
    input_shape: tuple[int, ...],
    threads: int,
    interop_threads: int = 1,
    protocol: Protocol,
    target: str,
) -> LatencyMeasurement:
    """Time a module with PyTorch eager in this process, in eval and inference mode (``protocol.sessions``
    times over, one after another: eager mode has no session to reopen).

    Raises:
        LatencyError: the inter-op thread count cannot be changed in this process
            (torch allows it once, before any parallel work; use a fresh process).
    """
    import torch

    if threads < 1 or interop_threads < 1:
        raise LatencyError(f"thread counts must be >= 1, got {threads} and {interop_threads}")
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != interop_threads:
        try:
            torch.set_num_interop_threads(interop_threads)
        except RuntimeError as exc:
            raise LatencyError(
                f"cannot set {interop_threads} inter-op threads in this process (it has "
                f"{torch.get_num_interop_threads()}); measure in a fresh process"
            ) from exc
    module = module.eval()
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))

    def run_once() -> object:
        with torch.inference_mode():
            return module(x)

    return make_measurement(
        target=target,
        runtime="torch",
        settings={"threads": threads, "interop_threads": interop_threads},
        sessions=[run_protocol(run_once, protocol) for _ in range(protocol.sessions)],
        input_shape=tuple(input_shape),
        environment=environment(),
    )


def export_onnx(module: nn.Module, *, input_shape: tuple[int, ...], constant_folding: bool = True) -> bytes:
    """Export a module (in eval mode, batch 1) to ONNX bytes; BatchNorm is folded into convolutions.

    Uses the TorchScript exporter: the newer one needs ``onnxscript``, which is
    not a dependency, and gives the same graph for these static CNNs. Without
    ``constant_folding`` every parameter stays an initializer named as in the state
    dict (the format exporter replaces them by their stored codes).

    Raises:
        ExportError: the module cannot be traced or exported.
    """
    import torch

    buffer = io.BytesIO()
    module = module.eval()
    x = torch.zeros(*input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    (x,),
                    buffer,
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=["input"],
                    output_names=["logits"],
                    do_constant_folding=constant_folding,
                )
    except Exception as exc:  # torch raises many unrelated types while tracing
        raise ExportError(f"cannot export the model to ONNX: {exc}") from exc
    return buffer.getvalue()
