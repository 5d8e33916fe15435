"""Which database errors the daemon survives (and retries next loop), and which stop it."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import IntegrityError, OperationalError

from engine.store.connect import is_transient


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def test_is_transient__deadlock_and_serialization_failures_are_retried() -> None:
    """PostgreSQL deadlocks (40P01) and serialization failures (40001) are worth another try."""
    assert is_transient(OperationalError("UPDATE …", {}, _PgError("40P01")))
    assert is_transient(OperationalError("UPDATE …", {}, _PgError("40001")))


def test_is_transient__busy_sqlite_is_retried() -> None:
    """A SQLite writer that waited past busy_timeout tries again next loop."""
    assert is_transient(OperationalError("INSERT …", {}, sqlite3.OperationalError("database is locked")))


def test_is_transient__real_errors_are_not() -> None:
    """A constraint violation or a plain bug is not transient: the daemon stops loudly."""
    assert not is_transient(IntegrityError("INSERT …", {}, _PgError("23505")))
    assert not is_transient(ValueError("bug"))
