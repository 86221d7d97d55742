"""Latency predictors: fit, predict (milliseconds), save and load as JSON, score.

* :class:`NodePredictor`, in the spirit of nn-Meter and LitePred: the nodes of
  ONNX Runtime's optimised graph, each costed by a regressor of its fused type
  fitted on node times profiled inside whole networks, plus a network term.
* :class:`KernelPredictor`, the first, simpler attempt: a network's latency is
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
        return _each(self.predict, archs, progress)

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


def _each(function: Callable[[Any], Any], archs: Sequence[Any], progress: Callable[[int, int], None] | None) -> list:
    """``function`` of every architecture, reporting (done, total) after each."""
    out = []
    for i, arch in enumerate(archs):
        out.append(function(arch))
        if progress is not None:
            progress(i + 1, len(archs))
    return out


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
        return _batched(_each(arch_kernels, archs, progress), self.kernel_ms, self._corrected)

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


def _batched(networks: Sequence[Sequence[Any]], unit_ms: Callable[[Sequence[Any]], np.ndarray],
             total: Callable[[float, int], float]) -> list[float]:
    """``total(sum of unit times, unit count)`` per network, with one batched regression over all units."""
    flat = [u for units in networks for u in units]
    per_unit = unit_ms(flat) if flat else np.zeros(0)
    out, start = [], 0
    for units in networks:
        if not units:
            raise LatencyError("a network with no kernels or nodes has no latency to predict")
        out.append(total(float(per_unit[start:start + len(units)].sum()), len(units)))
        start += len(units)
    return out


def _out_of_fold(x: np.ndarray, y: np.ndarray, *, seed: int, folds: int = 5) -> np.ndarray:
    from sklearn.model_selection import KFold

    out = np.empty_like(y)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        out[test] = predict_boosted_trees(fit_boosted_trees(x[train], y[train], seed=seed), x[test])
    return out


# ---------------------------------------------------------------- optimised-graph nodes, timed in context

#: A fused node type needs this many profiled nodes for a regressor of its own; rarer ones share one.
MIN_NODES_PER_TYPE = 40
#: The regressor group of node types too rare for their own.
SHARED = "*"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeCost:
    """One node's share of a prediction (``latency explain``)."""

    name: str
    op: str
    out_shape: tuple[int, ...]
    ms: float


@PREDICTORS.register("nodes")
class NodePredictor(LatencyPredictor):
    """Nodes of ONNX Runtime's optimised graph, each costed by the regressor of its fused type, plus a network term.

    ``latency_ms = a * sum(node ms) + b * n_nodes + c`` with a, b, c >= 0 (per-call
    overhead, reorders and scheduling that no node's profile shows). Node
    regressors are boosted trees on log microseconds, one per fused node type
    (``nchwc.Conv``, ``ms.FusedConv``, ``nchwc.ReorderOutput``, ...), fitted on
    node times profiled inside whole networks (:mod:`iotnas.latency.nodes`).
    """

    def __init__(self, *, trees: Mapping[str, Any], network: Sequence[float], runtime: str,
                 settings: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        if len(network) != 3 or SHARED not in trees:
            raise LatencyError("a node predictor needs 3 network coefficients and a shared regressor")
        self.trees, self.network = dict(trees), tuple(float(c) for c in network)
        self.runtime, self.settings, self.info = runtime, dict(settings), dict(info)

    # ---------------------------------------------------------------- prediction

    def node_ms(self, nodes: Sequence[Any]) -> np.ndarray:
        """Each node's predicted time in context (ms), one batched regression per node type."""
        return _node_ms(self.trees, nodes)

    def _network_ms(self, node_sum_ms: float, n_nodes: int) -> float:
        a, b, c = self.network
        return a * node_sum_ms + b * n_nodes + c

    def predict_nodes(self, nodes: Sequence[Any]) -> float:
        if not nodes:
            raise LatencyError("a graph with no nodes has no latency to predict")
        return self._network_ms(float(self.node_ms(nodes).sum()), len(nodes))

    def nodes_of(self, arch: Any) -> tuple[Any, ...]:
        """The optimised nodes of an architecture, with this predictor's ONNX Runtime settings."""
        from iotnas.latency.nodes import arch_nodes
        from iotnas.latency.runtimes import OrtSettings

        return arch_nodes(arch, settings=OrtSettings.from_dict(self.settings))

    def predict(self, arch: Any) -> float:
        return self.predict_nodes(self.nodes_of(arch))

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Like :meth:`predict` per architecture, with one batched regression over all their nodes."""
        return self.predict_graphs(_each(self.nodes_of, archs, progress))

    def predict_graphs(self, graphs: Sequence[Sequence[Any]]) -> list[float]:
        """Predictions for graphs already read (:func:`~iotnas.latency.nodes.arch_nodes`)."""
        return _batched(graphs, self.node_ms, self._network_ms)

    def explain(self, arch: Any) -> tuple[list[NodeCost], float]:
        """Per-node predicted times (ms, network term applied to each) and the per-network overhead (ms)."""
        nodes = self.nodes_of(arch)
        a, b, c = self.network
        costs = [NodeCost(name=n.name, op=n.op, out_shape=n.out_shape, ms=a * float(ms) + b)
                 for n, ms in zip(nodes, self.node_ms(nodes))]
        return costs, c

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, networks: Sequence[tuple[Any, float]], *, runtime: str, settings: Mapping[str, Any],
            info: Mapping[str, Any] | None = None, seed: int = 0) -> NodePredictor:
        """Fit from profiled networks: ``(NetworkProfile, measured ms)`` pairs.

        The network term is fitted on node sums from out-of-fold regressor
        predictions (folds by network), so it sees the regressors' real error.

        Raises:
            LatencyError: fewer than 5 networks, or a profile without node times.
        """
        if len(networks) < 5:
            raise LatencyError(f"need >= 5 profiled networks to fit a node predictor, got {len(networks)}")
        if any(not p.node_us or len(p.node_us) != len(p.nodes) for p, _ in networks):
            raise LatencyError("every calibration network needs a timed profile (node times)")
        trees = _fit_node_trees([n for p, _ in networks for n in p.nodes],
                                np.log([t for p, _ in networks for t in p.node_us]), seed=seed)
        sums = _out_of_fold_node_sums([p for p, _ in networks], seed=seed)
        counts = np.array([len(p.nodes) for p, _ in networks], dtype=float)
        measured = np.array([ms for _, ms in networks], dtype=float)
        network = _fit_network_term(sums, counts, measured)
        types = sorted(t for t in trees if t != SHARED)
        info = {"n_networks": len(networks), "n_nodes": int(counts.sum()), "node_types": types, **(info or {})}
        return cls(trees=trees, network=network, runtime=runtime, settings=settings, info=info)

    @staticmethod
    def cross_validated(networks: Sequence[tuple[Any, float]], *, seed: int = 0) -> np.ndarray:
        """Each network's prediction (ms) by node regressors fitted without it (5 folds by network)."""
        sums = _out_of_fold_node_sums([p for p, _ in networks], seed=seed)
        counts = np.array([len(p.nodes) for p, _ in networks], dtype=float)
        a, b, c = _fit_network_term(sums, counts, np.array([ms for _, ms in networks], dtype=float))
        return a * sums + b * counts + c

    def _payload(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "settings": self.settings, "info": self.info,
                "network": list(self.network), "trees": self.trees}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> NodePredictor:
        return cls(trees=data["trees"], network=data["network"], runtime=data["runtime"],
                   settings=data["settings"], info=data["info"])


def _group(op: str, trees: Mapping[str, Any]) -> str:
    return op if op in trees else SHARED


def _shared_features(node: Any, ops: Sequence[str]) -> list[float]:
    """A node's features with its type one-hot, for the regressor the rare types share."""
    return [1.0 if node.op == op else 0.0 for op in ops] + node.features()


def _node_ms(trees: Mapping[str, Any], nodes: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(nodes))
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        groups.setdefault(_group(n.op, trees), []).append(i)
    for group, rows in groups.items():
        if group == SHARED:
            ops = trees[SHARED]["ops"]
            x = np.array([_shared_features(nodes[i], ops) for i in rows])
        else:
            x = np.array([nodes[i].features() for i in rows])
        out[rows] = np.exp(predict_boosted_trees(trees[group], x)) / 1000.0  # us -> ms
    return out


def _fit_node_trees(nodes: Sequence[Any], log_us: np.ndarray, *, seed: int) -> dict[str, Any]:
    """One boosted-tree regressor per frequent node type, one shared (type one-hot) for all of them."""
    by_op: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        by_op.setdefault(n.op, []).append(i)
    trees: dict[str, Any] = {}
    for op, rows in sorted(by_op.items()):
        if len(rows) >= MIN_NODES_PER_TYPE:
            x = np.array([nodes[i].features() for i in rows])
            trees[op] = fit_boosted_trees(x, log_us[rows], seed=seed, n_estimators=300, max_depth=4)
    ops = sorted(by_op)
    shared = fit_boosted_trees(np.array([_shared_features(n, ops) for n in nodes]), log_us, seed=seed,
                               n_estimators=300, max_depth=4)
    trees[SHARED] = {**shared, "ops": ops}
    return trees


def _out_of_fold_node_sums(profiles: Sequence[Any], *, seed: int, folds: int = 5) -> np.ndarray:
    """Each network's node-time sum (ms) predicted by regressors fitted without it."""
    from sklearn.model_selection import KFold

    sums = np.empty(len(profiles))
    for train, test in KFold(min(folds, len(profiles)), shuffle=True, random_state=seed).split(profiles):
        nodes = [n for i in train for n in profiles[i].nodes]
        trees = _fit_node_trees(nodes, np.log([t for i in train for t in profiles[i].node_us]), seed=seed)
        for i in test:
            sums[i] = float(_node_ms(trees, profiles[i].nodes).sum())
    return sums


def _fit_network_term(sums: np.ndarray, counts: np.ndarray, measured: np.ndarray) -> list[float]:
    """``measured ~ a * sum + b * count + c`` with a, b, c >= 0, least squares on relative error."""
    from scipy.optimize import nnls

    design = np.column_stack([sums, counts, np.ones_like(sums)]) / measured[:, None]
    coef, _ = nnls(design, np.ones_like(measured))
    return coef.tolist()


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
        return self.predict_network(key, arch_kernels(key))

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
