"""One front door for timing: an architecture, a module or an ONNX graph, here or on a device.

>>> m = measure_latency("mobilenetv2/s4/39", runtime="onnxruntime", threads=1)
>>> m.median_ms, m.cv, m.key

Each model is timed in a fresh process (``isolate=True``), except a bare
``nn.Module`` with the torch runtime, which cannot cross a process boundary
without pickle and is timed in this one. With ``device`` (an
:class:`~iotnas.latency.agent.AgentClient` or its URL) the ONNX graph is sent
to the device agent, which times it with ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

from iotnas.errors import LatencyError
from iotnas.latency.agent import AgentClient
from iotnas.latency.measure import LatencyMeasurement, Protocol, check_threads
from iotnas.latency.runtimes import RUNTIMES, OrtSettings, export_onnx, onnx_target, time_torch
from iotnas.latency.worker import run_jobs

if TYPE_CHECKING:
    from torch import nn

    from iotnas.arch import Arch

Target = Union["Arch", str, bytes, "nn.Module"]


def _arch(target: Any) -> Arch | None:
    from iotnas.arch import Arch

    if isinstance(target, Arch):
        return target
    if isinstance(target, str):
        return Arch.parse(target)
    return None


def _input_shape(in_channels: int, input_size: int) -> tuple[int, int, int, int]:
    return (1, in_channels, input_size, input_size)


def to_onnx(
    target: Target, *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32
) -> tuple[bytes, str]:
    """ONNX bytes and a target name for an architecture, a module, or ONNX bytes as they are."""
    if isinstance(target, bytes | bytearray):
        return bytes(target), onnx_target(bytes(target))
    arch = _arch(target)
    if arch is not None:
        from iotnas.spaces import build

        model = build(arch, num_classes=num_classes, in_channels=in_channels)
        return export_onnx(model, input_shape=_input_shape(in_channels, input_size)), arch.key
    data = export_onnx(target, input_shape=_input_shape(in_channels, input_size))  # type: ignore[arg-type]
    return data, onnx_target(data)


def measure_many(
    targets: Sequence[Target],
    *,
    runtime: str = "onnxruntime",
    threads: int = 1,
    device: AgentClient | str | None = None,
    protocol: Protocol = Protocol(),
    settings: OrtSettings | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    isolate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[LatencyMeasurement | LatencyError]:
    """Time several models; a model that fails yields its error instead of stopping the rest.

    Args:
        runtime: ``onnxruntime`` or ``torch`` (eager, the paper's runtime; local only).
        threads: intra-op threads (ONNX Runtime's ``intra_op_num_threads`` or
            ``torch.set_num_threads``), at most the cores of the machine that
            times (:func:`~iotnas.latency.measure.check_threads`); inter-op threads are 1.
        device: a device agent (client or URL, token from ``$IOTNAS_AGENT_TOKEN``);
            None times on this machine.
        settings: full ONNX Runtime settings (overrides ``threads``).
        isolate: one fresh process per model (else one for the batch).
        progress: called with (done, total) after each model.

    Raises:
        LatencyError: unknown runtime, or torch asked of a device agent.
        AgentError: the agent is unreachable, slow, or refuses.
    """
    if runtime not in RUNTIMES:
        raise LatencyError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES.names())}")
    if isinstance(device, str):
        device = AgentClient.connect(device)
    remote = device is not None  # an agent checks threads against its own cores
    threads = check_threads(threads, remote=remote)
    if settings is not None:
        check_threads(settings.threads, field="settings.threads", remote=remote)
    shape = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    if runtime == "torch":
        if device is not None:
            raise LatencyError("the device agent times ONNX graphs only; use runtime onnxruntime with a device")
        return [_measure_torch(t, threads=threads, protocol=protocol, **shape) for t in _report(targets, progress)]
    settings = settings or OrtSettings(threads=threads)
    results: list[LatencyMeasurement | LatencyError] = []
    pending: list[tuple[bytes, str]] = []

    def flush() -> None:
        if not pending:
            return
        if device is not None:
            results.extend(device.measure_onnx(pending, settings=settings, protocol=protocol, isolate=isolate))
        else:
            jobs = [_ort_job(data, name, settings) for data, name in pending]
            results.extend(run_jobs(jobs, protocol=protocol, timeout_s=None))
        pending.clear()

    for i, target in enumerate(targets):
        pending.append(to_onnx(target, **shape))
        if isolate:
            flush()
        if progress is not None and isolate:
            progress(i + 1, len(targets))
    flush()
    if progress is not None and not isolate:
        progress(len(targets), len(targets))
    return results


def _report(targets: Sequence[Target], progress: Callable[[int, int], None] | None):
    for i, target in enumerate(targets):
        yield target
        if progress is not None:
            progress(i + 1, len(targets))


def _ort_job(data: bytes, target: str, settings: OrtSettings) -> dict[str, Any]:
    import base64

    return {
        "runtime": "onnxruntime",
        "onnx_b64": base64.b64encode(data).decode("ascii"),
        "target": target,
        "settings": settings.to_dict(),
    }


def _measure_torch(
    target: Target, *, threads: int, protocol: Protocol, num_classes: int, in_channels: int, input_size: int
) -> LatencyMeasurement | LatencyError:
    if isinstance(target, bytes | bytearray):
        return LatencyError("an ONNX graph cannot be timed with the torch runtime; use onnxruntime")
    arch = _arch(target)
    if arch is None:  # a bare module: no way across a process boundary without pickle
        return time_torch(
            target,  # type: ignore[arg-type]
            input_shape=_input_shape(in_channels, input_size),
            threads=threads,
            protocol=protocol,
            target=f"module:{type(target).__name__}",
        )
    job = {
        "runtime": "torch",
        "arch": arch.to_dict(),
        "threads": threads,
        "interop_threads": 1,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": input_size,
    }
    try:
        return run_jobs([job], protocol=protocol)[0]
    except LatencyError as exc:
        return exc


def measure_latency(target: Target, **options: Any) -> LatencyMeasurement:
    """Time one model per the protocol, in a fresh process or on the device agent.

    Args:
        target: an :class:`~iotnas.arch.Arch`, its key (``"mobilenetv2/s4/39"``),
            an ``nn.Module``, or ONNX bytes.
        options: the keywords of :func:`measure_many` (runtime, threads, device, protocol,
            settings, num_classes, in_channels, input_size).

    Raises:
        LatencyError: the model cannot be timed (bad graph, timeout, bad settings).
        AgentError: the agent is unreachable, slow, or refuses.
    """
    (result,) = measure_many([target], **options)
    if isinstance(result, LatencyError):
        raise result
    return result
