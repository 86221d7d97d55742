"""The one feasibility rule: a model in a format is feasible when it breaks none of the limits.

Every stage asks the same question of the same :class:`Limits`: the pool (memory and
activations, at the narrowest allowed format, before any timing), the latency stage,
the winners, the fronts, the report and the export. A broken limit is a
:class:`Violation` with a :class:`Reason` from one vocabulary, which is also the suffix
of a rejected candidate's status (``rejected:memory``, ...).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Reason(StrEnum):
    """Why a model is not feasible."""

    MEMORY = "memory"  # weights over max_weight_bytes
    ACTIVATIONS = "activations"  # peak activations over max_activation_bytes
    FLASH = "flash"  # the C library's Cortex-M4 flash over max_flash_bytes
    RAM = "ram"  # the C library's Cortex-M4 RAM over max_ram_bytes
    LATENCY = "latency"  # slower than max_latency_ms
    UNTIMED = "untimed"  # a latency limit is set but the model has no latency figure

    @property
    def status(self) -> str:
        """The candidate status of a model rejected for this reason."""
        return f"rejected:{self.value}"


@dataclass(frozen=True, slots=True)
class Violation:
    reason: Reason
    message: str  # e.g. "33012 weight bytes > 32768"

    def __str__(self) -> str:
        return self.message


class Figures(Protocol):
    """What feasibility reads of a model in a format (a ModelPoint has them; None: not known).

    A point may also carry ``flash_bytes`` and ``ram_bytes`` (its C library on a Cortex-M4):
    only the pool measures them, so points without them break no device limit.
    """

    weight_bytes: int | None
    latency_ms: float | None
    peak_activation_bytes: int | None


@dataclass(frozen=True, slots=True)
class Measured:
    """Figures known at some stage (the pool knows no latency yet)."""

    weight_bytes: int | None = None
    latency_ms: float | None = None
    peak_activation_bytes: int | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None


EVERY_REASON = frozenset(Reason)


@dataclass(frozen=True, slots=True)
class Limits:
    """A study's constraints (``None``: no limit)."""

    max_weight_bytes: int | None = None
    max_latency_ms: float | None = None
    max_activation_bytes: int | None = None
    max_flash_bytes: int | None = None  # the C library's flash on a Cortex-M4 (text + rodata + data)
    max_ram_bytes: int | None = None  # its RAM (data + bss + worst-case stack)

    @property
    def device(self) -> bool:
        """Whether a limit needs the C library built for the device (flash or RAM)."""
        return self.max_flash_bytes is not None or self.max_ram_bytes is not None

    def violations(self, point: Figures, *, checks: Collection[Reason] = EVERY_REASON) -> list[Violation]:
        """Why ``point`` breaks the limits (empty: feasible), looking only at ``checks``.

        A figure that is None is not known: it breaks nothing, except that a latency limit
        with no latency figure is :attr:`Reason.UNTIMED` when that reason is checked.
        """
        out = []
        weight, latency, peak = point.weight_bytes, point.latency_ms, point.peak_activation_bytes
        if Reason.MEMORY in checks and None not in (self.max_weight_bytes, weight) and weight > self.max_weight_bytes:
            out.append(Violation(Reason.MEMORY, f"{weight} weight bytes > {self.max_weight_bytes}"))
        if self.max_latency_ms is not None:
            if latency is None:
                if Reason.UNTIMED in checks:
                    out.append(Violation(Reason.UNTIMED, "no latency figure"))
            elif Reason.LATENCY in checks and latency > self.max_latency_ms:
                out.append(Violation(Reason.LATENCY, f"{latency:.3f} ms > {self.max_latency_ms} ms"))
        if (Reason.ACTIVATIONS in checks and None not in (self.max_activation_bytes, peak)
                and peak > self.max_activation_bytes):
            out.append(Violation(Reason.ACTIVATIONS, f"{peak} peak activation bytes > {self.max_activation_bytes}"))
        flash, ram = getattr(point, "flash_bytes", None), getattr(point, "ram_bytes", None)
        if Reason.FLASH in checks and None not in (self.max_flash_bytes, flash) and flash > self.max_flash_bytes:
            out.append(Violation(Reason.FLASH, f"{flash} flash bytes > {self.max_flash_bytes}"))
        if Reason.RAM in checks and None not in (self.max_ram_bytes, ram) and ram > self.max_ram_bytes:
            out.append(Violation(Reason.RAM, f"{ram} RAM bytes > {self.max_ram_bytes}"))
        return out

    def first_violation(self, point: Figures, *, checks: Collection[Reason] = EVERY_REASON) -> Violation | None:
        found = self.violations(point, checks=checks)
        return found[0] if found else None
