"""Gradient-boosted trees fitted with scikit-learn, stored as plain JSON and evaluated with NumPy.

A predictor file must be safe to load (no pickle), and readable on a board
without scikit-learn, so the fitted trees are written out as arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iotnas.errors import LatencyError


def fit_boosted_trees(x: np.ndarray, y: np.ndarray, *, seed: int, n_estimators: int = 400,
                      max_depth: int = 4, learning_rate: float = 0.05,
                      sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """Fit squared-error gradient boosting and return it as a JSON-ready dict.

    Args:
        sample_weight: per-row weights (say, less for a noisy timing); equal by default.
    """
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(
        n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=0.8,
        min_samples_leaf=2, random_state=seed,
    )
    model.fit(x, y, sample_weight=sample_weight)
    trees = []
    for (estimator,) in model.estimators_:
        t = estimator.tree_
        trees.append({
            "left": t.children_left.tolist(),
            "right": t.children_right.tolist(),
            "feature": t.feature.tolist(),
            "threshold": t.threshold.tolist(),
            "value": t.value[:, 0, 0].tolist(),
        })
    init = float(np.asarray(model.init_.constant_).ravel()[0])
    return {"init": init, "learning_rate": learning_rate, "n_features": int(x.shape[1]), "trees": trees}


def predict_boosted_trees(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Evaluate trees stored by :func:`fit_boosted_trees` on rows ``x``.

    Raises:
        LatencyError: the stored model is malformed or ``x`` has the wrong width.
    """
    x = np.asarray(x, dtype=np.float64)
    try:
        if x.ndim != 2 or x.shape[1] != model["n_features"]:
            raise LatencyError(f"expected rows of {model['n_features']} features, got shape {x.shape}")
        total = np.full(x.shape[0], float(model["init"]))
        rows = np.arange(x.shape[0])
        for tree in model["trees"]:
            left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
            feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
            node = np.zeros(x.shape[0], dtype=np.int64)
            for _ in range(64):  # deeper than any tree we fit
                inner = left[node] >= 0
                if not inner.any():
                    break
                go_left = x[rows, np.maximum(feature[node], 0)] <= threshold[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
            total += float(model["learning_rate"]) * np.asarray(tree["value"])[node]
        return total
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise LatencyError(f"the stored regression trees are malformed: {exc}") from exc
