"""ORM tables of a study store (SQLAlchemy 2). Only the store and its record conversions use them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 3  # the head revision of iotnas/store/migrations, as a number


class Base(DeclarativeBase):
    pass


class _OfACandidate:
    """The columns every per-candidate table starts with: its own id and the candidate's key."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    arch_key: Mapped[str] = mapped_column(ForeignKey("iotnas_candidates.key"), index=True)


class MetaRow(Base):
    """Key/value facts about the store: schema version, study name and fingerprint."""

    __tablename__ = "iotnas_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CandidateRow(Base):
    """A drawn architecture, its costs and where it stands in the workflow."""

    __tablename__ = "iotnas_candidates"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    arch_json: Mapped[str] = mapped_column(Text)
    space: Mapped[str] = mapped_column(String(32), index=True)
    law: Mapped[str | None] = mapped_column(String(16))
    arch_id: Mapped[int | None] = mapped_column(Integer)
    n_values: Mapped[int] = mapped_column(Integer)
    macs: Mapped[int] = mapped_column(Integer)
    flops: Mapped[int] = mapped_column(Integer)
    peak_activation_bytes: Mapped[int] = mapped_column(Integer)  # float32 activations, batch 1
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    proposed_index: Mapped[int | None] = mapped_column(Integer, unique=True)  # claimed once, by one worker
    created_at: Mapped[datetime] = mapped_column()


class LatencyRow(_OfACandidate, Base):
    """One latency figure of one candidate on one device/runtime (its identity)."""

    __tablename__ = "iotnas_latencies"
    __table_args__ = (UniqueConstraint("arch_key", "device_key"),)
    device_key: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # measured | predicted | released
    median_ms: Mapped[float] = mapped_column(Float)
    detail_json: Mapped[str] = mapped_column(Text)  # p90, IQR, CV, runs, environment
    created_at: Mapped[datetime] = mapped_column()


class TrainingRow(_OfACandidate, Base):
    """A training of one candidate to one fidelity (epochs)."""

    __tablename__ = "iotnas_trainings"
    __table_args__ = (UniqueConstraint("arch_key", "epochs"),)
    epochs: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running | done | failed
    accuracy: Mapped[float | None] = mapped_column(Float)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    resumed_from_epochs: Mapped[float | None] = mapped_column(Float)  # progress found in a checkpoint
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class PrecisionRow(_OfACandidate, Base):
    """Test accuracy of a trained candidate with its numbers stored in one format."""

    __tablename__ = "iotnas_precision"
    __table_args__ = (UniqueConstraint("arch_key", "epochs", "format_name", "finetuned"),)
    epochs: Mapped[float] = mapped_column(Float)
    format_name: Mapped[str] = mapped_column(String(32))
    bits: Mapped[int] = mapped_column(Integer)
    weight_bytes: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    finetuned: Mapped[bool] = mapped_column(default=False)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
    test_images: Mapped[int | None] = mapped_column(Integer)  # scored on this many test images; None: all
    full_accuracy: Mapped[float | None] = mapped_column(Float)  # re-scored on the whole test split (a winner)


class SkippedFormatRow(_OfACandidate, Base):
    """A (model, format) the precision stage did not evaluate, and why."""

    __tablename__ = "iotnas_precision_skipped"
    __table_args__ = (UniqueConstraint("arch_key", "epochs", "format_name"),)
    epochs: Mapped[float] = mapped_column(Float)
    format_name: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
