"""Fronts and ranks against a brute-force O(n^2) reference, on random points with ties and duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from iotnas.pareto import PREFILTER_MIN, nondominated, pareto_ranks


def _reference_front(costs: np.ndarray) -> np.ndarray:
    """Textbook definition, every ordered pair (j, i) compared (all objectives minimised)."""
    no_worse = (costs[None, :, :] <= costs[:, None, :]).all(axis=2)  # [i, j]: j no worse than i everywhere
    better = (costs[None, :, :] < costs[:, None, :]).any(axis=2)  # [i, j]: j strictly better somewhere
    return ~(no_worse & better).any(axis=1)


def _reference_ranks(costs: np.ndarray) -> np.ndarray:
    ranks = np.full(len(costs), -1)
    remaining = np.arange(len(costs))
    rank = 0
    while len(remaining):
        mask = _reference_front(costs[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return ranks


def _points(rng: np.random.Generator, n: int, k: int, levels: int | None) -> np.ndarray:
    """Random points; with ``levels`` the values are coarse, so ties and exact duplicates are common."""
    if levels is None:
        pts = rng.random((n, k))
    else:
        pts = rng.integers(0, levels, size=(n, k)).astype(float)
    dup = rng.integers(0, n, size=n // 5)  # copy some rows over others: exact duplicates
    pts[rng.integers(0, n, size=n // 5)] = pts[dup]
    return pts


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("levels", [None, 3, 8])
@pytest.mark.parametrize("seed", range(4))
def test_front_matches_brute_force(k, levels, seed):
    rng = np.random.default_rng([k, levels or 0, seed])
    pts = _points(rng, 300, k, levels)
    assert np.array_equal(nondominated(pts), _reference_front(pts))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("seed", range(3))
def test_ranks_match_brute_force(k, levels, seed):
    rng = np.random.default_rng([7, k, levels or 0, seed])
    pts = _points(rng, 250, k, levels)
    assert np.array_equal(pareto_ranks(pts), _reference_ranks(pts))


def test_front_spans_several_blocks_in_three_objectives():
    """More points than one block, and a front of many points (anti-correlated objectives)."""
    rng = np.random.default_rng(3)
    x = rng.random(1500)
    pts = np.column_stack([x, 1 - x + 0.05 * rng.random(1500), rng.integers(0, 5, 1500)])
    pts[::7] = pts[1::7][: len(pts[::7])]
    assert np.array_equal(nondominated(pts), _reference_front(pts))


def _blocked_reference(costs: np.ndarray, rows: int = 500) -> np.ndarray:
    return np.concatenate([
        ~((costs[None, :, :] <= block[:, None, :]).all(axis=2) & (costs[None, :, :] < block[:, None, :]).any(axis=2)).any(axis=1)
        for block in np.array_split(costs, max(1, len(costs) // rows))
    ])


@pytest.mark.parametrize("levels", [None, 6, 50])
@pytest.mark.parametrize("shape", ["uniform", "trade-off"])
def test_large_fronts_use_the_prefilter_and_stay_exact(levels, shape):
    """Enough points for the pivot prefilter (two objectives) and many blocks (three)."""
    rng = np.random.default_rng([11, levels or 0, len(shape)])
    n = 3 * PREFILTER_MIN // 2
    x = rng.random(n) if levels is None else rng.integers(0, levels, n).astype(float)
    y = rng.random(n) if shape == "uniform" else (x.max() - x) + 0.1 * rng.random(n)
    if levels is not None:
        y = np.round(y * levels) / levels
    pts = np.column_stack([x, y, rng.integers(0, 4, n)])
    pts[rng.integers(0, n, n // 10)] = pts[rng.integers(0, n, n // 10)]  # duplicates
    pts[rng.integers(0, n, 20), 1] = np.inf
    for cols in ([0, 1], [0, 1, 2]):
        assert np.array_equal(nondominated(pts[:, cols]), _blocked_reference(pts[:, cols]))


def test_maximize_flips_an_objective():
    pts = np.array([[0.9, 10.0], [0.8, 5.0], [0.7, 20.0], [0.9, 10.0], [0.95, 30.0]])
    mask = nondominated(pts, maximize=[True, False])
    # (0.7, 20) is worse than (0.9, 10) on both; the duplicate of (0.9, 10) stays.
    assert mask.tolist() == [True, True, False, True, True]
    assert pareto_ranks(pts, maximize=[True, False]).tolist() == [0, 0, 1, 0, 0]


def test_infinite_values_and_edge_shapes():
    pts = np.array([[1.0, np.inf], [np.inf, 1.0], [2.0, 2.0], [np.inf, np.inf]])
    assert nondominated(pts).tolist() == [True, True, True, False]
    assert nondominated(np.zeros((0, 2))).shape == (0,)
    assert nondominated([[3.0], [1.0], [1.0]]).tolist() == [False, True, True]
    assert pareto_ranks([[3.0, 1.0, 1.0]]).tolist() == [0]


@pytest.mark.parametrize("bad, message", [
    ([1.0, 2.0], "2-D"),
    ([[1.0, np.nan]], "NaN"),
])
def test_bad_input_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        nondominated(bad)
    with pytest.raises(ValueError, match="maximize"):
        nondominated([[1.0, 2.0]], maximize=[True])

