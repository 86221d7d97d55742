"""The frozen records a store returns (never ORM rows), and their conversion from rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, Integer

from iotnas.results.limits import Reason
from iotnas.store.models import (
    CandidateRow,
    JobRow,
    LatencyRow,
    PrecisionRow,
    SkippedFormatRow,
    TrainingRow,
)

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str
    arch_json: str
    space: str
    law: str | None
    arch_id: int | None
    n_values: int
    macs: int
    flops: int
    peak_activation_bytes: int
    status: str
    reason: str | None
    proposed_index: int | None


@dataclass(frozen=True, slots=True)
class Latency:
    arch_key: str
    device_key: str
    source: str
    median_ms: float
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Training:
    arch_key: str
    epochs: float
    status: TrainingStatus
    accuracy: float | None
    checkpoint: str | None
    seconds: float | None
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    heartbeat_at: datetime | None = None
    resumed_from_epochs: float | None = None


@dataclass(frozen=True, slots=True)
class PrecisionResult:
    arch_key: str
    epochs: float
    format_name: str
    bits: int
    weight_bytes: int
    accuracy: float
    finetuned: bool
    checkpoint: str | None
    test_images: int | None = None  # scored on this many test images (a fixed draw); None: all of them
    full_accuracy: float | None = None  # the same model and format on the whole test split (a winner, re-scored)


@dataclass(frozen=True, slots=True)
class SkippedFormat:
    """A (model, format) the precision stage did not evaluate, and why (never silently missing)."""

    arch_key: str
    epochs: float
    format_name: str
    reason: str


# Candidate statuses, in workflow order; a rejection names its feasibility reason.
POOLED = "pooled"  # drawn and costed, not yet proposed
REJECTED_MEMORY = Reason.MEMORY.status
REJECTED_ACTIVATIONS = Reason.ACTIVATIONS.status
REJECTED_FLASH = Reason.FLASH.status  # its C library over the study's flash limit
REJECTED_RAM = Reason.RAM.status
REJECTED_LATENCY = Reason.LATENCY.status
FEASIBLE = "feasible"  # passed every constraint; trained or about to be
INVALID = "invalid"  # a draw that cannot run (e.g. a layer with no channels): counted, never proposed


class TrainingStatus(StrEnum):
    """Where a training stands (compares equal to its stored string)."""

    RUNNING = "running"  # claimed by a worker, which keeps its heartbeat
    DONE = "done"
    FAILED = "failed"  # stopped with an error; any worker may take it again

@dataclass(frozen=True, slots=True)
class Job:
    """A claimed unit of work other than a training (see ``Store.claim_job``)."""

    name: str
    status: TrainingStatus  # the same states as a training's
    worker: str | None
    heartbeat_at: datetime | None

# --------------------------------------------------------------------------- rows <-> records


class DamagedRow(ValueError):
    """A stored value its column cannot hold: the store was edited by hand, or by another program."""


def _checked(row: Any) -> None:
    """Raise DamagedRow unless each number column of ``row`` holds a number (SQLite keeps any text written into one)."""
    for column in row.__table__.columns:
        if isinstance(column.type, (Integer, Float)):
            value = getattr(row, column.key)
            if value is None and column.nullable:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DamagedRow(f"{row.__tablename__}.{column.key} of {_row_name(row)} is {value!r}, not a number")


def _row_name(row: Any) -> str:
    return getattr(row, "key", None) or getattr(row, "arch_key", "?")


def record_fields(value: Any) -> dict[str, Any]:
    """A record's fields by name, as the row constructors take them."""
    return {name: getattr(value, name) for name in value.__slots__}


def candidate_from_row(r: CandidateRow) -> Candidate:
    _checked(r)
    return Candidate(
        key=r.key, arch_json=r.arch_json, space=r.space, law=r.law, arch_id=r.arch_id, n_values=r.n_values,
        macs=r.macs, flops=r.flops, peak_activation_bytes=r.peak_activation_bytes, status=r.status,
        reason=r.reason, proposed_index=r.proposed_index,
    )


def latency_from_row(r: LatencyRow) -> Latency:
    _checked(r)
    try:
        detail = json.loads(r.detail_json)
    except (TypeError, ValueError) as exc:
        raise DamagedRow(f"{r.__tablename__}.detail_json of {r.arch_key} is not JSON ({exc})") from None
    return Latency(arch_key=r.arch_key, device_key=r.device_key, source=r.source, median_ms=r.median_ms, detail=detail)


def _status(r: TrainingRow | JobRow, name: str) -> TrainingStatus:
    try:
        return TrainingStatus(r.status)
    except ValueError:
        raise DamagedRow(f"{r.__tablename__}.status of {name} is {r.status!r}, "
                         f"not one of {', '.join(TrainingStatus)}") from None


def job_from_row(r: JobRow) -> Job:
    return Job(name=r.name, status=_status(r, r.name), worker=r.worker, heartbeat_at=r.heartbeat_at)


def training_from_row(r: TrainingRow, *, checkpoint: str | None) -> Training:
    _checked(r)
    status = _status(r, r.arch_key)
    return Training(
        arch_key=r.arch_key, epochs=r.epochs, status=status, accuracy=r.accuracy, checkpoint=checkpoint,
        seconds=r.seconds, worker=r.worker, started_at=r.started_at, finished_at=r.finished_at,
        heartbeat_at=r.heartbeat_at, resumed_from_epochs=r.resumed_from_epochs,
    )


def precision_from_row(r: PrecisionRow, *, checkpoint: str | None) -> PrecisionResult:
    _checked(r)
    return PrecisionResult(
        arch_key=r.arch_key, epochs=r.epochs, format_name=r.format_name, bits=r.bits, weight_bytes=r.weight_bytes,
        accuracy=r.accuracy, finetuned=r.finetuned, checkpoint=checkpoint, test_images=r.test_images,
        full_accuracy=r.full_accuracy,
    )


def skipped_from_row(r: SkippedFormatRow) -> SkippedFormat:
    _checked(r)
    return SkippedFormat(arch_key=r.arch_key, epochs=r.epochs, format_name=r.format_name, reason=r.reason)
