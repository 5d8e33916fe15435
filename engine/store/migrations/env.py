"""Alembic environment: runs migrations on the Engine handed over by engine.store.connect."""

from __future__ import annotations

from alembic import context

from engine.store.schema import metadata

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
