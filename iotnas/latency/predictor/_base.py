"""The predictor contract: predict milliseconds, save and load as plain JSON, and the score they are judged by.

Every kind subclasses :class:`LatencyPredictor` and registers in :data:`PREDICTORS`
under the ``kind`` its files carry, so :meth:`LatencyPredictor.load` can rebuild
any of them from JSON (nothing is unpickled or executed).
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency.kernels import Kernel, arch_kernels
from iotnas.registry import Registry

FORMAT_VERSION = 1
#: A prediction within this fraction of the measured median counts as a hit.
TOLERANCE = 0.10


@dataclasses.dataclass(frozen=True, slots=True)
class InputShape:
    """The images a predictor's networks take, and their classes: the first and last layers depend on them.

    A predictor records the shape it was calibrated for and builds the networks
    it predicts with it; files written before the shape was recorded read as RGB
    32x32 CIFAR-10 (3 channels, 10 classes), the only shape there was.
    """

    channels: int = 3
    size: int = 32  # height = width, pixels
    classes: int = 10

    def __post_init__(self) -> None:
        for name in ("channels", "size", "classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LatencyError(f"input shape: {name} must be a positive integer, got {value!r}")

    @property
    def build_options(self) -> dict[str, int]:
        """The keywords every network builder takes (``build``, ``arch_kernels``, ``to_onnx``)."""
        return {"in_channels": self.channels, "input_size": self.size, "num_classes": self.classes}

    def describe(self) -> str:
        return f"{self.channels}x{self.size}x{self.size} images, {self.classes} classes"

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> InputShape:
        """Read :meth:`to_dict` output; a missing key keeps its default (older files).

        Raises:
            LatencyError: not a mapping, an unknown key, or a value that is not a positive integer.
        """
        if not isinstance(data, Mapping) or set(data) - {"channels", "size", "classes"}:
            raise LatencyError(f"malformed input shape {data!r}: expected channels, size and classes")
        return cls(**data)


#: RGB 32x32 images of 10 classes (CIFAR-10): the default, and what a file without a shape was calibrated for.
DEFAULT_INPUT = InputShape()


@dataclasses.dataclass(frozen=True, slots=True)
class Score:
    """How well predictions match measured medians."""

    n: int
    within_10: float  # share of predictions within +-10 % of the measured median
    rmspe: float  # root mean squared percentage error, as a fraction
    median_ape: float  # median absolute percentage error, as a fraction

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score(predicted: Sequence[float], measured: Sequence[float]) -> Score:
    """Compare predicted with measured latencies (same order, same unit).

    Raises:
        LatencyError: lengths differ, nothing to compare, or a measured value is not positive.
    """
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.size == 0:
        raise LatencyError(f"need as many predictions as measurements (>0), got {p.size} and {m.size}")
    if (m <= 0).any():
        raise LatencyError("measured latencies must be positive")
    rel = (p - m) / m
    return Score(
        n=int(m.size),
        within_10=float(np.mean(np.abs(rel) <= TOLERANCE)),
        rmspe=float(np.sqrt(np.mean(rel**2))),
        median_ape=float(np.median(np.abs(rel))),
    )


class LatencyPredictor(abc.ABC):
    """Predicts a network's latency in milliseconds; saved as JSON with a ``kind`` field."""

    #: Set by :data:`PREDICTORS` on registration.
    kind: ClassVar[str]
    #: The images the predicted networks take (set from the file, or by :meth:`with_input`).
    input_shape: InputShape = DEFAULT_INPUT

    @abc.abstractmethod
    def predict(self, arch: Any) -> float:
        """Latency in ms of an :class:`~iotnas.arch.Arch` (or its key)."""

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        return each(self.predict, archs, progress)

    def with_input(self, shape: InputShape) -> LatencyPredictor:
        """The same predictor, predicting networks built for ``shape`` (a 1-channel study, another class count)."""
        return self.from_dict({**self.to_dict(), "input": shape.to_dict()})

    def kernels_of(self, arch: Any) -> list[Kernel]:
        """The kernels of an architecture built for this predictor's input shape."""
        return arch_kernels(arch, **self.input_shape.build_options)

    @abc.abstractmethod
    def _payload(self) -> dict[str, Any]:
        """The predictor's own fields, JSON-ready."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> LatencyPredictor:
        """Rebuild from :meth:`_payload` output."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": "iotnas-latency-predictor", "version": FORMAT_VERSION, "kind": self.kind,
                "input": self.input_shape.to_dict(), **self._payload()}

    @classmethod
    def from_dict(cls, data: Any) -> LatencyPredictor:
        """Rebuild any predictor from :meth:`to_dict` output.

        A file without an ``input`` shape predates it and reads as 3 channels, 32x32, 10 classes.

        Raises:
            LatencyError: not a predictor, another format version, an unknown kind, or a malformed field.
        """
        if not isinstance(data, Mapping) or data.get("format") != "iotnas-latency-predictor":
            raise LatencyError("not an iotnas latency predictor (missing format marker)")
        if data.get("version") != FORMAT_VERSION:
            raise LatencyError(f"predictor format version {data.get('version')} is not {FORMAT_VERSION}; refit it")
        kind = data.get("kind")
        predictor = PREDICTORS.get(kind)
        try:
            rebuilt = predictor._from_payload(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyError(f"malformed {kind} predictor: {exc}") from exc
        rebuilt.input_shape = InputShape.from_dict(data.get("input", {}))
        return rebuilt

    def save(self, path: str | Path) -> None:
        """Write the predictor as JSON."""
        try:
            Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")
        except OSError as exc:
            raise LatencyError(f"cannot write the predictor to {path}: {exc.strerror}") from exc

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        """Read a predictor written by :meth:`save` (plain JSON; nothing is executed).

        Raises:
            LatencyError: the file is missing, not JSON, or not a predictor.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise LatencyError(f"cannot read the predictor {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LatencyError(f"predictor {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def each(function: Callable[[Any], Any], archs: Sequence[Any], progress: Callable[[int, int], None] | None) -> list:
    """``function`` of every architecture, reporting (done, total) after each."""
    out = []
    for i, arch in enumerate(archs):
        out.append(function(arch))
        if progress is not None:
            progress(i + 1, len(archs))
    return out


#: Every predictor kind, by the ``kind`` its files carry.
PREDICTORS: Registry[type[LatencyPredictor]] = Registry("predictor kind", error=LatencyError, name_attr="kind")


def batched_totals(networks: Sequence[Sequence[Any]], unit_ms: Callable[[Sequence[Any]], np.ndarray],
                   total: Callable[[Sequence[Any], np.ndarray], float]) -> list[float]:
    """``total(units, their unit times)`` per network, with one batched regression over all units."""
    flat = [u for units in networks for u in units]
    per_unit = unit_ms(flat) if flat else np.zeros(0)
    out, start = [], 0
    for units in networks:
        if not units:
            raise LatencyError("a network with no kernels or nodes has no latency to predict")
        out.append(total(units, per_unit[start:start + len(units)]))
        start += len(units)
    return out
