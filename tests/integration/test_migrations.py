"""Alembic migrations and engine/store/schema.py agree exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from engine.errors import DatabaseError
from engine.store.connect import is_current, open_engine, require_schema, upgrade
from engine.store.schema import metadata


def test_migrations__upgrade_head_matches_schema(db: Engine) -> None:
    """`alembic upgrade head` gives an empty autogenerate diff against engine/store/schema.py."""
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert is_current(db)


def test_migrations__upgrade_is_idempotent(db: Engine) -> None:
    """Running the upgrade again on a current database changes nothing."""
    upgrade(db)
    assert is_current(db)


def test_migrations__schema_revision_is_alembic_head(db: Engine) -> None:
    """SCHEMA_REVISION, which every command checks without importing Alembic, is the newest script."""
    from alembic.script import ScriptDirectory

    from engine.store.connect import _alembic_config
    from engine.store.schema import SCHEMA_REVISION

    assert ScriptDirectory.from_config(_alembic_config(db)).get_heads() == [SCHEMA_REVISION]


def test_require_schema__names_what_to_run_for_an_empty_or_older_database(tmp_path: Path) -> None:
    """No tables: create them; an older revision: upgrade; the newest: nothing to say."""
    engine = open_engine(f"sqlite:///{tmp_path / 'brand.db'}")
    try:
        engine.connect().close()  # the file exists, empty
        with pytest.raises(DatabaseError, match="has no Siyu tables"):
            require_schema(engine)
        upgrade(engine, "0003")
        with pytest.raises(DatabaseError, match="older Siyu schema: run `siyu db upgrade"):
            require_schema(engine)
        upgrade(engine)
        require_schema(engine)
    finally:
        engine.dispose()
