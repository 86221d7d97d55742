"""ORM tables of a study store (SQLAlchemy 2). Only the store and its record conversions use them.

One database holds any number of studies, as an Optuna storage does: every per-study row
carries its study's id, and a candidate is known by (study, architecture key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, ForeignKeyConstraint, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 5  # the head revision of iotnas/store/migrations, as a number


class Base(DeclarativeBase):
    pass


class _OfACandidate:
    """The columns every per-candidate table starts with: its own id, the study and the candidate's key.

    Each such table also names ``_candidate_key`` among its ``__table_args__``.
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(Integer)
    arch_key: Mapped[str] = mapped_column(String(200), index=True)


def _candidate_key(table: str) -> ForeignKeyConstraint:
    """(study, architecture key) refers to a candidate of the same study."""
    return ForeignKeyConstraint(["study_id", "arch_key"], ["iotnas_candidates.study_id", "iotnas_candidates.key"],
                                name=f"fk_{table}_candidate")


class MetaRow(Base):
    """Key/value facts about the whole store: schema version, when and by which iotnas it was created."""

    __tablename__ = "iotnas_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyRow(Base):
    """One study of the store, known by its name (the study file's ``name``)."""

    __tablename__ = "iotnas_studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column()


class StudyMetaRow(Base):
    """Key/value facts about one study: its fingerprint, its settings, the device it is timed on."""

    __tablename__ = "iotnas_study_meta"
    study_id: Mapped[int] = mapped_column(ForeignKey("iotnas_studies.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CandidateRow(Base):
    """A drawn architecture, its costs and where it stands in the workflow."""

    __tablename__ = "iotnas_candidates"
    __table_args__ = (UniqueConstraint("study_id", "proposed_index"),)
    study_id: Mapped[int] = mapped_column(ForeignKey("iotnas_studies.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    arch_json: Mapped[str] = mapped_column(Text)
    space: Mapped[str] = mapped_column(String(32), index=True)
    law: Mapped[str | None] = mapped_column(String(16))
    arch_id: Mapped[int | None] = mapped_column(Integer)
    n_values: Mapped[int] = mapped_column(BigInteger)
    macs: Mapped[int] = mapped_column(BigInteger)
    flops: Mapped[int] = mapped_column(BigInteger)
    peak_activation_bytes: Mapped[int] = mapped_column(BigInteger)  # float32 activations, batch 1
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    proposed_index: Mapped[int | None] = mapped_column(Integer)  # claimed once per study, by one worker
    created_at: Mapped[datetime] = mapped_column()


class LatencyRow(_OfACandidate, Base):
    """One latency figure of one candidate on one device/runtime (its identity)."""

    __tablename__ = "iotnas_latencies"
    __table_args__ = (UniqueConstraint("study_id", "arch_key", "device_key"), _candidate_key("iotnas_latencies"))
    device_key: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # measured | predicted | released
    median_ms: Mapped[float] = mapped_column(Float)
    detail_json: Mapped[str] = mapped_column(Text)  # p90, IQR, CV, runs, environment
    created_at: Mapped[datetime] = mapped_column()


class TrainingRow(_OfACandidate, Base):
    """A training of one candidate to one fidelity (epochs)."""

    __tablename__ = "iotnas_trainings"
    __table_args__ = (UniqueConstraint("study_id", "arch_key", "epochs"), _candidate_key("iotnas_trainings"))
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


class JobRow(Base):
    """A unit of work other than a training (a model's formats, a fine-tuning) claimed by one worker.

    Claimed, kept alive and taken over like a training, so that workers share a stage's units
    instead of each doing all of them. ``name`` says what the unit is, e.g.
    ``fine-tuning probenet/s1/9 at 16 epochs in int8``.
    """

    __tablename__ = "iotnas_jobs"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("iotnas_studies.id"))
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed, as a training's
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class PrecisionRow(_OfACandidate, Base):
    """Test accuracy of a trained candidate with its numbers stored in one format."""

    __tablename__ = "iotnas_precision"
    __table_args__ = (UniqueConstraint("study_id", "arch_key", "epochs", "format_name", "finetuned"),
                      _candidate_key("iotnas_precision"))
    epochs: Mapped[float] = mapped_column(Float)
    format_name: Mapped[str] = mapped_column(String(32))
    bits: Mapped[int] = mapped_column(Integer)
    weight_bytes: Mapped[int] = mapped_column(BigInteger)
    accuracy: Mapped[float] = mapped_column(Float)
    finetuned: Mapped[bool] = mapped_column(default=False)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
    test_images: Mapped[int | None] = mapped_column(Integer)  # scored on this many test images; None: all
    full_accuracy: Mapped[float | None] = mapped_column(Float)  # re-scored on the whole test split (a winner)


class SkippedFormatRow(_OfACandidate, Base):
    """A (model, format) the precision stage did not evaluate, and why."""

    __tablename__ = "iotnas_precision_skipped"
    __table_args__ = (UniqueConstraint("study_id", "arch_key", "epochs", "format_name"),
                      _candidate_key("iotnas_precision_skipped"))
    epochs: Mapped[float] = mapped_column(Float)
    format_name: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
