"""Alembic's entry point: migrate on the connection :mod:`iotnas.store.migrations` passes in.

The caller owns the transaction (one for the whole upgrade), so a failed revision leaves
the store as it was.
"""

from alembic import context

from iotnas.store.migrations import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
