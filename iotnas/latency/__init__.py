"""Hardware calibration: time models on the target device, and predict what was not timed.

The front door is :func:`measure_latency` (one model, here or on a device
agent) and :class:`LatencyPredictor` (``LatencyPredictor.load(path).predict(arch)``
in milliseconds). Nothing here imports torch at import time, so the device
agent (:mod:`iotnas.latency.agent`) runs on a board with only ONNX Runtime.
"""

from iotnas.latency.agent import AgentClient, AgentServer
from iotnas.latency.api import measure_latency, measure_many, to_onnx
from iotnas.latency.measure import LatencyMeasurement, Protocol
from iotnas.latency.predictor import LatencyPredictor, Score, score
from iotnas.latency.runtimes import OrtSettings

__all__ = [
    "AgentClient",
    "AgentServer",
    "LatencyMeasurement",
    "LatencyPredictor",
    "OrtSettings",
    "Protocol",
    "Score",
    "measure_latency",
    "measure_many",
    "score",
    "to_onnx",
]
