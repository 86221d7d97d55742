"""A trained model's accuracy with its numbers stored in the study's formats and along an (e, m) grid.

The study's named formats are evaluated as given. An (e, m) grid is *searched*,
not swept: for a fixed exponent width, accuracy grows with mantissa bits, so a
bisection over m finds the narrowest format within ``tolerance`` of the float32
accuracy in about log2(#m) evaluations per exponent width.

Two rules keep hopeless grid formats from costing an evaluation (each is recorded as
skipped, with its reason, never silently missing):

* **the weights do not fit** (decided from the stored values, before any evaluation):
  some value lies beyond the format's largest finite value (it would become infinite),
  or more than :data:`MAX_FLUSHED` of the nonzero values are below half its smallest
  subnormal (they would become zero);
* **the accuracy collapsed**: rows are searched from the widest exponent down, and
  when a row's widest mantissa scores at chance level or below :data:`COLLAPSE_FRACTION`
  of the float32 accuracy, the narrower exponent widths (a smaller range still) are not
  evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from iotnas.errors import ConfigError, FormatError
from iotnas.formats import FloatFormat, NumberFormat, parse_format
from iotnas.results.chance import is_chance_level

REFERENCE = "float32"


@dataclass(frozen=True, slots=True)
class FormatResult:
    """One new evaluation of a model in a format."""

    fmt: NumberFormat
    accuracy: float
    evaluations: int  # new evaluations of this model so far, this one included
    model: torch.nn.Module  # the trained model (float32 weights) the format was applied to
#: A format that zeroes more than this fraction of the nonzero stored values is skipped: with half the
#: weights gone a network is no longer the one trained (the collapse rule catches milder losses).
MAX_FLUSHED = 0.5
#: A row whose widest mantissa keeps less than this fraction of the float32 accuracy has collapsed.
COLLAPSE_FRACTION = 0.5


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
    skipped: dict[str, str]  # grid formats not evaluated, by name: why


def unfit_reason(fmt: FloatFormat, values: Iterable[torch.Tensor]) -> str | None:
    """Why ``fmt`` cannot hold ``values`` (the stored numbers of a model), or None when it can.

    Decided from the values alone, before any evaluation: see the module's rules.
    """
    largest, nonzero, flushed = 0.0, 0, 0
    half_subnormal = fmt.min_subnormal / 2  # at or below it a value rounds to zero (ties to even)
    for t in values:
        magnitude = t.detach().abs().float()
        largest = max(largest, float(magnitude.max())) if magnitude.numel() else largest
        nonzero += int((magnitude > 0).sum())
        flushed += int(((magnitude > 0) & (magnitude <= half_subnormal)).sum())
    if largest > fmt.max_value:
        return f"a stored value of magnitude {largest:.4g} is beyond its largest finite value {fmt.max_value:.4g}"
    if nonzero and flushed / nonzero > MAX_FLUSHED:
        return (f"{flushed / nonzero:.0%} of the nonzero stored values are below its smallest subnormal "
                f"{fmt.min_subnormal:.3g} and would become zero")
    return None


def evaluate_model_formats(
    load_model: Callable[[], torch.nn.Module],
    evaluate: Callable[[torch.nn.Module], float],
    *,
    formats: Sequence[NumberFormat],
    grid: GridSpec | None,
    known: dict[str, float] | None = None,
    on_result: Callable[[FormatResult], None] | None = None,
    num_classes: int | None = None,
    known_skipped: dict[str, str] | None = None,
) -> FormatAccuracies:
    """Accuracy of ``model`` in each named format and along the grid's bisection paths.

    Args:
        load_model: the trained model; called once, and only when a format is not ``known``
            (a study whose results are all stored needs no checkpoint).
        evaluate: accuracy of a model (the caller decides the data and the device).
        known: accuracies already stored, by format name; they are reused, not recomputed.
        on_result: called with each new evaluation as it is made (a model's bisection takes minutes:
            the caller reports and stores each one at once, so an interruption loses none).
        num_classes: the model's class count, for the chance-level collapse rule (None: that rule is off,
            the fraction of float32 still applies).
        known_skipped: grid formats already found unfit, by name: their reasons stand (the weights are the same).
    """
    from iotnas.export import deploy
    from iotnas.precision.emulate import _stored_tensors

    # Accuracy of the weights a device holds: BatchNorm folded, then rounded (iotnas.export.deploy).

    results = dict(known or {})
    skipped: dict[str, str] = dict(known_skipped or {})
    loaded: list[torch.nn.Module] = []
    evaluations: list[str] = []

    def model() -> torch.nn.Module:
        if not loaded:
            loaded.append(load_model())
        return loaded[0]

    def accuracy(fmt: NumberFormat) -> float:
        if fmt.name not in results:
            results[fmt.name] = evaluate(deploy(model(), fmt).module)
            evaluations.append(fmt.name)
            if on_result is not None:
                on_result(FormatResult(fmt, results[fmt.name], len(evaluations), model()))
        return results[fmt.name]

    def grid_format(e: int, m: int) -> FloatFormat | None:
        """The grid's (e, m) format when it can hold the weights; else None, with the reason recorded."""
        try:
            fmt = FloatFormat(e, m)
        except FormatError as exc:  # e.g. e1m0: no finite value at all
            skipped[f"e{e}m{m}"] = str(exc)
            return None
        if fmt.name in results:
            return fmt
        if fmt.name in skipped:
            return None
        why = unfit_reason(fmt, _stored_tensors(model()))
        if why is not None:
            skipped[fmt.name] = why
            return None
        return fmt

    reference = accuracy(parse_format(REFERENCE))
    for fmt in formats:
        accuracy(fmt)
    if grid is not None:
        target = reference - grid.tolerance
        lo_m, hi_m = grid.man_bits
        collapsed: str | None = None
        for e in range(grid.exp_bits[1], grid.exp_bits[0] - 1, -1):  # widest range first: collapse ends the search
            if collapsed is not None:
                skipped[f"e{e}m{hi_m}"] = f"not evaluated: {collapsed}, and fewer exponent bits hold less"
                continue
            widest = grid_format(e, hi_m)
            if widest is None:
                continue  # the row's narrower mantissas hold the weights no better
            top = accuracy(widest)
            if is_chance_level(top, num_classes) or top < COLLAPSE_FRACTION * reference:
                collapsed = f"{widest.name} collapsed to {top:.1%} (float32: {reference:.1%})"
                continue
            if top < target:
                continue  # even the widest mantissa at this exponent width loses too much
            lo, hi = lo_m, hi_m
            while lo < hi:  # smallest m with accuracy >= target (monotone in m)
                mid = (lo + hi) // 2
                fmt = grid_format(e, mid)
                if fmt is not None and accuracy(fmt) >= target:
                    hi = mid
                else:
                    lo = mid + 1
    return FormatAccuracies(results, len(evaluations), loaded[0] if loaded else None, skipped)
