"""Non-dominated fronts: which models no other model beats on every objective at once.

The core works on a plain ``(n, k)`` array of objectives, each minimised unless
``maximize`` says otherwise. Point ``a`` dominates ``b`` when ``a`` is no worse on
every objective and strictly better on at least one; identical points do not
dominate each other, so duplicates of a front point are all on the front.

* large sets first drop the points dominated by pivots taken from the front of a sample;
* two objectives: one lexicographic sort and a running minimum, ``O(n log n)``;
* three or more: a lexicographic sort, then blocks of points checked with NumPy
  against the front found so far (a point can only be dominated by one that
  sorts before it; in three objectives that is a staircase lookup), and within
  the block;
* ranks (non-dominated sorting, rank 0 = the front): an ``O(n log n)`` sweep in
  two objectives, repeated peeling otherwise.

:mod:`iotnas.results.fronts` applies these to the trained models of a study.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np

BLOCK = 512  # points checked together in 3+ objectives; bounds a block x front x k temporary


def _as_costs(points: np.ndarray | Sequence[Sequence[float]], maximize: Sequence[bool] | None) -> np.ndarray:
    """A float64 ``(n, k)`` array where every column is to be minimised."""
    costs = np.array(points, dtype=np.float64, copy=True)
    if costs.ndim != 2:
        raise ValueError(f"objectives must be a 2-D array (points x objectives), got shape {costs.shape}")
    if np.isnan(costs).any():
        raise ValueError("objectives contain NaN; drop the points that lack a figure first")
    if maximize is not None:
        if len(maximize) != costs.shape[1]:
            raise ValueError(f"maximize has {len(maximize)} entries for {costs.shape[1]} objectives")
        costs[:, np.asarray(maximize, dtype=bool)] *= -1.0
    return costs


def _lex_order(costs: np.ndarray) -> np.ndarray:
    """Indices sorting the rows lexicographically (first column first)."""
    return np.lexsort(costs.T[::-1])


def _group_starts(sorted_costs: np.ndarray) -> np.ndarray:
    """For each sorted row, the index of the first row of its run of identical rows."""
    n = len(sorted_costs)
    new = np.ones(n, dtype=bool)
    new[1:] = (sorted_costs[1:] != sorted_costs[:-1]).any(axis=1)
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def _front_2d(costs: np.ndarray) -> np.ndarray:
    order = _lex_order(costs)
    s = costs[order]
    # A row is dominated iff some strictly lexicographically smaller row has y <= its y.
    before = np.empty(len(s))
    before[0] = np.inf  # never read: the first run has no predecessor
    before[1:] = np.minimum.accumulate(s[:-1, 1])
    starts = _group_starts(s)
    mask = np.empty(len(s), dtype=bool)
    mask[order] = (starts == 0) | (before[starts] > s[:, 1])
    return mask


def _unique_sorted(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in lexicographic order, and for each input row the index of its distinct row."""
    order = _lex_order(costs)
    s = costs[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    inverse = np.empty(len(s), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def _covered(front_rest: np.ndarray, block_rest: np.ndarray) -> np.ndarray:
    """For each block row: is some front row no worse on every objective but the first?"""
    if len(front_rest) == 0:
        return np.zeros(len(block_rest), dtype=bool)
    if front_rest.shape[1] == 2:
        # A staircase query: the smallest z among front rows with y <= the row's y.
        by_y = np.argsort(front_rest[:, 0], kind="stable")
        ys = front_rest[by_y, 0]
        lowest_z = np.minimum.accumulate(front_rest[by_y, 1])
        pos = np.searchsorted(ys, block_rest[:, 0], side="right")
        return (pos > 0) & (lowest_z[np.maximum(pos - 1, 0)] <= block_rest[:, 1])
    return (front_rest[None, :, :] <= block_rest[:, None, :]).all(axis=2).any(axis=1)


def _front_nd(costs: np.ndarray) -> np.ndarray:
    # Over distinct rows in lexicographic order, an earlier row is no worse on the first
    # objective and differs somewhere, so it dominates a later row exactly when it is no
    # worse on the other objectives. The front of the rows before a block is final.
    uniq, inverse = _unique_sorted(costs)
    rest = uniq[:, 1:]
    keep = np.zeros(len(uniq), dtype=bool)
    front = rest[:0]
    for start in range(0, len(rest), BLOCK):
        block = rest[start:start + BLOCK]
        alive = ~_covered(front, block)
        idx = np.flatnonzero(alive)
        if len(idx) > 1:  # survivors are few: compare each with the survivors before it
            sv = block[idx]
            earlier_no_worse = (sv[None, :, :] <= sv[:, None, :]).all(axis=2)
            earlier_no_worse &= np.tri(len(idx), k=-1, dtype=bool)
            alive[idx] = ~earlier_no_worse.any(axis=1)
        keep[start:start + len(block)] = alive
        front = np.concatenate([front, block[alive]])
    return keep[inverse]


def nondominated(points: np.ndarray | Sequence[Sequence[float]], *, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Boolean mask of the points no other point dominates.

    Args:
        points: ``(n, k)`` objectives, one row per point; ``inf`` is allowed (worst
            possible when minimised), NaN is not.
        maximize: one flag per objective; the default minimises every objective.

    Raises:
        ValueError: the array is not 2-D, holds NaN, or ``maximize`` has the wrong length.
    """
    costs = _as_costs(points, maximize)
    n, k = costs.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if k == 1:
        return costs[:, 0] == costs[:, 0].min()
    front = _front_2d if k == 2 else _front_nd
    if n <= PREFILTER_MIN:
        return front(costs)
    candidates = _prefilter(costs)
    mask = np.zeros(n, dtype=bool)
    mask[candidates] = front(costs[candidates])
    return mask


PREFILTER_MIN = 4096  # points; below this the sort is cheap enough on its own
SAMPLE = 1024  # points whose front serves as pivots
MAX_PIVOTS = 32


def _prefilter(costs: np.ndarray) -> np.ndarray:
    """Indices of the points that no pivot dominates (the others cannot be on the front).

    Any point may serve as a pivot, since a point it dominates is dominated. The front of an
    evenly spaced sample lies close to the whole front, so it dominates most points, and
    checking every point against a few pivots is far cheaper than sorting them all.
    """
    k = costs.shape[1]
    sample = costs[:: max(1, len(costs) // SAMPLE)]
    front = sample[_front_2d(sample) if k == 2 else _front_nd(sample)]
    pivots = front[np.linspace(0, len(front) - 1, min(len(front), MAX_PIVOTS)).astype(int)]
    if k == 2:  # a staircase lookup: O(n log pivots)
        return np.flatnonzero(~_dominated_2d(pivots, costs))
    columns = [np.ascontiguousarray(costs[:, j]) for j in range(k)]  # column-wise: no strided reductions
    keep = np.arange(len(costs))
    for p in pivots:
        no_worse = columns[0] >= p[0]
        equal = columns[0] == p[0]
        for j in range(1, k):
            no_worse &= columns[j] >= p[j]
            equal &= columns[j] == p[j]
        alive = ~no_worse | equal
        keep = keep[alive]
        columns = [c[alive] for c in columns]
    return keep


def _dominated_2d(pivots: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """For each row of ``costs``: does some pivot dominate it (two objectives)?"""
    order = np.argsort(pivots[:, 0], kind="stable")
    px, lowest_y = pivots[order, 0], np.minimum.accumulate(pivots[order, 1])
    # Pivots with x <= row x: the smallest y among them must be <= row y, and not all equal to the row.
    pos = np.searchsorted(px, costs[:, 0], side="right")
    below = lowest_y[np.maximum(pos - 1, 0)]
    weak = (pos > 0) & (below <= costs[:, 1])
    # A pivot equal to the row does not dominate it; require a strict improvement somewhere.
    strict_x = np.searchsorted(px, costs[:, 0], side="left")  # pivots with x < row x
    strictly = (strict_x > 0) & (lowest_y[np.maximum(strict_x - 1, 0)] <= costs[:, 1])
    return weak & (strictly | (below < costs[:, 1]))


def _ranks_2d(costs: np.ndarray) -> np.ndarray:
    order = _lex_order(costs)
    s = costs[order]
    starts = _group_starts(s)
    ranks_sorted = np.empty(len(s), dtype=np.int64)
    lowest_y: list[float] = []  # per front: smallest second objective among its rows so far (ascending)
    for i in range(len(s)):
        if starts[i] != i:  # a duplicate shares its twin's rank
            ranks_sorted[i] = ranks_sorted[starts[i]]
            continue
        y = s[i, 1]
        # Every earlier distinct row with y' <= y dominates this one, so the rank is the
        # first front whose smallest y is above y.
        f = bisect.bisect_right(lowest_y, y)
        if f == len(lowest_y):
            lowest_y.append(y)
        else:
            lowest_y[f] = y
        ranks_sorted[i] = f
    ranks = np.empty(len(s), dtype=np.int64)
    ranks[order] = ranks_sorted
    return ranks


def pareto_ranks(points: np.ndarray | Sequence[Sequence[float]], *, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Non-dominated sorting: 0 for the front, 1 for the front of the rest, and so on.

    Takes the same arguments as :func:`nondominated`.
    """
    costs = _as_costs(points, maximize)
    n, k = costs.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if k == 2:
        return _ranks_2d(costs)
    ranks = np.full(n, -1, dtype=np.int64)
    remaining = np.arange(n)
    rank = 0
    while len(remaining):
        mask = nondominated(costs[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def dominates(a: Sequence[float], b: Sequence[float], *, maximize: Sequence[bool] | None = None) -> bool:
    """Whether point ``a`` dominates point ``b`` (for checks and tests)."""
    costs = _as_costs([a, b], maximize)
    return bool((costs[0] <= costs[1]).all() and (costs[0] < costs[1]).any())




__all__ = ["dominates", "nondominated", "pareto_ranks"]
