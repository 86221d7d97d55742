"""The node predictor (in the spirit of nn-Meter and LitePred): ONNX Runtime's optimised nodes, costed in context.

Each node of the optimised graph is costed by a boosted-tree regressor of its
fused type, fitted on node times profiled inside whole networks
(:mod:`iotnas.latency.nodes`), plus a non-negative whole-network term for what
no node's profile shows (per-call overhead, reorders, scheduling), and a
whole-network correction learnt from how the predicted time splits over node types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency._trees import fit_boosted_trees, predict_boosted_trees
from iotnas.latency.predictor._base import (
    PREDICTORS,
    LatencyPredictor,
    batched_totals,
    each,
)

#: A fused node type needs this many profiled nodes for a regressor of its own; rarer ones share one.
MIN_NODES_PER_TYPE = 40
#: The regressor group of node types too rare for their own.
SHARED = "*"
#: No network is predicted faster than this per node (the profiler's resolution, 0.5 µs).
MIN_NODE_MS = 0.0005
#: The whole-network correction's trees: few and shallow, so they learn what a sum of nodes misses
#: (say, a network whose time is mostly large pointwise maps) rather than the calibration networks.
CORRECTION_TREES = {"n_estimators": 100, "max_depth": 2}


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

    ``latency_ms = (a * sum(node ms) + b * n_nodes + c) * correction`` with a, c >= 0
    and b of either sign: the profiler adds a few microseconds to every node it
    times (b < 0 takes them off again; networks of many small nodes were otherwise
    predicted at twice their time), and what no node's profile shows (per-call
    overhead, scheduling) is in c. Node regressors are boosted trees on log
    microseconds, one per fused node type (``nchwc.Conv``, ``ms.FusedConv``,
    ``nchwc.ReorderOutput``, ...), fitted on node times profiled inside whole
    networks (:mod:`iotnas.latency.nodes`). ``correction`` is ``exp`` of small
    boosted trees on the network's node count, its node-time sum and how that sum
    splits over node types (shares and counts per type), fitted on the log ratio
    of measured to summed time; a file written without it predicts without it.
    """

    def __init__(self, *, trees: Mapping[str, Any], network: Sequence[float], runtime: str,
                 settings: Mapping[str, Any], info: Mapping[str, Any],
                 correction: Mapping[str, Any] | None = None) -> None:
        if len(network) != 3 or SHARED not in trees:
            raise LatencyError("a node predictor needs 3 network coefficients and a shared regressor")
        self.trees, self.network = dict(trees), tuple(float(c) for c in network)
        self.runtime, self.settings, self.info = runtime, dict(settings), dict(info)
        if correction is not None and not (isinstance(correction, Mapping) and isinstance(correction.get("ops"), list)
                                           and all(isinstance(op, str) for op in correction["ops"])):
            raise LatencyError("a node predictor's correction needs its trees and the node types it was fitted on")
        self.correction = None if correction is None else dict(correction)

    # ---------------------------------------------------------------- prediction

    def node_ms(self, nodes: Sequence[Any]) -> np.ndarray:
        """Each node's predicted time in context (ms), one batched regression per node type."""
        return _node_ms(self.trees, nodes)

    def _network_ms(self, nodes: Sequence[Any], node_ms: np.ndarray) -> float:
        if not nodes:
            raise LatencyError("a graph with no nodes has no latency to predict")
        summed = float(_network_term(self.network, float(node_ms.sum()), len(nodes)))
        if self.correction is None:
            return summed
        x = np.array([_network_features(nodes, node_ms, self.correction["ops"])])
        return summed * float(np.exp(predict_boosted_trees(self.correction, x))[0])

    def predict_nodes(self, nodes: Sequence[Any]) -> float:
        return self._network_ms(nodes, self.node_ms(nodes) if nodes else np.zeros(0))

    def nodes_of(self, arch: Any) -> tuple[Any, ...]:
        """The optimised nodes of an architecture built for this predictor's input, with its ONNX Runtime settings."""
        from iotnas.latency.nodes import arch_nodes
        from iotnas.latency.runtimes import OrtSettings

        return arch_nodes(arch, settings=OrtSettings.from_dict(self.settings), **self.input_shape.build_options)

    def predict(self, arch: Any) -> float:
        return self.predict_nodes(self.nodes_of(arch))

    def predict_many(self, archs: Sequence[Any], *, progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Like :meth:`predict` per architecture, with one batched regression over all their nodes."""
        return self.predict_graphs(each(self.nodes_of, archs, progress))

    def predict_graphs(self, graphs: Sequence[Sequence[Any]]) -> list[float]:
        """Predictions for graphs already read (:func:`~iotnas.latency.nodes.arch_nodes`), with one batched
        regression over all their nodes."""
        return batched_totals(graphs, self.node_ms, self._network_ms)

    def explain(self, arch: Any) -> tuple[list[NodeCost], float]:
        """Per-node predicted times (ms, network term applied to each, none below 0) and the rest (ms).

        The rest is the per-network term, less what the per-node floor added back: the
        per-node times and the rest add up to :meth:`predict`.
        """
        nodes = self.nodes_of(arch)
        a, b, _ = self.network
        node_ms = self.node_ms(nodes)
        total = self._network_ms(nodes, node_ms)
        factor = total / float(_network_term(self.network, float(node_ms.sum()), len(nodes)))  # the correction
        costs = [NodeCost(name=n.name, op=n.op, out_shape=n.out_shape, ms=max(a * float(ms) + b, 0.0) * factor)
                 for n, ms in zip(nodes, node_ms)]
        return costs, total - sum(c.ms for c in costs)

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, profiles: Sequence[Any], *, statistic: str = "median_ms", runtime: str,
            settings: Mapping[str, Any], info: Mapping[str, Any] | None = None, seed: int = 0) -> NodePredictor:
        """Fit from profiled networks (:class:`~iotnas.latency.nodes.NetworkProfile`, timed).

        Node regressors learn the profiled node times; the network term maps their sum onto each
        network's own timing by ``statistic``, taken in the same process as its profile, and the
        correction what remains. Both are fitted on node times from out-of-fold regressor
        predictions (folds by network), so they see the regressors' real error.

        Raises:
            LatencyError: fewer than 5 networks, or a profile without node times or network timing.
        """
        if len(profiles) < 5:
            raise LatencyError(f"need >= 5 profiled networks to fit a node predictor, got {len(profiles)}")
        if any(not p.node_us or len(p.node_us) != len(p.nodes) for p in profiles):
            raise LatencyError("every calibration network needs a timed profile (node times)")
        measured = np.array([p.network_ms(statistic) for p in profiles])
        trees = _fit_node_trees([n for p in profiles for n in p.nodes],
                                np.log([t for p in profiles for t in p.node_us]), seed=seed)
        node_ms = _out_of_fold_node_ms(profiles, seed=seed)
        sums = np.array([ms.sum() for ms in node_ms])
        counts = np.array([len(p.nodes) for p in profiles], dtype=float)
        network = _fit_network_term(sums, counts, measured)
        ops = sorted({n.op for p in profiles for n in p.nodes})
        x = np.array([_network_features(p.nodes, ms, ops) for p, ms in zip(profiles, node_ms)])
        correction = {**fit_boosted_trees(x, np.log(measured / _network_term(network, sums, counts)), seed=seed,
                                          **CORRECTION_TREES), "ops": ops}
        types = sorted(t for t in trees if t != SHARED)
        info = {"n_networks": len(profiles), "n_nodes": int(counts.sum()), "node_types": types,
                "statistic": statistic, **(info or {})}
        return cls(trees=trees, network=network, runtime=runtime, settings=settings, info=info,
                   correction=correction)

    @staticmethod
    def cross_validated(profiles: Sequence[Any], *, statistic: str = "median_ms", seed: int = 0) -> np.ndarray:
        """Each network's prediction (ms) by node regressors fitted without it (5 folds by network), before
        the correction."""
        sums = np.array([ms.sum() for ms in _out_of_fold_node_ms(profiles, seed=seed)])
        counts = np.array([len(p.nodes) for p in profiles], dtype=float)
        network = _fit_network_term(sums, counts, np.array([p.network_ms(statistic) for p in profiles]))
        return _network_term(network, sums, counts)

    def _payload(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "settings": self.settings, "info": self.info,
                "network": list(self.network), "trees": self.trees, "correction": self.correction}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> NodePredictor:
        return cls(trees=data["trees"], network=data["network"], runtime=data["runtime"],
                   settings=data["settings"], info=data["info"], correction=data.get("correction"))


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


def _out_of_fold_node_ms(profiles: Sequence[Any], *, seed: int, folds: int = 5) -> list[np.ndarray]:
    """Each network's node times (ms) predicted by regressors fitted without it."""
    from sklearn.model_selection import KFold

    out: list[np.ndarray] = [np.zeros(0)] * len(profiles)
    for train, test in KFold(min(folds, len(profiles)), shuffle=True, random_state=seed).split(profiles):
        nodes = [n for i in train for n in profiles[i].nodes]
        trees = _fit_node_trees(nodes, np.log([t for i in train for t in profiles[i].node_us]), seed=seed)
        for i in test:
            out[i] = _node_ms(trees, profiles[i].nodes)
    return out


def _network_features(nodes: Sequence[Any], node_ms: np.ndarray, ops: Sequence[str]) -> list[float]:
    """What the correction sees of a network: log node-time sum, node count, and per node type its share of
    the sum and its count (types outside ``ops``, unseen in calibration, count in neither)."""
    total = float(node_ms.sum())
    by_op = {op: [0.0, 0.0] for op in ops}
    for n, ms in zip(nodes, node_ms):
        if n.op in by_op:
            by_op[n.op][0] += float(ms) / total
            by_op[n.op][1] += 1.0
    return [float(np.log(total)), float(len(nodes)), *(v[0] for v in by_op.values()), *(v[1] for v in by_op.values())]


def _network_term(network: Sequence[float], node_sum_ms: Any, n_nodes: Any) -> Any:
    """``a * node_sum_ms + b * n_nodes + c``, never below :data:`MIN_NODE_MS` per node (scalars or arrays)."""
    a, b, c = network
    return np.maximum(a * node_sum_ms + b * n_nodes + c, np.multiply(n_nodes, MIN_NODE_MS))


def _fit_network_term(sums: np.ndarray, counts: np.ndarray, measured: np.ndarray) -> list[float]:
    """``measured ~ a * sum + b * count + c`` with a, c >= 0 and b free, least squares on relative error."""
    from scipy.optimize import lsq_linear

    design = np.column_stack([sums, counts, np.ones_like(sums)]) / measured[:, None]
    fit = lsq_linear(design, np.ones_like(measured), bounds=([0.0, -np.inf, 0.0], np.inf))
    return fit.x.tolist()
