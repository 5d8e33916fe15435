"""Shared fixtures: `db` is a migrated, isolated database, once per backend (SQLite, PostgreSQL).

PostgreSQL comes from `SIYU_TEST_POSTGRES_URL` (default: the local trust-auth server).
Locally it is skipped when unreachable; with `CI` set it is mandatory.
Each test gets its own database, cloned from a migrated template.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from testdb import drop_template, new_database_url

from engine.store.connect import open_engine


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_template()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an isolated, migrated database; the test runs once per backend."""
    yield from new_database_url(request.param, tmp_path)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """An Engine on an isolated, migrated database; the test runs once per backend."""
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A fresh migrated SQLite database only (for tests of one-writer behaviour)."""
    yield from new_database_url("sqlite", tmp_path)
