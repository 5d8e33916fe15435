"""Opening a database: files private to their owner, no password or parameter in any message."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from engine.errors import DatabaseError
from engine.store.connect import open_engine, upgrade


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_open_engine__a_new_sqlite_database_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    """demo.db holds phones and vendor access tokens: created 0600, and SQLite gives its -wal the same mode."""
    path = tmp_path / "siyu.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('k', 'v')"))
        assert _mode(path) == 0o600
        wal = tmp_path / "siyu.db-wal"
        assert wal.exists() and _mode(wal) == 0o600
    finally:
        engine.dispose()


def test_open_engine__an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """Siyu changes no mode it did not set (the operator's choice stands)."""
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    open_engine(f"sqlite:///{path}").dispose()
    assert _mode(path) == 0o640


def test_open_engine__an_unsupported_driver_never_shows_the_password() -> None:
    with pytest.raises(DatabaseError) as caught:
        open_engine("mysql+nosuchdriver://shop:S3cretPass@db.internal/oms")
    assert "S3cretPass" not in str(caught.value) and "***" in str(caught.value)


def test_normalise_url__an_unparsable_url_never_shows_the_password() -> None:
    with pytest.raises(DatabaseError) as caught:
        open_engine("postgresql://shop:S3cretPass@db.internal:notaport/oms")
    assert "S3cretPass" not in str(caught.value) and "shop:***@" in str(caught.value)


def test_open_engine__statement_errors_carry_no_parameters(tmp_path: Path) -> None:
    """A failed statement's message names the statement, never the values bound to it (phones, tokens)."""
    engine = open_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with pytest.raises(StatementError) as caught, engine.connect() as conn:
            conn.execute(text("INSERT INTO no_such_table (phone) VALUES (:phone)"), {"phone": "13812345678"})
        assert "13812345678" not in str(caught.value)
    finally:
        engine.dispose()
