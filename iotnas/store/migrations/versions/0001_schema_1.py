"""Schema 1: the store as iotnas wrote it before migrations existed.

Stores of that time have no Alembic version table; their meta row ``schema_version``
is "1", and opening one stamps it with this revision before upgrading it.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iotnas_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "iotnas_candidates",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("arch_json", sa.Text(), nullable=False),
        sa.Column("space", sa.String(32), nullable=False, index=True),
        sa.Column("law", sa.String(16)),
        sa.Column("arch_id", sa.Integer()),
        sa.Column("n_values", sa.Integer(), nullable=False),
        sa.Column("macs", sa.Integer(), nullable=False),
        sa.Column("flops", sa.Integer(), nullable=False),
        sa.Column("peak_activation_bytes", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text()),
        sa.Column("proposed_index", sa.Integer(), unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "iotnas_latencies",
        *_of_a_candidate(),
        sa.Column("device_key", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("arch_key", "device_key"),
    )
    op.create_table(
        "iotnas_trainings",
        *_of_a_candidate(),
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
        sa.UniqueConstraint("arch_key", "epochs"),
    )
    op.create_table(
        "iotnas_precision",
        *_of_a_candidate(),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("format_name", sa.String(32), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("weight_bytes", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("finetuned", sa.Boolean(), nullable=False),
        sa.Column("checkpoint", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("arch_key", "epochs", "format_name", "finetuned"),
    )


def _of_a_candidate() -> list[sa.Column]:
    """The columns every per-candidate table starts with: its own id and the candidate's key."""
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("arch_key", sa.String(200), sa.ForeignKey("iotnas_candidates.key"), nullable=False, index=True),
    ]


def downgrade() -> None:
    for table in ("iotnas_precision", "iotnas_trainings", "iotnas_latencies", "iotnas_candidates", "iotnas_meta"):
        op.drop_table(table)
