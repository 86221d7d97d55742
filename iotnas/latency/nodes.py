"""A network as ONNX Runtime runs it: the nodes of its optimised graph, timed inside the whole network.

Timing a kernel alone overstates its share (it pays its own layout reorders
and call overhead), and ONNX Runtime does not run the graph it was given: it
fuses Conv+BatchNorm+ReLU, moves convolutions to a blocked channel layout
(NCHWc) with reorders at the edges, folds additions into convolutions. So the
units a predictor learns are the nodes of the *optimised* graph
(``optimized_model_filepath``), and their costs come from ONNX Runtime's own
profiler (``enable_profiling``) over runs of the whole network.

:func:`profile_onnx` opens one session with both, runs the network and reads
back every node (its fused type, shapes and attributes) with a low quantile of
its times over the profiled runs; then it times the whole network per the protocol in an
unprofiled session of the same process, by the wall clock and by the thread's
CPU clock, so the network's time is taken in the same minute as its nodes'.
With ``runs=0`` it is the cheap way to learn a graph's nodes for a prediction:
one untimed run gives the shapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency.measure import LatencyMeasurement, Protocol, check_statistic
from iotnas.latency.runtimes import (
    OrtSettings,
    open_session,
    session_options,
    time_onnx,
)

#: Short prefixes for the operator domains of ONNX Runtime's fused nodes.
_DOMAINS = {"": "", "ai.onnx": "", "com.microsoft": "ms.", "com.microsoft.nchwc": "nchwc."}
#: Attributes that change a node's cost (the rest, such as auto_pad, are implied by the shapes).
_COST_ATTRS = ("kernel_shape", "strides", "group", "activation", "dilations", "axis", "transB")
#: A profiled time below this is the profiler's resolution, not the node's cost (microseconds).
MIN_NODE_US = 0.5
#: Which of a node's profiled times stands for it. Another process taking the core only adds time,
#: and on a shared core a node of a few milliseconds is interrupted in most runs, so the median
#: carries the machine's load; the fastest run can be an outlier the other way (a network ran
#: at half its usual time in a few of 30 runs), so a low quantile, not the minimum.
NODE_QUANTILE = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One node of an optimised graph: fused operator type, input and output shapes (batch 1), attributes."""

    name: str
    op: str  # domain-qualified: "nchwc.Conv", "ms.FusedConv", "Conv", "nchwc.ReorderInput", ...
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def is_conv(self) -> bool:
        return self.op.endswith("Conv")

    @property
    def flops(self) -> int:
        """Arithmetic per image: 2 x MACs for convolutions and Gemm, one per element visited otherwise."""
        out = math.prod(self.out_shape)
        if self.is_conv and len(self.in_shapes) > 1:  # weights are (cout, cin / groups, kh, kw)
            return 2 * math.prod(self.out_shape[2:]) * math.prod(self.in_shapes[1])
        if self.op in ("Gemm", "MatMul") and len(self.in_shapes) > 1:
            return 2 * math.prod(self.in_shapes[1])
        if self.op.startswith("Global") or self.op.endswith("GlobalAveragePool"):
            return math.prod(self.in_shapes[0]) if self.in_shapes else out
        kernel = self.attr.get("kernel_shape")
        return out * (math.prod(kernel) if kernel else 1)

    def features(self) -> list[float]:
        """Numbers a node regressor sees: sizes (log2), the convolution's geometry, fusions, layout."""
        a = self.attr
        x = self.in_shapes[0] if self.in_shapes else self.out_shape
        params = sum(math.prod(s) for s in self.in_shapes[1:])
        cin = x[1] if len(x) > 1 else 1
        cout = self.out_shape[1] if len(self.out_shape) > 1 else 1
        spatial_in = math.prod(x[2:]) if len(x) > 2 else 1
        spatial_out = math.prod(self.out_shape[2:]) if len(self.out_shape) > 2 else 1
        kernel = a.get("kernel_shape") or (1, 1)
        groups = int(a.get("group", 1))
        return [
            math.log2(1 + self.flops),
            math.log2(1 + sum(math.prod(s) for s in self.in_shapes)),
            math.log2(1 + math.prod(self.out_shape)),
            math.log2(1 + params),
            math.log2(max(cin, 1)),
            math.log2(max(cout, 1)),
            math.log2(max(spatial_in, 1)),
            math.log2(max(spatial_out, 1)),
            float(kernel[0]),
            float((a.get("strides") or (1, 1))[0]),
            math.log2(max(groups, 1)),
            1.0 if groups > 1 and groups == cin else 0.0,
            1.0 if a.get("activation") else 0.0,
            float(len(self.in_shapes)),
            1.0 if self.is_conv and len(self.in_shapes) > 3 else 0.0,  # a fused addition (Sum input)
            float(cin % 8 == 0) + float(cin % 16 == 0),  # how channels fit the blocked layout
        ]

    def to_list(self) -> list[Any]:
        return [self.name, self.op, [list(s) for s in self.in_shapes], list(self.out_shape),
                [[k, v] for k, v in self.attrs]]

    @classmethod
    def from_list(cls, data: Any) -> Node:
        try:
            name, op, ins, out, attrs = data
            return cls(name=str(name), op=str(op), in_shapes=tuple(tuple(int(d) for d in s) for s in ins),
                       out_shape=tuple(int(d) for d in out), attrs=tuple((str(k), _frozen(v)) for k, v in attrs))
        except (ValueError, TypeError) as exc:
            raise LatencyError(f"malformed graph node {str(data)[:80]!r}: {exc}") from exc


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkProfile:
    """A network's optimised nodes in execution order and, when timed, each node's time (µs) and the network's.

    ``node_us`` is each node's low quantile over the profiled runs
    (:data:`NODE_QUANTILE`: what it takes when nothing interrupts it). ``timing``
    is the whole network timed per the protocol in an unprofiled
    session of the same process, right after the profiled runs.
    """

    nodes: tuple[Node, ...]
    node_us: tuple[float, ...] = ()  # empty: the graph was read, not timed
    runs: int = 0
    timing: LatencyMeasurement | None = None  # None: not timed

    def network_ms(self, statistic: str) -> float:
        """The whole network's time by ``statistic`` (``median_ms`` or ``cpu_median_ms``).

        Raises:
            LatencyError: the network was not timed, or ``statistic`` is unknown.
        """
        check_statistic(statistic)
        if self.timing is None:
            raise LatencyError("this profile has no whole-network timing; profile with runs > 0")
        return float(getattr(self.timing, statistic))

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_list() for n in self.nodes], "node_us": list(self.node_us), "runs": self.runs,
                "timing": None if self.timing is None else self.timing.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> NetworkProfile:
        try:
            timing = data.get("timing")
            return cls(nodes=tuple(Node.from_list(n) for n in data["nodes"]),
                       node_us=tuple(float(t) for t in data["node_us"]), runs=int(data["runs"]),
                       timing=None if timing is None else LatencyMeasurement.from_dict(timing))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LatencyError(f"malformed network profile: {exc}") from exc


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _attrs(node: Any) -> tuple[tuple[str, Any], ...]:
    from onnx import helper

    out = []
    for attribute in node.attribute:
        if attribute.name in _COST_ATTRS:
            value = helper.get_attribute_value(attribute)
            out.append((attribute.name, value.decode() if isinstance(value, bytes) else _frozen(value)))
    return tuple(sorted(out))


def _shapes(entries: Any) -> tuple[tuple[int, ...], ...]:
    """Shapes from a profiler event's ``input_type_shape`` list (``[{"float": [1, 8, 32, 32]}, ...]``)."""
    return tuple(tuple(int(d) for d in next(iter(e.values()))) for e in entries if e)


def profile_onnx(onnx_bytes: bytes, *, settings: OrtSettings | None = None, runs: int = 20,
                 warmup_runs: int = 5, protocol: Protocol | None = None) -> NetworkProfile:
    """Optimise and run a graph with ONNX Runtime's profiler; its nodes, their times, and the network's.

    Args:
        settings: ONNX Runtime settings (default: one thread, every optimisation).
        runs: profiled runs (a node's time is a low quantile of its times, :data:`NODE_QUANTILE`); 0 reads
            the nodes from one untimed run.
        warmup_runs: runs before the profiled ones, left out.
        protocol: how the whole network is timed afterwards, unprofiled, in this process (default:
            :class:`~iotnas.latency.measure.Protocol`'s); not timed when ``runs`` is 0.

    Raises:
        LatencyError: ONNX Runtime cannot load or run the graph, or its profile cannot be read.
    """
    import onnx

    settings = settings or OrtSettings()
    with tempfile.TemporaryDirectory(prefix="iotnas-profile-") as folder:
        options = session_options(settings)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        options.optimized_model_filepath = str(Path(folder) / "optimised.onnx")
        session, feed = open_session(onnx_bytes, settings, options=options)
        total = max(runs, 0) + (warmup_runs if runs > 0 else 0)
        try:
            for _ in range(max(total, 1)):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
            graph = onnx.load(str(Path(folder) / "optimised.onnx"), load_external_data=False).graph
        except Exception as exc:  # ORT and onnx raise their own untyped errors
            raise LatencyError(f"cannot profile the graph: {str(exc).splitlines()[0][:300]}") from exc
        del session  # its profiler's buffers are not to share the caches with the timing below
    by_name = {n.name: n for n in graph.node}
    durations: dict[str, list[float]] = defaultdict(list)
    nodes: dict[str, Node] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        name = name.removesuffix("_kernel_time")
        durations[name].append(float(event["dur"]))
        if name not in nodes:
            args = event.get("args", {})
            proto = by_name.get(name)
            domain = _DOMAINS.get(proto.domain, proto.domain + ".") if proto is not None else ""
            outputs = _shapes(args.get("output_type_shape", []))
            nodes[name] = Node(
                name=name, op=domain + str(args.get("op_name", proto.op_type if proto is not None else "?")),
                in_shapes=_shapes(args.get("input_type_shape", [])), out_shape=outputs[0] if outputs else (),
                attrs=_attrs(proto) if proto is not None else (),
            )
    if not nodes:
        raise LatencyError("the profile names no nodes; this ONNX Runtime build may not profile")
    if runs <= 0:
        return NetworkProfile(nodes=tuple(nodes.values()))
    fast = tuple(max(float(np.quantile(durations[name][-runs:], NODE_QUANTILE)), MIN_NODE_US) for name in nodes)
    # Timed after the profiled runs, not between them: alternating with the profiled session run by run
    # evicts each other's weights, which made networks under 1 ms up to 1.5x slower than in a process of their own.
    timing = time_onnx(onnx_bytes, settings=settings, protocol=protocol or Protocol())
    return NetworkProfile(nodes=tuple(nodes.values()), node_us=fast, runs=runs, timing=timing)


def arch_onnx(arch: Any, *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> bytes:
    """The ONNX graph of an architecture (an :class:`~iotnas.arch.Arch` or its key), as a search exports it."""
    from iotnas.latency.api import to_onnx

    return to_onnx(arch, num_classes=num_classes, in_channels=in_channels, input_size=input_size)[0]


def arch_nodes(arch: Any, *, settings: OrtSettings | None = None, **shape: int) -> tuple[Node, ...]:
    """The nodes ONNX Runtime runs for an architecture (exported, optimised, one untimed run for the shapes)."""
    return profile_onnx(arch_onnx(arch, **shape), settings=settings, runs=0).nodes
