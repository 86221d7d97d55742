"""The paper's manual workflow: draw ids in order from the chosen laws, law after law in turn."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from iotnas.strategies.base import STRATEGIES, Observation, PoolView, Strategy


@STRATEGIES.register("laws")
class LawsStrategy(Strategy):
    """Round-robin over laws, lowest id first: exactly what a person narrowing laws by hand trains.

    The ids of a law are exchangeable draws, so where the view ranks candidates (the hybrid device
    mode) a law's ranked-first ones come before the rest, lowest id first among equals.
    """

    def ask(self, view: PoolView, history: Sequence[Observation], n: int, rng: np.random.Generator) -> list[str]:
        by_law: dict[str, list[tuple[float, int, str]]] = {}
        ranks = view.rank or (0.0,) * len(view)
        for key, law, arch_id, rank in zip(view.keys, view.laws, view.ids, ranks):
            by_law.setdefault(law, []).append((rank, arch_id, key))
        queues = [sorted(items) for _, items in sorted(by_law.items())]
        start = len(history)  # continue the rotation where it stopped
        picks: list[str] = []
        while len(picks) < n and any(queues):
            queue = queues[start % len(queues)]
            if queue:
                picks.append(queue.pop(0)[2])
            start += 1
        return picks
