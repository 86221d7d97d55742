"""Hardware calibration: time models on the target device, and predict what was not timed.

The front door is :func:`measure_latency` (one model, here or on a device
agent) and :class:`LatencyPredictor` (``LatencyPredictor.load(path).predict(arch)``
in milliseconds). Nothing here imports torch at import time, so the device
agent (:mod:`iotnas.latency.agent`) runs on a board with only ONNX Runtime.

Names are imported on first use: ``python -m iotnas.latency.agent`` (and each
timing process, ``python -m iotnas.latency.worker``) then loads only what it
needs, and runs its module once rather than beside an imported copy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotnas.latency.agent import AgentClient, AgentLimits, AgentServer
    from iotnas.latency.api import measure_latency, measure_many, to_onnx
    from iotnas.latency.measure import MAX_THREADS, LatencyMeasurement, Protocol, check_threads, usable_cores
    from iotnas.latency.predictor import InputShape, LatencyPredictor, Score, score
    from iotnas.latency.runtimes import OrtSettings

_HOMES = {
    "AgentClient": "agent",
    "AgentLimits": "agent",
    "AgentServer": "agent",
    "measure_latency": "api",
    "measure_many": "api",
    "to_onnx": "api",
    "MAX_THREADS": "measure",
    "LatencyMeasurement": "measure",
    "Protocol": "measure",
    "check_threads": "measure",
    "usable_cores": "measure",
    "InputShape": "predictor",
    "LatencyPredictor": "predictor",
    "Score": "predictor",
    "score": "predictor",
    "OrtSettings": "runtimes",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
