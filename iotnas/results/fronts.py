"""Fronts over study points: which (model, format) pairs no other beats on every objective."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iotnas.pareto import nondominated, pareto_ranks
from iotnas.results.points import ModelPoint

#: Objective name -> whether it is maximised.
OBJECTIVES: dict[str, bool] = {"accuracy": True, "weight_bytes": False, "latency_ms": False}


def _check_objectives(objectives: Sequence[str]) -> None:
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(f"unknown objective(s) {unknown}; choose from {list(OBJECTIVES)}")


def _groups(points: Sequence[ModelPoint], per_format: bool) -> dict[str, np.ndarray]:
    if not per_format:
        return {"all": np.arange(len(points))}
    names: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        names.setdefault(p.format_name, []).append(i)
    return {k: np.asarray(v) for k, v in names.items()}


def _values(points: Sequence[ModelPoint], objectives: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The objectives as an array, and which rows may be on a front: every figure known, better than guessing."""
    _check_objectives(objectives)
    values = np.array([[p.value(o) for o in objectives] for p in points], dtype=np.float64).reshape(len(points), -1)
    chance = np.array([p.chance_level for p in points], dtype=bool)
    return values, ~np.isnan(values).any(axis=1) & ~chance


def front_mask(
    points: Sequence[ModelPoint], objectives: Sequence[str] = ("accuracy", "latency_ms"), *,
    per_format: bool = False, feasible_only: bool = False,
) -> np.ndarray:
    """Which points are on the front of ``objectives`` (names from :data:`OBJECTIVES`).

    Args:
        per_format: one front per number format instead of one across formats.
        feasible_only: the front of the feasible points only (infeasible ones are never on it).

    Points lacking a figure (no latency) are never on a front that uses it; chance-level points
    are never on any (a model that learned nothing is no trade-off).
    """
    values, usable = _values(points, objectives)
    if feasible_only:
        usable &= np.array([p.feasible for p in points], dtype=bool)
    maximize = [OBJECTIVES[o] for o in objectives]
    mask = np.zeros(len(points), dtype=bool)
    for idx in _groups(points, per_format).values():
        idx = idx[usable[idx]]
        if len(idx):
            mask[idx] = nondominated(values[idx], maximize=maximize)
    return mask


def front_ranks(
    points: Sequence[ModelPoint], objectives: Sequence[str] = ("accuracy", "latency_ms"), *,
    per_format: bool = False,
) -> np.ndarray:
    """Non-dominated rank of every point (0: on the front); -1 where a figure is missing or the point is at chance."""
    values, usable = _values(points, objectives)
    maximize = [OBJECTIVES[o] for o in objectives]
    ranks = np.full(len(points), -1, dtype=np.int64)
    for idx in _groups(points, per_format).values():
        idx = idx[usable[idx]]
        if len(idx):
            ranks[idx] = pareto_ranks(values[idx], maximize=maximize)
    return ranks
