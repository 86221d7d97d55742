"""Stage 1: draw candidates from the laws, cost them, and drop what does not fit in memory.

Open spaces draw ids ``0, 1, 2, ...`` of each chosen law (the released models are
ids 0-99 of their laws, so a CIFAR-10 study meets them again); the tabular mode's
pool is the released model set itself.

With a flash or RAM limit, a candidate that fits the memory limits has its C library built for
the Cortex-M4F (:func:`iotnas.export.c.arch_device_budget`, the build the export reports) in each
allowed format of the narrowest width; it stays when one of them fits both limits. The figures
are kept in the store per (format, model), so a resumed or repeated pool never builds twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from iotnas.arch import Arch
from iotnas.cost import Cost, cost
from iotnas.errors import ConfigError
from iotnas.formats import parse_format
from iotnas.results.limits import Limits, Measured, Reason, Violation
from iotnas.spaces import get_space, list_spaces, runnable
from iotnas.spaces.yields import YIELD_IDS, law_yield, pool_figures
from iotnas.store import INVALID, POOLED, Candidate, Store
from iotnas.study import Study

#: (model, format name) -> its C library's figures on the device: ``flash_bytes`` and ``ram_bytes``.
DeviceFigures = Callable[[Arch, str], Measured]
_BUDGET_KEY = "device_budget"  # store meta: device_budget/<target>/<format>/<model key> -> JSON figures

#: The ``space.laws`` entry that picks every law with candidates under the study's limits.
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class LawRef:
    space: str
    law: str

    def __str__(self) -> str:
        return f"{self.space}/{self.law}"


def expand_laws(entries: Sequence[str], *, qualifies: Callable[[LawRef], bool] | None = None) -> list[LawRef]:
    """``["all"]``, ``["auto"]``, ``["densenet"]`` or ``["mobilenetv2/s4", ...]`` -> the laws they name, in order.

    ``"auto"`` names every law for which ``qualifies`` holds (see :func:`resolve_laws`).

    Raises:
        ConfigError: an unknown space or law, or ``"auto"`` without ``qualifies``.
    """
    refs: list[LawRef] = []
    every = [LawRef(name, law) for name in list_spaces() for law in get_space(name).laws]
    for entry in entries:
        if entry == "all":
            refs += every
            continue
        if entry == AUTO:
            if qualifies is None:
                raise ConfigError('space.laws: "auto" picks laws by the study\'s limits; resolve it with resolve_laws')
            refs += [ref for ref in every if qualifies(ref)]
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


def resolve_laws(study: Study, *, in_channels: int = 3, num_classes: int = 10) -> list[LawRef]:
    """The laws of ``study.laws``, with ``"auto"`` as every law that has candidates under the study's limits.

    A law has candidates when one of its first :data:`~iotnas.spaces.yields.YIELD_IDS` ids
    passes the pool's memory and activation checks (:func:`cost_candidates`) in the
    narrowest allowed format, for the dataset's geometry.

    Raises:
        ConfigError: an unknown space or law, or ``"auto"`` finds no law at all.
    """
    if AUTO not in study.laws:
        return expand_laws(study.laws)
    bits = narrowest_bits(study)

    def qualifies(ref: LawRef) -> bool:
        found = law_yield(ref.space, ref.law, in_channels=in_channels, num_classes=num_classes)
        return found.count_within(study.constraints, bits=bits) > 0

    refs = expand_laws(study.laws, qualifies=qualifies)
    if not refs:
        raise ConfigError(
            f'space.laws = "auto": no law has a model among its first {YIELD_IDS} ids under the study\'s limits '
            f"({_limits_text(study.constraints, bits)}); raise the limits or allow a narrower format"
        )
    return refs


def _limits_text(limits: Limits, bits: int) -> str:
    parts = [f"{limits.max_weight_bytes:,} weight bytes at {bits} bits"] if limits.max_weight_bytes else []
    if limits.max_activation_bytes:
        parts.append(f"{limits.max_activation_bytes:,} activation bytes")
    return ", ".join(parts) or "none"


def draw_open_pool(laws: Sequence[LawRef], *, per_law: int, total: int) -> list[Arch]:
    """Ids 0..k-1 of every law, with k = min(per_law, total / number of laws)."""
    k = max(1, min(per_law, math.ceil(total / max(len(laws), 1))))
    return [Arch(space=ref.space, law=ref.law, id=i) for ref in laws for i in range(k)]


def narrowest_bits(study: Study) -> int:
    """Bits per value of the narrowest allowed format: a model fits if it fits in *some* format."""
    return min(parse_format(name).bits for name in study.formats)


def storage_tier(n_values: int, study: Study) -> int:
    """Bits per value of the widest listed format a model of ``n_values`` fits in (its storage tier).

    A float32-sized model also fits in half and int8; its tier is 32. Without a weight limit every
    model is in the widest format's tier.
    """
    widths = sorted({parse_format(name).bits for name in study.formats}, reverse=True)

    def fits(bits: int) -> bool:  # the pool's memory rule, at this width
        return study.constraints.first_violation(pool_figures(n_values, 0, bits=bits), checks=(Reason.MEMORY,)) is None

    return next((b for b in widths if fits(b)), widths[-1])


def narrowest_formats(study: Study) -> list[str]:
    """The allowed formats of :func:`narrowest_bits` width, in the study's order."""
    bits = narrowest_bits(study)
    return [name for name in study.formats if parse_format(name).bits == bits]


def stored_device_figures(store: Store, measure: Callable[[Arch, str], object], *, target: str) -> DeviceFigures:
    """``measure`` (returning an object with ``flash_bytes`` and ``ram_bytes``) behind a cache in
    the store's study facts, keyed by target, format and model."""
    prefix = f"{_BUDGET_KEY}/{target}/"
    known = {k[len(prefix):]: json.loads(v) for k, v in store.meta().items() if k.startswith(prefix)}

    def figures(arch: Arch, format_name: str) -> Measured:
        key = f"{format_name}/{arch.key}"
        if key not in known:
            budget = measure(arch, format_name)
            known[key] = {"flash_bytes": budget.flash_bytes, "ram_bytes": budget.ram_bytes}
            store.set_meta(prefix + key, json.dumps(known[key]))
        return Measured(**known[key])

    return figures


def _device_violation(arch: Arch, study: Study, device: DeviceFigures) -> Violation | None:
    """None when the C library fits the flash and RAM limits in some narrowest format; else the
    first format's violation, naming the format."""
    first = None
    for name in narrowest_formats(study):
        violation = study.constraints.first_violation(device(arch, name), checks=(Reason.FLASH, Reason.RAM))
        if violation is None:
            return None
        first = first or Violation(violation.reason, f"{violation.message} (Cortex-M4, {name})")
    return first


def cost_candidates(
    archs: Iterable[Arch], study: Study, *, known: set[str], progress: Callable[[int], None] | None = None,
    cost_fn: Callable[[Arch], Cost] = cost, device: DeviceFigures | None = None,
) -> list[Candidate]:
    """Cost the archs not stored yet and classify them against the memory limits, and against
    the flash and RAM limits with ``device`` (required when the study sets them).

    Latency is not known yet: the latency stage checks it, with the same limits. A draw that
    cannot run is stored as ``invalid`` (counted, never proposed), as the released set skips it.
    """
    if study.constraints.device and device is None:
        raise ConfigError("constraints.max_flash_bytes / max_ram_bytes: the pool needs the C library's device "
                          "figures to apply them")
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
        figures = pool_figures(c.n_values, c.peak_activation_values, bits=bits)
        violation = study.constraints.first_violation(figures, checks=(Reason.MEMORY, Reason.ACTIVATIONS))
        if violation is None and device is not None and study.constraints.device:
            violation = _device_violation(arch, study, device)
        out.append(Candidate(
            key=arch.key, arch_json=arch.to_json(), space=arch.space, law=arch.law, arch_id=arch.id,
            n_values=c.n_values, macs=c.macs, flops=c.flops, peak_activation_bytes=figures.peak_activation_bytes,
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
