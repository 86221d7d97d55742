"""Reduced precision: each trained model's accuracy with its numbers stored in narrower formats.

The study's named formats are evaluated as given. An (e, m) grid is *searched*,
not swept: for a fixed exponent width, accuracy grows with mantissa bits, so a
bisection over m finds the narrowest format within ``tolerance`` of the float32
accuracy in about log2(#m) evaluations per exponent width.

Choosing formats is pure bookkeeping over stored results (:func:`best_pairs`,
:func:`narrowest_within`), so it is tested without any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from iotnas.arch import Arch
from iotnas.data import Dataset
from iotnas.errors import ConfigError, FormatError
from iotnas.formats import FloatFormat, NumberFormat, parse_format, storage_bytes
from iotnas.store import PrecisionResult

REFERENCE = "float32"


@dataclass(frozen=True, slots=True)
class GridSpec:
    """An (e, m) grid to search: exponent widths ``exp_bits``, mantissa widths ``man_bits`` (inclusive)."""

    exp_bits: tuple[int, int] = (2, 8)
    man_bits: tuple[int, int] = (0, 10)
    tolerance: float = 0.01  # accuracy (fraction) a format may lose against float32 and still count as "within"

    def __post_init__(self) -> None:
        (e0, e1), (m0, m1) = self.exp_bits, self.man_bits
        if not (1 <= e0 <= e1 <= 8):
            raise ConfigError(f"precision.exp_bits: expected 1 <= low <= high <= 8, got {list(self.exp_bits)}")
        if not (0 <= m0 <= m1 <= 23):
            raise ConfigError(f"precision.man_bits: expected 0 <= low <= high <= 23, got {list(self.man_bits)}")
        if not (0 <= self.tolerance < 1):
            raise ConfigError(f"precision.tolerance: expected a fraction in [0, 1), got {self.tolerance}")


def check_formats(names: Iterable[str]) -> list[NumberFormat]:
    """Parse the study's formats, with the study key in the message.

    Raises:
        ConfigError: a format is unknown or cannot store weights.
    """
    formats = []
    for name in names:
        try:
            formats.append(parse_format(name))
        except FormatError as exc:
            raise ConfigError(f"formats: {exc}") from None
    return formats


def load_trained(checkpoint: str | Path, arch: Arch, dataset: Dataset) -> torch.nn.Module:
    """The trained network of a checkpoint (its weight average, when training kept one)."""
    from iotnas.spaces import build
    from iotnas.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = build(arch, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    model.load_state_dict(ckpt.ema if ckpt.ema is not None else ckpt.model)
    return model.eval()


def weight_bytes_in(fmt: NumberFormat, model: torch.nn.Module) -> int:
    """Bytes of every stored tensor in ``fmt`` (integer formats' scales counted)."""
    return storage_bytes(fmt, model)


def evaluate_model_formats(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    formats: Sequence[NumberFormat],
    grid: GridSpec | None,
    known: dict[str, float] | None = None,
) -> tuple[dict[str, float], int]:
    """Accuracy of ``model`` in each named format and along the grid's bisection paths.

    Args:
        evaluate: accuracy of a model (the caller decides the data and the device).
        known: accuracies already stored, by format name; they are reused, not recomputed.

    Returns:
        (accuracy by format name, number of new evaluations).
    """
    from iotnas.emulate import emulated

    results = dict(known or {})
    evaluations = 0

    def accuracy(fmt: NumberFormat) -> float:
        nonlocal evaluations
        if fmt.name not in results:
            with emulated(model, weights=fmt):
                results[fmt.name] = evaluate(model)
            evaluations += 1
        return results[fmt.name]

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
    return results, evaluations


def grid_size(grid: GridSpec) -> int:
    """Evaluations a blind sweep of the grid would need (for comparison)."""
    return (grid.exp_bits[1] - grid.exp_bits[0] + 1) * (grid.man_bits[1] - grid.man_bits[0] + 1)


# --------------------------------------------------------------------------- choosing


def best_pairs(results: Sequence[PrecisionResult], *, max_weight_bytes: int | None) -> list[PrecisionResult]:
    """Per model, its most accurate format within the weight budget; best models first.

    Ties in accuracy go to the smaller model-in-format (fewer bytes).
    """
    best: dict[str, PrecisionResult] = {}
    for r in results:
        if max_weight_bytes is not None and r.weight_bytes > max_weight_bytes:
            continue
        current = best.get(r.arch_key)
        if current is None or (r.accuracy, -r.weight_bytes) > (current.accuracy, -current.weight_bytes):
            best[r.arch_key] = r
    return sorted(best.values(), key=lambda r: (-r.accuracy, r.weight_bytes, r.arch_key))


def narrowest_within(results: Sequence[PrecisionResult], arch_key: str, *, tolerance: float) -> PrecisionResult | None:
    """For one model, the format with the fewest bits whose accuracy is within ``tolerance`` of float32."""
    own = [r for r in results if r.arch_key == arch_key and not r.finetuned]
    reference = next((r for r in own if r.format_name == REFERENCE), None)
    if reference is None:
        return None
    ok = [r for r in own if r.accuracy >= reference.accuracy - tolerance]
    return min(ok, key=lambda r: (r.bits, r.weight_bytes, -r.accuracy)) if ok else None
