"""A trained model's accuracy with its numbers stored in the study's formats and along an (e, m) grid.

The study's named formats are evaluated as given. An (e, m) grid is *searched*,
not swept: for a fixed exponent width, accuracy grows with mantissa bits, so a
bisection over m finds the narrowest format within ``tolerance`` of the float32
accuracy in about log2(#m) evaluations per exponent width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from iotnas.errors import ConfigError
from iotnas.formats import FloatFormat, NumberFormat, parse_format

REFERENCE = "float32"


@dataclass(frozen=True, slots=True)
class GridSpec:
    """An (e, m) grid to search: exponent widths ``exp_bits``, mantissa widths ``man_bits`` (inclusive)."""

    exp_bits: tuple[int, int]
    man_bits: tuple[int, int]
    tolerance: float  # accuracy (fraction) a format may lose against float32 and still count as "within"

    def __post_init__(self) -> None:
        (e0, e1), (m0, m1) = self.exp_bits, self.man_bits
        if not (1 <= e0 <= e1 <= 8):
            raise ConfigError(f"precision.exp_bits: expected 1 <= low <= high <= 8, got {list(self.exp_bits)}")
        if not (0 <= m0 <= m1 <= 23):
            raise ConfigError(f"precision.man_bits: expected 0 <= low <= high <= 23, got {list(self.man_bits)}")
        if not (0 <= self.tolerance < 1):
            raise ConfigError(f"precision.tolerance: expected a fraction in [0, 1), got {self.tolerance}")


@dataclass(frozen=True, slots=True)
class FormatAccuracies:
    accuracy: dict[str, float]  # by format name; the ``known`` ones passed in included
    evaluations: int  # evaluations this call made (the known ones are reused)
    model: torch.nn.Module | None  # the model, when it had to be loaded


def evaluate_model_formats(
    load_model: Callable[[], torch.nn.Module],
    evaluate: Callable[[torch.nn.Module], float],
    *,
    formats: Sequence[NumberFormat],
    grid: GridSpec | None,
    known: dict[str, float] | None = None,
    progress: Callable[[str, float, int], None] | None = None,
) -> FormatAccuracies:
    """Accuracy of ``model`` in each named format and along the grid's bisection paths.

    Args:
        load_model: the trained model; called once, and only when a format is not ``known``
            (a study whose results are all stored needs no checkpoint).
        evaluate: accuracy of a model (the caller decides the data and the device).
        known: accuracies already stored, by format name; they are reused, not recomputed.
        progress: ``progress(format_name, accuracy, evaluations_so_far)`` after each evaluation, since a
            model's bisection takes minutes.
    """
    from iotnas.export import deploy

    # Accuracy of the weights a device holds: BatchNorm folded, then rounded (iotnas.export.deploy).

    results = dict(known or {})
    loaded: list[torch.nn.Module] = []

    def accuracy(fmt: NumberFormat) -> float:
        if fmt.name not in results:
            if not loaded:
                loaded.append(load_model())
            results[fmt.name] = evaluate(deploy(loaded[0], fmt).module)
            evaluations.append(fmt.name)
            if progress is not None:
                progress(fmt.name, results[fmt.name], len(evaluations))
        return results[fmt.name]

    evaluations: list[str] = []

    reference = accuracy(parse_format(REFERENCE))
    for fmt in formats:
        accuracy(fmt)
    if grid is not None:
        target = reference - grid.tolerance
        for e in range(grid.exp_bits[0], grid.exp_bits[1] + 1):
            lo, hi = grid.man_bits
            if accuracy(FloatFormat(e, hi)) < target:
                continue  # even the widest mantissa at this exponent width loses too much
            while lo < hi:  # smallest m with accuracy >= target (monotone in m)
                mid = (lo + hi) // 2
                if accuracy(FloatFormat(e, mid)) >= target:
                    hi = mid
                else:
                    lo = mid + 1
            accuracy(FloatFormat(e, lo))
    return FormatAccuracies(results, len(evaluations), loaded[0] if loaded else None)

