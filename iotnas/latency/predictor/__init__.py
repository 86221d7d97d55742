"""Latency predictors: fit, predict (milliseconds), save and load as JSON, score.

One room per kind, behind one contract (``_base``):

* :class:`NodePredictor` (``_node_costs``), in the spirit of nn-Meter and
  LitePred: the nodes of ONNX Runtime's optimised graph, each costed by a
  regressor of its fused type fitted on node times profiled inside whole
  networks, plus a network term.
* :class:`KernelPredictor` (``_kernel_sum``), the first, simpler attempt: the
  sum of the network's kernels (timed alone), with a learned correction.
* :class:`OperatorCostPredictor` and :class:`CostModelPredictor`
  (``_whole_network``): whole-network models for timings of whole networks
  only, such as the torch runtime's and the released Raspberry Pi timings.
* :class:`FlopsPredictor` (``_flops_line``): ``a * FLOPs + b``, the baseline the others must beat.

Files are JSON (trees stored as arrays, no pickle), safe to load from anyone;
their ``kind`` names a class in :data:`PREDICTORS`.
``LatencyPredictor.load(path).predict(arch)`` is the whole interface a search needs.
"""

from __future__ import annotations

from iotnas.latency.predictor._base import (
    DEFAULT_INPUT,
    FORMAT_VERSION,
    PREDICTORS,
    TOLERANCE,
    InputShape,
    LatencyPredictor,
    Score,
    score,
)
from iotnas.latency.predictor._flops_line import FlopsPredictor
from iotnas.latency.predictor._kernel_sum import KernelPredictor
from iotnas.latency.predictor._node_costs import NodeCost, NodePredictor
from iotnas.latency.predictor._whole_network import (
    OP_GROUPS,
    OP_TERMS,
    CostModelPredictor,
    OperatorCostPredictor,
    network_features,
    op_aggregates,
    op_group,
)

__all__ = [
    "DEFAULT_INPUT",
    "FORMAT_VERSION",
    "OP_GROUPS",
    "OP_TERMS",
    "PREDICTORS",
    "TOLERANCE",
    "CostModelPredictor",
    "FlopsPredictor",
    "InputShape",
    "KernelPredictor",
    "LatencyPredictor",
    "NodeCost",
    "NodePredictor",
    "OperatorCostPredictor",
    "Score",
    "network_features",
    "op_aggregates",
    "op_group",
    "score",
]
