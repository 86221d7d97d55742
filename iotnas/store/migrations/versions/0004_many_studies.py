"""Many studies in one store, keyed by study name, as Optuna keeps many studies in one storage.

Schema 3 held one study: its name, fingerprint and settings were rows of ``iotnas_meta``,
and candidates were known by architecture key alone. Schema 4 adds ``iotnas_studies``
(id, unique name) and ``iotnas_study_meta`` (a study's own facts), and puts a
``study_id`` in every per-study table: candidates are known by (study, key), and the
unique keys of latencies, trainings, precision results, skipped formats and proposal
indices hold within a study. Counts that outgrow 32 bits on PostgreSQL (the MACs of the released set's
largest models) become 64-bit integers. A schema 3 store's study becomes study 1 (named as it was, or "study" when it
recorded no name); its rows keep their ids and values (precision results their ``test_images`` and
``full_accuracy``, revision 0003's).

The per-study tables are rebuilt (copied aside, made anew, copied back), the one way
that changes a primary key alike on SQLite and PostgreSQL; it runs in the caller's
transaction, so a failure leaves the store as it was.

Downgrade raises: a store with several studies has no schema 3 form.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_meta = sa.table("iotnas_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
#: Facts of the store as a whole: they stay in iotnas_meta. Every other row was the study's.
_STORE_FACTS = ("schema_version", "created_at", "iotnas_version")
_CANDIDATE_COLUMNS = ("key", "arch_json", "space", "law", "arch_id", "n_values", "macs", "flops",
                      "peak_activation_bytes", "status", "reason", "proposed_index", "created_at")
_PER_CANDIDATE = {
    "iotnas_latencies": ("id", "arch_key", "device_key", "source", "median_ms", "detail_json", "created_at"),
    "iotnas_trainings": ("id", "arch_key", "epochs", "status", "accuracy", "checkpoint", "seconds", "worker",
                         "heartbeat_at", "resumed_from_epochs", "started_at", "finished_at"),
    "iotnas_precision": ("id", "arch_key", "epochs", "format_name", "bits", "weight_bytes", "accuracy", "finetuned",
                         "checkpoint", "created_at", "test_images", "full_accuracy"),
    "iotnas_precision_skipped": ("id", "arch_key", "epochs", "format_name", "reason", "created_at"),
}


def _of_a_candidate(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("arch_key", sa.String(200), nullable=False, index=True),
        sa.ForeignKeyConstraint(["study_id", "arch_key"], ["iotnas_candidates.study_id", "iotnas_candidates.key"],
                                name=f"fk_{table}_candidate"),
    ]


def _create_tables() -> None:
    op.create_table(
        "iotnas_candidates",
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("iotnas_studies.id"), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("arch_json", sa.Text(), nullable=False),
        sa.Column("space", sa.String(32), nullable=False, index=True),
        sa.Column("law", sa.String(16)),
        sa.Column("arch_id", sa.Integer()),
        sa.Column("n_values", sa.BigInteger(), nullable=False),
        sa.Column("macs", sa.BigInteger(), nullable=False),
        sa.Column("flops", sa.BigInteger(), nullable=False),
        sa.Column("peak_activation_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text()),
        sa.Column("proposed_index", sa.Integer()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "proposed_index"),
    )
    op.create_table(
        "iotnas_latencies",
        *_of_a_candidate("iotnas_latencies"),
        sa.Column("device_key", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "arch_key", "device_key"),
    )
    op.create_table(
        "iotnas_trainings",
        *_of_a_candidate("iotnas_trainings"),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("accuracy", sa.Float()),
        sa.Column("checkpoint", sa.Text()),
        sa.Column("seconds", sa.Float()),
        sa.Column("worker", sa.String(200)),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("resumed_from_epochs", sa.Float()),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("study_id", "arch_key", "epochs"),
    )
    op.create_table(
        "iotnas_precision",
        *_of_a_candidate("iotnas_precision"),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("format_name", sa.String(32), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("weight_bytes", sa.BigInteger(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("finetuned", sa.Boolean(), nullable=False),
        sa.Column("checkpoint", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("test_images", sa.Integer()),
        sa.Column("full_accuracy", sa.Float()),
        sa.UniqueConstraint("study_id", "arch_key", "epochs", "format_name", "finetuned"),
    )
    op.create_table(
        "iotnas_precision_skipped",
        *_of_a_candidate("iotnas_precision_skipped"),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("format_name", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "arch_key", "epochs", "format_name"),
    )


def _copy_back(bind: sa.Connection, table: str, columns: tuple[str, ...], study_id: int) -> None:
    listed = ", ".join(columns)
    bind.execute(sa.text(f"INSERT INTO {table} (study_id, {listed}) "  # table and column names from this file
                         f"SELECT :study_id, {listed} FROM iotnas_v3_{table.removeprefix('iotnas_')}"),
                 {"study_id": study_id})


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "iotnas_studies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "iotnas_study_meta",
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("iotnas_studies.id"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    meta = dict(bind.execute(sa.select(_meta.c.key, _meta.c.value)).all())
    has_rows = bind.scalar(sa.text("SELECT count(*) FROM iotnas_candidates")) > 0
    study_id = 1
    if "study_name" in meta or has_rows:
        created = meta.get("created_at")
        bind.execute(sa.text("INSERT INTO iotnas_studies (id, name, created_at) VALUES (1, :name, :created)"),
                     {"name": meta.get("study_name", "study"),
                      "created": datetime.fromisoformat(created) if created
                      else datetime.now(UTC).replace(tzinfo=None)})
        facts = {k: v for k, v in meta.items() if k not in _STORE_FACTS and k != "study_name"}
        if facts:
            bind.execute(sa.text("INSERT INTO iotnas_study_meta (study_id, key, value) VALUES (1, :key, :value)"),
                         [{"key": k, "value": v} for k, v in facts.items()])
    bind.execute(_meta.delete().where(_meta.c.key.not_in(_STORE_FACTS)))
    if bind.dialect.name == "postgresql":  # id 1 was given, not drawn: the next study draws 2
        bind.execute(sa.text("SELECT setval(pg_get_serial_sequence('iotnas_studies', 'id'), "
                             "coalesce(max(id), 0) + 1, false) FROM iotnas_studies"))
    tables = ["iotnas_candidates", *_PER_CANDIDATE]
    for table in tables:
        bind.execute(sa.text(f"CREATE TABLE iotnas_v3_{table.removeprefix('iotnas_')} AS SELECT * FROM {table}"))
    for table in reversed(tables):  # the referring tables first
        op.drop_table(table)
    _create_tables()
    _copy_back(bind, "iotnas_candidates", _CANDIDATE_COLUMNS, study_id)
    for table, columns in _PER_CANDIDATE.items():
        _copy_back(bind, table, columns, study_id)
        if bind.dialect.name == "postgresql":  # rows came with their ids: move the sequence past them
            bind.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, "
                                 f"false) FROM {table}"))
    for table in tables:
        op.drop_table(f"iotnas_v3_{table.removeprefix('iotnas_')}")


def downgrade() -> None:
    raise NotImplementedError("a schema 4 store cannot be turned back into schema 3; keep a copy of the old store")
