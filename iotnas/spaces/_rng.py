"""The two draw forms the samplers use, on numpy's legacy ``RandomState``.

The released models were drawn with ``numpy.random.RandomState(id)``; its stream
(MT19937 with ``init_genrand``, masked rejection for bounded integers) is the
only one that reproduces them, so a fresh one is made per model.
"""

from __future__ import annotations

import numpy as np


def rng_for(id: int) -> np.random.RandomState:
    """A fresh generator for model ``id``, independent of all global state."""
    return np.random.RandomState(id)


def draw(rng: np.random.RandomState, lo: int, hi: int) -> int:
    """One scalar draw in ``[lo, hi)``, made as the authors made it: ``randint(lo, hi, 1)[0]``."""
    return int(rng.randint(lo, hi, 1)[0])


def draws(rng: np.random.RandomState, lo: int, hi: int, n: int) -> list[int]:
    """``n`` draws in ``[lo, hi)`` from one size-``n`` call."""
    return [int(v) for v in rng.randint(lo, hi, n)]
