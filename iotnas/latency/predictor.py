"""Latency predictors: fit, predict (milliseconds), save and load as JSON, score.

* :class:`KernelPredictor`, in the spirit of nn-Meter: a network's latency is
  the sum of its kernels' latencies (measured where the kernel was timed on
  the device, else from a regressor calibrated on timed kernels), with a
  learned correction for what the parts do together (per-call overhead,
  caches).
* :class:`CostModelPredictor`: a whole-network regressor on cost features,
  for devices you cannot reach (fitted on the released Raspberry Pi timings).
* :class:`FlopsPredictor`: ``a * FLOPs + b``, the baseline the others must beat.

Files are JSON (trees stored as arrays, no pickle), safe to load from anyone;
their ``kind`` names a class in :data:`PREDICTORS`.
``LatencyPredictor.load(path).predict(arch)`` is the whole interface a search needs.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency._trees import fit_boosted_trees, predict_boosted_trees
from iotnas.latency.kernels import KINDS, Kernel, arch_kernels
from iotnas.registry import Registry

FORMAT_VERSION = 1
#: A prediction within this fraction of the measured median counts as a hit.
TOLERANCE = 0.10


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

    @abc.abstractmethod
    def predict(self, arch: Any) -> float:
        """Latency in ms of an :class:`~iotnas.arch.Arch` (or its key)."""

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        out = []
        for i, arch in enumerate(archs):
            out.append(self.predict(arch))
            if progress is not None:
                progress(i + 1, len(archs))
        return out

    @abc.abstractmethod
    def _payload(self) -> dict[str, Any]:
        """The predictor's own fields, JSON-ready."""

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> LatencyPredictor:
        """Rebuild from :meth:`_payload` output."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": "iotnas-latency-predictor", "version": FORMAT_VERSION, "kind": self.kind, **self._payload()}

    @classmethod
    def from_dict(cls, data: Any) -> LatencyPredictor:
        """Rebuild any predictor from :meth:`to_dict` output.

        Raises:
            LatencyError: not a predictor, another format version, or an unknown kind.
        """
        if not isinstance(data, Mapping) or data.get("format") != "iotnas-latency-predictor":
            raise LatencyError("not an iotnas latency predictor (missing format marker)")
        if data.get("version") != FORMAT_VERSION:
            raise LatencyError(f"predictor format version {data.get('version')} is not {FORMAT_VERSION}; refit it")
        kind = data.get("kind")
        predictor = PREDICTORS.get(kind)
        try:
            return predictor._from_payload(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyError(f"malformed {kind} predictor: {exc}") from exc

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


#: Every predictor kind, by the ``kind`` its files carry.
PREDICTORS: Registry[type[LatencyPredictor]] = Registry("predictor kind", error=LatencyError, name_attr="kind")


# ---------------------------------------------------------------- kernel sums (nn-Meter style)


@PREDICTORS.register("kernels")
class KernelPredictor(LatencyPredictor):
    """Sum of per-kernel latencies, corrected: ``exp(c) * sum**a * n_kernels**b`` (ms; always positive)."""

    def __init__(self, *, table: Mapping[str, float], trees: Mapping[str, Any], correction: Sequence[float],
                 runtime: str, settings: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        if len(correction) != 3:
            raise LatencyError(f"correction needs 3 coefficients, got {len(correction)}")
        self.table = dict(table)
        self.trees = dict(trees)
        self.correction = tuple(float(c) for c in correction)
        self.runtime = runtime
        self.settings = dict(settings)
        self.info = dict(info)

    def kernel_ms(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Each kernel's latency: the calibration timing where there is one, else the regressor's."""
        out = np.array([self.table.get(k.key, np.nan) for k in kernels], dtype=float)
        missing = np.isnan(out)
        if missing.any():
            x = np.array([k.features() for k, m in zip(kernels, missing) if m])
            out[missing] = np.exp(predict_boosted_trees(self.trees, x))
        return out

    def _corrected(self, total_ms: float, n_kernels: int) -> float:
        a, b, c = self.correction
        return float(math.exp(a * math.log(total_ms) + b * math.log(n_kernels) + c))

    def predict_kernels(self, kernels: Sequence[Kernel]) -> float:
        if not kernels:
            raise LatencyError("a network with no kernels has no latency to predict")
        return self._corrected(float(self.kernel_ms(kernels).sum()), len(kernels))

    def predict(self, arch: Any) -> float:
        return self.predict_kernels(arch_kernels(arch))

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Like :meth:`predict` per architecture, with one batched regression over all their kernels."""
        traced = []
        for i, arch in enumerate(archs):
            traced.append(arch_kernels(arch))
            if progress is not None:
                progress(i + 1, len(archs))
        flat = [k for ks in traced for k in ks]
        per_kernel = self.kernel_ms(flat) if flat else np.zeros(0)
        out, start = [], 0
        for ks in traced:
            if not ks:
                raise LatencyError("a network with no kernels has no latency to predict")
            out.append(self._corrected(float(per_kernel[start:start + len(ks)].sum()), len(ks)))
            start += len(ks)
        return out

    @classmethod
    def fit(cls, *, kernel_ms: Mapping[str, float], networks: Sequence[tuple[Sequence[Kernel], float]],
            runtime: str, settings: Mapping[str, Any], info: Mapping[str, Any] | None = None,
            seed: int = 0) -> KernelPredictor:
        """Fit from timed kernels (key -> ms) and timed networks (their kernels, measured ms).

        The correction is fitted on kernel sums from out-of-fold regressor
        predictions, so it sees the regressor's real error rather than its fit.

        Raises:
            LatencyError: fewer than 20 timed kernels or 3 timed networks.
        """
        keys = sorted(kernel_ms)
        if len(keys) < 20 or len(networks) < 3:
            raise LatencyError(f"need >= 20 timed kernels and >= 3 timed networks, got {len(keys)} and {len(networks)}")
        kernels = [Kernel.from_key(k) for k in keys]
        x = np.array([k.features() for k in kernels])
        y = np.log(np.array([kernel_ms[k] for k in keys]))
        trees = fit_boosted_trees(x, y, seed=seed)
        oof = _out_of_fold(x, y, seed=seed)
        estimate = dict(zip(keys, np.exp(oof)))
        untimed = {k.key: k for ks, _ in networks for k in ks if k.key not in estimate}
        if untimed:  # kernels of calibration networks left out of the timing: the regressor's view
            x_untimed = np.array([k.features() for k in untimed.values()])
            estimate.update(zip(untimed, np.exp(predict_boosted_trees(trees, x_untimed))))
        sums = np.array([sum(estimate[k.key] for k in ks) for ks, _ in networks])
        counts = np.array([len(ks) for ks, _ in networks], dtype=float)
        measured = np.array([ms for _, ms in networks], dtype=float)
        design = np.column_stack([np.log(sums), np.log(counts), np.ones_like(sums)])
        coef, *_ = np.linalg.lstsq(design, np.log(measured), rcond=None)  # least squares on log ms: relative error
        info = {"n_kernels": len(keys), "n_networks": len(networks), **(info or {})}
        return cls(table=dict(zip(keys, (kernel_ms[k] for k in keys))), trees=trees, correction=coef.tolist(),
                   runtime=runtime, settings=settings, info=info)

    def _payload(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "settings": self.settings, "info": self.info,
                "correction": list(self.correction), "table": self.table, "trees": self.trees}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> KernelPredictor:
        return cls(table={str(k): float(v) for k, v in data["table"].items()}, trees=data["trees"],
                   correction=data["correction"], runtime=data["runtime"], settings=data["settings"],
                   info=data["info"])


def _out_of_fold(x: np.ndarray, y: np.ndarray, *, seed: int, folds: int = 5) -> np.ndarray:
    from sklearn.model_selection import KFold

    out = np.empty_like(y)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        out[test] = predict_boosted_trees(fit_boosted_trees(x[train], y[train], seed=seed), x[test])
    return out


# ---------------------------------------------------------------- whole-network models


def network_features(kernels: Sequence[Kernel]) -> list[float]:
    """Cost features of a whole network, from its kernels: log FLOPs, weights, traffic, counts per kind."""
    flops = sum(k.flops for k in kernels)
    weights = sum(k.weight_values for k in kernels)
    traffic = sum(sum(math.prod(s) for s in k.in_shapes) + math.prod(k.out_shape) for k in kernels)
    conv_flops = [k.flops for k in kernels if k.kind == "conv"]
    depthwise = sum(k.flops for k in kernels if k.kind == "conv" and k.attr["groups"] > 1)
    counts = [sum(k.kind == kind for k in kernels) for kind in KINDS]
    return [
        math.log2(1 + flops), math.log2(1 + weights), math.log2(1 + traffic), float(len(kernels)),
        math.log2(1 + max(conv_flops, default=0)), depthwise / flops if flops else 0.0, *map(float, counts),
    ]


@PREDICTORS.register("cost")
class CostModelPredictor(LatencyPredictor):
    """Whole-network latency from cost features (boosted trees on log milliseconds)."""

    def __init__(self, *, trees: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        self.trees = dict(trees)
        self.info = dict(info)

    def predict_kernels(self, kernels: Sequence[Kernel]) -> float:
        return float(np.exp(predict_boosted_trees(self.trees, np.array([network_features(kernels)])))[0])

    def predict(self, arch: Any) -> float:
        return self.predict_kernels(arch_kernels(arch))

    @classmethod
    def fit(cls, networks: Sequence[tuple[Sequence[Kernel], float]], *, info: Mapping[str, Any] | None = None,
            seed: int = 0) -> CostModelPredictor:
        if len(networks) < 10:
            raise LatencyError(f"need >= 10 timed networks to fit a cost model, got {len(networks)}")
        x = np.array([network_features(ks) for ks, _ in networks])
        y = np.log([ms for _, ms in networks])
        trees = fit_boosted_trees(x, y, seed=seed, n_estimators=300, max_depth=3)
        return cls(trees=trees, info={"n_networks": len(networks), **(info or {})})

    def _payload(self) -> dict[str, Any]:
        return {"info": self.info, "trees": self.trees}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> CostModelPredictor:
        return cls(trees=data["trees"], info=data["info"])


@PREDICTORS.register("flops")
class FlopsPredictor(LatencyPredictor):
    """``latency_ms = a * FLOPs + b``, least squares on timed networks: the baseline."""

    def __init__(self, *, slope: float, intercept: float, info: Mapping[str, Any]) -> None:
        self.slope, self.intercept, self.info = float(slope), float(intercept), dict(info)

    def predict_flops(self, flops: float) -> float:
        return self.slope * flops + self.intercept

    def predict(self, arch: Any) -> float:
        from iotnas.cost import cost

        return self.predict_flops(cost(arch).flops)

    @classmethod
    def fit(cls, flops: Sequence[float], measured_ms: Sequence[float], *,
            info: Mapping[str, Any] | None = None) -> FlopsPredictor:
        if len(flops) < 2:
            raise LatencyError("need >= 2 timed networks to fit a FLOPs line")
        slope, intercept = np.polyfit(np.asarray(flops, float), np.asarray(measured_ms, float), 1)
        return cls(slope=slope, intercept=intercept, info={"n_networks": len(flops), **(info or {})})

    def _payload(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "info": self.info}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> FlopsPredictor:
        return cls(slope=data["slope"], intercept=data["intercept"], info=data["info"])
