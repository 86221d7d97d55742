"""Stage 1: draw candidates from the laws, cost them, and drop what does not fit in memory.

Open spaces draw ids ``0, 1, 2, ...`` of each chosen law (the released models are
ids 0-99 of their laws, so a CIFAR-10 study meets them again); the tabular mode's
pool is the released model set itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from iotnas.arch import Arch
from iotnas.cost import Cost, cost, weight_bytes
from iotnas.errors import ConfigError
from iotnas.spaces import get_space, list_spaces, runnable
from iotnas.formats import parse_format
from iotnas.results.limits import Measured, Reason, Violation
from iotnas.store import INVALID, POOLED, Candidate
from iotnas.study import Study


@dataclass(frozen=True, slots=True)
class LawRef:
    space: str
    law: str

    def __str__(self) -> str:
        return f"{self.space}/{self.law}"


def expand_laws(entries: Sequence[str]) -> list[LawRef]:
    """``["all"]``, ``["densenet"]`` or ``["mobilenetv2/s4", ...]`` -> the laws they name, in order."""
    refs: list[LawRef] = []
    for entry in entries:
        if entry == "all":
            refs += [LawRef(name, law) for name in list_spaces() for law in get_space(name).laws]
            continue
        space_name, _, law = entry.partition("/")
        try:
            space = get_space(space_name)
        except ConfigError as exc:
            raise ConfigError(f"space.laws: {exc}") from None
        if not law:
            refs += [LawRef(space.name, name) for name in space.laws]
        else:
            space.law(law)  # raises UnknownLawError naming the known laws
            refs.append(LawRef(space.name, law))
    unique = list(dict.fromkeys(refs))
    return unique


def draw_open_pool(laws: Sequence[LawRef], *, per_law: int, total: int) -> list[Arch]:
    """Ids 0..k-1 of every law, with k = min(per_law, total / number of laws)."""
    k = max(1, min(per_law, math.ceil(total / max(len(laws), 1))))
    return [Arch(space=ref.space, law=ref.law, id=i) for ref in laws for i in range(k)]


def narrowest_bits(study: Study) -> int:
    """Bits per value of the narrowest allowed format: a model fits if it fits in *some* format."""
    return min(parse_format(name).bits for name in study.formats)


def cost_candidates(
    archs: Iterable[Arch], study: Study, *, known: set[str], progress: Callable[[int], None] | None = None,
    cost_fn: Callable[[Arch], Cost] = cost,
) -> list[Candidate]:
    """Cost the archs not stored yet and classify them against the memory limits.

    Latency is not known yet: the latency stage checks it, with the same limits. A draw that
    cannot run is stored as ``invalid`` (counted, never proposed), as the released set skips it.
    """
    bits = narrowest_bits(study)
    out: list[Candidate] = []
    for arch in archs:
        if arch.key in known:
            continue
        if not runnable(arch):
            out.append(Candidate(
                key=arch.key, arch_json=arch.to_json(), space=arch.space, law=arch.law, arch_id=arch.id,
                n_values=0, macs=0, flops=0, peak_activation_bytes=0, status=INVALID,
                reason="the drawn arguments give a network that cannot run", proposed_index=None,
            ))
            if progress is not None:
                progress(1)
            continue
        c = cost_fn(arch)
        peak = c.peak_activation_bytes(bits=32)
        figures = Measured(weight_bytes=weight_bytes(c.n_values, bits), peak_activation_bytes=peak)
        violation = study.constraints.first_violation(figures, checks=(Reason.MEMORY, Reason.ACTIVATIONS))
        out.append(Candidate(
            key=arch.key, arch_json=arch.to_json(), space=arch.space, law=arch.law, arch_id=arch.id,
            n_values=c.n_values, macs=c.macs, flops=c.flops, peak_activation_bytes=peak,
            status=POOLED if violation is None else violation.reason.status,
            reason=None if violation is None else _reason(violation, bits),
            proposed_index=None,
        ))
        if progress is not None:
            progress(1)
    return out


def _reason(violation: Violation, bits: int) -> str:
    """The violation's message; for memory, with the bits the pool assumed."""
    return f"{violation.message} at {bits} bits" if violation.reason is Reason.MEMORY else violation.message
