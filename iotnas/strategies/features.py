"""Architecture features shared by the model-based strategies.

Features come from the cost model only (known before training): log sizes and
the family, so a strategy can generalise across ids and laws.
"""

from __future__ import annotations

import math

import numpy as np

N_NUMERIC = 4  # log2 of n_values, macs, flops, peak activation bytes


def space_names() -> tuple[str, ...]:
    """The family columns: every registered space, in registration order.

    Read on use: the space registry comes with torch, which checking a strategy's settings does not need.
    """
    from iotnas.spaces import list_spaces

    return tuple(list_spaces())


def feature_row(*, space: str, n_values: int, macs: int, flops: int, peak_activation_bytes: int) -> np.ndarray:
    numeric = [math.log2(max(v, 1)) for v in (n_values, macs, flops, peak_activation_bytes)]
    onehot = [1.0 if space == s else 0.0 for s in space_names()]
    return np.asarray(numeric + onehot, dtype=np.float64)


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale numeric columns by the spread of ``train``; one-hot columns stay 0/1."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    mean[N_NUMERIC:] = 0.0
    std[N_NUMERIC:] = 1.0
    std[std == 0] = 1.0
    return [(a - mean) / std for a in (train, *others)]
