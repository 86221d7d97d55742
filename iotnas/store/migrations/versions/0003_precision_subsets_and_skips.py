"""Precision results say how many test images scored them; formats skipped before evaluation are recorded.

``iotnas_precision.test_images``: the accuracy is on that many test images (a fixed draw),
NULL for the whole test split (every result written before this revision);
``iotnas_precision.full_accuracy``: the same result scored on the whole test split (a winner's).
``iotnas_precision_skipped``: a (model, format) the precision stage did not evaluate, and why
(its exponent range cannot hold the weights, or its row of the grid collapsed).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("iotnas_precision") as batch:
        batch.add_column(sa.Column("test_images", sa.Integer()))
        batch.add_column(sa.Column("full_accuracy", sa.Float()))
    op.create_table(
        "iotnas_precision_skipped",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("arch_key", sa.String(200), sa.ForeignKey("iotnas_candidates.key"), nullable=False, index=True),
        sa.Column("epochs", sa.Float(), nullable=False),
        sa.Column("format_name", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("arch_key", "epochs", "format_name"),
    )


def downgrade() -> None:
    op.drop_table("iotnas_precision_skipped")
    with op.batch_alter_table("iotnas_precision") as batch:
        batch.drop_column("full_accuracy")
        batch.drop_column("test_images")
