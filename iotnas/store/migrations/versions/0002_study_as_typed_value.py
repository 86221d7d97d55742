"""The study as a typed value: the meta row ``study`` holds the tables of a study file.

Schema 1 stored ``json.dumps(dataclasses.asdict(study))``: ``laws`` and ``pool_per_law``
at the top level, ``base_dir`` inside, None for every unset key. Schema 2 stores the
mapping ``iotnas.study.parse_study`` reads, so a stored study is read back by the code
that reads a file: those two keys in a ``space`` table, no None at any level (TOML has
no null), and ``base_dir`` in its own meta row ``study_base_dir``. The meta row
``weight_bits`` goes: it is derived from the study's formats.

Downgrade raises: the dropped None values and ``weight_bits`` are not worth rebuilding.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_meta = sa.table("iotnas_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def convert_study(old: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Schema 1's study value as schema 2's, and the ``base_dir`` it held."""
    study = dict(old)
    base_dir = study.pop("base_dir", None)
    space = {key: study.pop(key) for key in ("laws", "pool_per_law") if key in study}
    if space:
        study["space"] = space
    return _without_nulls(study), base_dir


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def upgrade() -> None:
    bind = op.get_bind()
    stored = bind.scalar(sa.select(_meta.c.value).where(_meta.c.key == "study"))
    if stored:
        study, base_dir = convert_study(json.loads(stored))
        bind.execute(_meta.update().where(_meta.c.key == "study").values(value=json.dumps(study, sort_keys=True)))
        if base_dir is not None:
            bind.execute(_meta.insert().values(key="study_base_dir", value=base_dir))
    bind.execute(_meta.delete().where(_meta.c.key == "weight_bits"))


def downgrade() -> None:
    raise NotImplementedError("a schema 2 store cannot be turned back into schema 1; keep a copy of the old store")
