"""What each law yields: the value count and peak activations of its first ids.

A law is a distribution over networks; which weight budgets it can serve is read from a
sample of it, the ids ``0 .. YIELD_IDS - 1``. Those are the ids a pool draws first (a study
of 2,000 candidates over every law draws ids 0-54 of each), so "the law has candidates under
these limits" means the same here as in the search.

Costing every law's sample takes a minute or two (building the networks dominates), so the
figures for the usual geometries ship in ``law_yields.json`` beside this module, each law
keyed by a fingerprint of its definition (the law's ranges, its space's module and the
counting rules in ``iotnas/cost.py``). A law whose fingerprint differs (its code changed) or a
geometry not in the file is costed on the spot, so the figures are never stale, only slower.
Regenerate the file with :func:`write_table` after changing a space.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from iotnas.arch import Arch
from iotnas.results.limits import Limits, Measured, Reason
from iotnas.spaces import get_space, list_spaces, runnable

#: Ids sampled per law: 0 .. YIELD_IDS - 1.
YIELD_IDS = 64
#: Geometries (image channels, classes) whose figures ship precomputed: CIFAR-10 and the MNIST-like sets.
SHIPPED_GEOMETRIES = ((3, 10), (1, 10))
TABLE_PATH = Path(__file__).with_name("law_yields.json")
TABLE_VERSION = 1


@dataclass(frozen=True, slots=True)
class LawYield:
    """Figures of ids ``0 .. len(figures) - 1`` of one law, for one input geometry.

    ``figures[i]`` is ``(n_values, peak_activation_values)`` of id ``i``, or None where the
    draw cannot run (the pool stores such ids as invalid).
    """

    space: str
    law: str
    figures: tuple[tuple[int, int] | None, ...]

    @property
    def key(self) -> str:
        return f"{self.space}/{self.law}"

    @property
    def n_values(self) -> list[int]:
        """Value counts of the runnable ids, ascending."""
        return sorted(f[0] for f in self.figures if f is not None)

    def count_within(self, limits: Limits, *, bits: int) -> int:
        """How many sampled ids pass the pool's memory and activation checks with ``bits`` bits per weight."""
        checks = (Reason.MEMORY, Reason.ACTIVATIONS)
        return sum(f is not None and limits.first_violation(pool_figures(*f, bits=bits), checks=checks) is None
                   for f in self.figures)

    def values_summary(self) -> tuple[int, int, int] | None:
        """(min, median, max) of the value counts; None if no sampled id can run."""
        values = self.n_values
        if not values:
            return None
        return values[0], int(statistics.median_low(values)), values[-1]


def pool_figures(n_values: int, peak_activation_values: int, *, bits: int) -> Measured:
    """What the pool checks before latency is known: weights at ``bits`` bits per value, activations in float32."""
    from iotnas.cost import weight_bytes

    return Measured(weight_bytes=weight_bytes(n_values, bits), peak_activation_bytes=weight_bytes(peak_activation_values, 32))


def law_yield(space: str, law: str, *, in_channels: int = 3, num_classes: int = 10) -> LawYield:
    """The figures of ``space/law``'s first :data:`YIELD_IDS` ids for this geometry.

    Read from the shipped table when it holds this law unchanged, else costed now.

    Raises:
        UnknownSpaceError, UnknownLawError: no such space or law.
    """
    s = get_space(space)
    s.law(law)  # raises UnknownLawError naming the known laws
    stored = _table().get(_geometry_key(in_channels, num_classes), {}).get(f"{s.name}/{law}")
    if stored is not None and stored["fingerprint"] == fingerprint(s.name, law):
        figures = tuple(None if f is None else (int(f[0]), int(f[1])) for f in stored["figures"])
        return LawYield(s.name, law, figures)
    return _costed(s.name, law, in_channels, num_classes)


def all_law_yields(*, in_channels: int = 3, num_classes: int = 10) -> list[LawYield]:
    """:func:`law_yield` of every law of every space, in listing order."""
    return [law_yield(name, law, in_channels=in_channels, num_classes=num_classes)
            for name in list_spaces() for law in get_space(name).laws]


@functools.cache
def fingerprint(space: str, law: str) -> str:
    """A hash of what decides a law's figures: its ranges, its space's module and the counting rules."""
    s = get_space(space)
    module = sys.modules[type(s).__module__]
    from iotnas import cost

    text = "\n".join([repr(s.law(law)), inspect.getsource(module), inspect.getsource(cost), str(YIELD_IDS)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_table(path: Path = TABLE_PATH) -> None:
    """Write the table for the shipped geometries, costing only the laws changed since it was written.

    A full costing takes a minute or two per geometry on an idle machine.
    """
    table = {
        "version": TABLE_VERSION,
        "ids": YIELD_IDS,
        "geometries": {
            _geometry_key(c, k): {
                y.key: {"fingerprint": fingerprint(y.space, y.law), "figures": [list(f) if f else None for f in y.figures]}
                for y in all_law_yields(in_channels=c, num_classes=k)
            }
            for c, k in SHIPPED_GEOMETRIES
        },
    }
    from iotnas.files import write_new

    write_new(path, json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n", what="law yields table",
              overwrite=True)
    _table.cache_clear()


def _costed(space: str, law: str, in_channels: int, num_classes: int) -> LawYield:
    from iotnas.cost import cost

    figures = []
    for id in range(YIELD_IDS):
        arch = Arch(space, law, id)
        if not runnable(arch):
            figures.append(None)
            continue
        c = cost(arch, in_channels=in_channels, num_classes=num_classes)
        figures.append((c.n_values, c.peak_activation_values))
    return LawYield(space, law, tuple(figures))


def _geometry_key(in_channels: int, num_classes: int) -> str:
    return f"{in_channels}x32x32->{num_classes}"


@functools.cache
def _table() -> dict[str, dict[str, dict]]:
    """The shipped figures by geometry; empty if the file is missing or of another version."""
    try:
        data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("version") != TABLE_VERSION or data.get("ids") != YIELD_IDS:
        return {}
    return data["geometries"]
