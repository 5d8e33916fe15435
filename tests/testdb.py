"""Isolated test databases: SQLite files, and PostgreSQL databases cloned from a migrated template.

PostgreSQL comes from `SIYU_TEST_POSTGRES_URL` (default: the local trust-auth server).
Locally it is skipped when unreachable; with `CI` set it is mandatory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from engine.store.connect import normalise_url, open_engine, upgrade

POSTGRES_URL = os.environ.get("SIYU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _admin_engine() -> Engine:
    return create_engine(normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")


_template: dict[str, str] = {}


def _postgres_template() -> str:
    """Create (once per session) a migrated template database; skip or fail if unreachable."""
    if "name" in _template:
        return _template["name"]
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL is mandatory in CI and unreachable at {POSTGRES_URL}") from exc
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}")
    name = f"siyu_tpl_{os.getpid()}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(normalise_url(POSTGRES_URL)).set(database=name)
    engine = open_engine(url.render_as_string(hide_password=False))
    upgrade(engine)
    engine.dispose()
    admin.dispose()
    _template["name"] = name
    return name


def drop_template() -> None:
    """Drop the session's template database (at the end of the session)."""
    if "name" in _template:
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_template["name"]}" WITH (FORCE)'))
        admin.dispose()


def new_database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a fresh migrated database of `kind`, dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'siyu.db'}"
        engine = open_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    template = _postgres_template()
    name = f"siyu_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield make_url(normalise_url(POSTGRES_URL)).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


