"""The seams of a study's workflow: the pool, the evaluator, the latency source, the precision runner.

The workflow reaches training, timing and precision only through these, so the stages
never import each other, and tabular mode swaps in the released models' answers.
:func:`iotnas.search.build_components` makes them from a study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from iotnas.arch import Arch
from iotnas.cost import Cost, cost
from iotnas.store import Latency

if TYPE_CHECKING:
    from iotnas.precision.runner import PrecisionRunner


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What training (or looking up) a model to one fidelity gave."""

    accuracy: float  # on the test split
    checkpoint: str | None  # None where nothing was trained (tabular mode)
    resumed_from_epochs: float | None = None  # progress found in an earlier checkpoint


class Evaluator(Protocol):
    """Trains (or looks up) a model to a fidelity."""

    def evaluate(self, arch: Arch, epochs: float, *, workdir: Path,
                 callbacks: Sequence[Callable] = ()) -> Evaluation: ...


class LatencySource(Protocol):
    """Latency of an untrained model on the target device (measured, predicted or released)."""

    key: str  # identity of the figure: device + runtime + settings
    cheap: bool  # True: answer for the whole pool up front (prediction, lookup)
    identity: Mapping[str, Any] | None  # the device's, where it reports one (an agent): a study keeps to it

    def latency(self, arch: Arch) -> Latency: ...


@dataclass
class Components:
    """What a study needs to run: the pool to draw from, the evaluator, the latency source."""

    pool: list[Arch]
    evaluator: Evaluator
    latency: LatencySource | None
    cost: Callable[[Arch], Cost] = cost  # replaceable by a cache when many studies share one pool
    precision: PrecisionRunner | None = None  # None where there are no weights (tabular mode)
    num_classes: int | None = None  # of the dataset, for the chance-level rule (None: not known)
    #: (model, format) -> its C library's flash and RAM on the device; None: no networks to build
    device: Callable[[Arch, str], Any] | None = None
