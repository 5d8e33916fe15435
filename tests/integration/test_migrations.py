"""Alembic migrations and engine/schema.py agree exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from engine.schema import metadata
from engine.store import is_current, upgrade


def test_migrations__upgrade_head_matches_schema(db: Engine) -> None:
    """`alembic upgrade head` gives an empty autogenerate diff against engine/schema.py."""
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert is_current(db)


def test_migrations__upgrade_is_idempotent(db: Engine) -> None:
    """Running the upgrade again on a current database changes nothing."""
    upgrade(db)
    assert is_current(db)
