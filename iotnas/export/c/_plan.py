"""The static arena: where each activation lives, from a liveness plan over the graph.

A tensor is live from the operator that writes it to the last operator that reads it
(inclusive: an operator reads its inputs while it writes its output, so they never share
memory). Tensors are placed largest first at the lowest offset that overlaps no tensor
live at the same time (the greedy-by-size heuristic of TensorFlow Lite's arena planner),
so the arena is at least the largest set of simultaneously live tensors and usually equal
to it. The logits go straight to the caller's buffer and take no arena space. Sizes count
values: floats for the float library, bytes for the int8 one.
"""

from __future__ import annotations

from dataclasses import dataclass

from iotnas.export.c._graph import Graph

FLOAT_BYTES = 4


@dataclass(frozen=True, slots=True)
class ArenaPlan:
    offsets: dict[int, int]  # tensor id -> offset in values
    arena_values: int  # values the arena holds
    live_peak_values: int  # the most values live at once (a lower bound for any plan)
    value_bytes: int = FLOAT_BYTES  # 4: float32 activations; 1: int8

    @property
    def arena_bytes(self) -> int:
        return self.arena_values * self.value_bytes

    @property
    def live_peak_bytes(self) -> int:
        return self.live_peak_values * self.value_bytes


def plan_arena(graph: Graph, *, value_bytes: int = FLOAT_BYTES) -> ArenaPlan:
    """Offsets of every activation of ``graph`` in one arena (see the module docstring)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        first[op.output] = i
        last.setdefault(op.output, i)
        for t in op.inputs:
            last[t] = i
    planned = [t for t in first if t != graph.output]
    sizes = {t: graph.values(t) for t in planned}
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[int, int] = {}
    for t in sorted(planned, key=lambda t: (-sizes[t], first[t])):
        busy = sorted((o, o + s) for o, s, f, lst in placed if f <= last[t] and first[t] <= lst)
        offset = 0
        for lo, hi in busy:
            if offset + sizes[t] <= lo:
                break
            offset = max(offset, hi)
        offsets[t] = offset
        placed.append((offset, sizes[t], first[t], last[t]))
    live_peak = max((sum(sizes[t] for t in planned if first[t] <= i <= last[t]) for i in range(len(graph.ops))),
                    default=0)
    arena = max((o + s for o, s, _, _ in placed), default=0)
    return ArenaPlan(offsets=offsets, arena_values=arena, live_peak_values=live_peak, value_bytes=value_bytes)
