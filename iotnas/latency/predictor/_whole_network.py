"""Whole-network models, for timings of whole networks only (the torch runtime, the released Raspberry Pi data).

* :class:`OperatorCostPredictor`: a sum of operator costs per group (per FLOP,
  per value moved, per call, as an eager runtime pays them), corrected by
  boosted trees.
* :class:`CostModelPredictor`: boosted trees on a network's cost features, the
  earlier, simpler model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency._trees import fit_boosted_trees, predict_boosted_trees
from iotnas.latency.kernels import KINDS, Kernel
from iotnas.latency.predictor._base import PREDICTORS, LatencyPredictor


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
        return self.predict_kernels(self.kernels_of(arch))

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


#: Operator groups of the operator-cost model: convolutions split by shape, the other kernel kinds as they are.
OP_GROUPS = ("conv", "pointwise", "depthwise", "grouped", *(k for k in KINDS if k != "conv"))
#: Per-kernel terms each group is costed by: MFLOPs, input and output values (M), weights (M), im2col values (M), calls.
OP_TERMS = ("mflops", "m_in", "m_out", "m_weights", "m_im2col", "calls")


def op_group(kernel: Kernel) -> str:
    """A kernel's operator group: eager runtimes cost 1x1, depthwise and grouped convolutions differently."""
    if kernel.kind != "conv":
        return kernel.kind
    a = kernel.attr
    if a["groups"] > 1:
        return "depthwise" if a["groups"] == kernel.in_shapes[0][0] else "grouped"
    return "pointwise" if math.prod(a["kernel"]) == 1 else "conv"


def op_aggregates(kernels: Sequence[Kernel]) -> np.ndarray:
    """Per operator group, the sums of :data:`OP_TERMS` over a network's kernels (flattened)."""
    out = np.zeros((len(OP_GROUPS), len(OP_TERMS)))
    for k in kernels:
        size = math.prod(a for a in k.attr.get("kernel", (1,)))
        im2col = (k.in_shapes[0][0] // k.attr["groups"]) * size * math.prod(k.out_shape[1:]) if (
            k.kind == "conv" and size > 1) else 0
        out[OP_GROUPS.index(op_group(k))] += [
            k.flops / 1e6, sum(math.prod(s) for s in k.in_shapes) / 1e6, math.prod(k.out_shape) / 1e6,
            k.weight_values / 1e6, im2col / 1e6, 1.0]
    return out.ravel()


@PREDICTORS.register("ops")
class OperatorCostPredictor(LatencyPredictor):
    """Whole-network latency as a sum of operator costs, corrected by boosted trees; for whole-network timings.

    ``base = sum over groups and terms of c * term + c0`` (non-negative least squares
    on relative error: each operator group pays per FLOP, per value moved and per
    call, as an eager runtime does), then ``latency = base * exp(trees(...))`` on
    the network's cost features, its aggregates, its family and law. This is the
    model for timings of whole networks only, such as the torch runtime's and
    the released Raspberry Pi timings (which time PyTorch eager).
    """

    def __init__(self, *, coef: Sequence[float], trees: Mapping[str, Any], families: Sequence[str],
                 laws: Sequence[str], info: Mapping[str, Any]) -> None:
        if len(coef) != len(OP_GROUPS) * len(OP_TERMS) + 1:
            raise LatencyError(f"an operator-cost model needs {len(OP_GROUPS) * len(OP_TERMS) + 1} coefficients, "
                               f"got {len(coef)}")
        self.coef = np.asarray(coef, dtype=float)
        self.trees = dict(trees)
        self.families, self.laws = list(families), list(laws)
        self.info = dict(info)

    def _features(self, key: str, kernels: Sequence[Kernel], aggregates: np.ndarray, base: float) -> list[float]:
        family, law = key.split("/")[0], key.rsplit("/", 1)[0]
        return [*network_features(kernels), *np.log1p(aggregates), math.log(base),
                *(float(family == f) for f in self.families), *(float(law == w) for w in self.laws)]

    def _base(self, aggregates: np.ndarray) -> float:
        return max(float(aggregates @ self.coef[:-1] + self.coef[-1]), 1e-6)

    def predict_network(self, key: str, kernels: Sequence[Kernel]) -> float:
        """Latency (ms) of the network ``key`` (``space/law/id``) traced into ``kernels``."""
        aggregates = op_aggregates(kernels)
        base = self._base(aggregates)
        x = np.array([self._features(key, kernels, aggregates, base)])
        return base * float(np.exp(predict_boosted_trees(self.trees, x))[0])

    def predict(self, arch: Any) -> float:
        from iotnas.arch import Arch

        key = Arch.parse(arch).key if isinstance(arch, str) else arch.key
        return self.predict_network(key, self.kernels_of(key))

    @classmethod
    def fit(cls, networks: Sequence[tuple[str, Sequence[Kernel], float]], *, weights: Sequence[float] | None = None,
            info: Mapping[str, Any] | None = None, seed: int = 0) -> OperatorCostPredictor:
        """Fit on ``(arch key, kernels, measured ms)`` per network.

        Args:
            weights: per-network trust (say, the inverse variance of its timing); equal by default.

        Raises:
            LatencyError: fewer than 10 networks.
        """
        from scipy.optimize import nnls

        if len(networks) < 10:
            raise LatencyError(f"need >= 10 timed networks to fit an operator-cost model, got {len(networks)}")
        y = np.array([ms for _, _, ms in networks], dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        aggregates = np.array([op_aggregates(ks) for _, ks, _ in networks])
        design = np.column_stack([aggregates, np.ones(len(y))])
        root = np.sqrt(w)[:, None]
        coef, _ = nnls(design / y[:, None] * root, root[:, 0])  # relative error, weighted
        model = cls(coef=coef.tolist(), trees={}, families=sorted({k.split("/")[0] for k, _, _ in networks}),
                    laws=sorted({k.rsplit("/", 1)[0] for k, _, _ in networks}), info={})
        bases = np.array([model._base(a) for a in aggregates])
        x = np.array([model._features(k, ks, a, b) for (k, ks, _), a, b in zip(networks, aggregates, bases)])
        model.trees = fit_boosted_trees(x, np.log(y / bases), seed=seed, n_estimators=300, max_depth=3,
                                        sample_weight=w)
        model.info = {"n_networks": len(networks), **(info or {})}
        return model

    def _payload(self) -> dict[str, Any]:
        return {"info": self.info, "coef": self.coef.tolist(), "trees": self.trees, "families": self.families,
                "laws": self.laws}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> OperatorCostPredictor:
        return cls(coef=data["coef"], trees=data["trees"], families=data["families"], laws=data["laws"],
                   info=data["info"])
