"""The study store (SQLAlchemy 2): SQLite by default, PostgreSQL by URL."""

from iotnas.store.models import SCHEMA_VERSION
from iotnas.store.records import (
    FEASIBLE,
    INVALID,
    POOLED,
    REJECTED_ACTIVATIONS,
    REJECTED_FLASH,
    REJECTED_LATENCY,
    REJECTED_MEMORY,
    REJECTED_RAM,
    Candidate,
    Job,
    Latency,
    PrecisionResult,
    SkippedFormat,
    Training,
    TrainingStatus,
)
from iotnas.store.store import Store, normalize_url

__all__ = [
    "FEASIBLE",
    "INVALID",
    "POOLED",
    "REJECTED_ACTIVATIONS",
    "REJECTED_FLASH",
    "REJECTED_LATENCY",
    "REJECTED_MEMORY",
    "REJECTED_RAM",
    "SCHEMA_VERSION",
    "Candidate",
    "Job",
    "Latency",
    "PrecisionResult",
    "SkippedFormat",
    "Store",
    "Training",
    "TrainingStatus",
    "normalize_url",
]
