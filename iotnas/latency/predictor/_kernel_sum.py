"""The kernel-sum predictor (in the spirit of nn-Meter): a network costs the sum of its kernels, corrected.

A kernel's latency is its calibration timing where the kernel was timed on the
device, else a regressor's estimate; a learned correction covers what the parts
do together (per-call overhead, caches). Kernels timed alone overstate their
share, which is why :mod:`._node_costs` times nodes inside whole networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency._trees import fit_boosted_trees, predict_boosted_trees
from iotnas.latency.kernels import Kernel
from iotnas.latency.predictor._base import (
    PREDICTORS,
    LatencyPredictor,
    batched_totals,
    each,
)


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
        return self.predict_kernels(self.kernels_of(arch))

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Like :meth:`predict` per architecture, with one batched regression over all their kernels."""
        return batched_totals(each(self.kernels_of, archs, progress), self.kernel_ms,
                              lambda kernels, ms: self._corrected(float(ms.sum()), len(kernels)))

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
