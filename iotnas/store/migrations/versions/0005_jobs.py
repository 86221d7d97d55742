"""Units of work other than trainings, claimed by one worker each (``iotnas_jobs``).

The precision stage's units (a model's formats, a fine-tuning in one format) were done by every
worker of a study; each is now claimed, kept alive by a heartbeat and taken over when its worker
stops, as a training is. Stores from before this revision have no claims: nothing to copy.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iotnas_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("iotnas_studies.id"), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("study_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("iotnas_jobs")
