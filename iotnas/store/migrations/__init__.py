"""Versioned migrations of the study store's schema (Alembic), run by :meth:`Store.open`.

A store is migrated, not refused, when the schema changes. The revisions in ``versions/``
are frozen history: they never import the live models or study module, so each keeps
meaning what it meant when it was written.

To change the schema: change ``iotnas/store/models.py``, add ``versions/NNNN_what.py``
(copy the latest; ``revision = "NNNN"``, ``down_revision`` = the latest) doing the same
change, and set ``SCHEMA_VERSION = NNNN`` in models.py. The store's tests check that the
revisions build exactly the models' tables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

# The schema_version of stores written before Alembic, and the revision they are at.
LEGACY_REVISIONS = {1: "0001"}


#: Our own name for Alembic's version table: Optuna keeps its schema's revision in the default
#: ``alembic_version`` of the same database (the optuna strategy stores its trials beside ours).
VERSION_TABLE = "iotnas_alembic_version"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    config.attributes["connection"] = connection  # env.py migrates on it, in the caller's transaction
    return config


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The revision this code writes."""
    return _script().get_current_head()


def is_known(revision: str) -> bool:
    """Whether ``revision`` is one of this code's (an unknown one was written by a newer iotnas)."""
    return revision in {script.revision for script in _script().walk_revisions()}


def current(connection: Connection) -> str | None:
    """The revision the store is at; None when it predates Alembic or is new."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def stamp(connection: Connection, revision: str) -> None:
    """Record that the store is at ``revision`` without running anything."""
    command.stamp(_config(connection), revision)


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Run the revisions from the store's current one up to ``revision``, in the caller's transaction."""
    command.upgrade(_config(connection), revision)
