"""Where PostgreSQL and SQLite statements differ for the ledger: one function per gap, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, any_, literal
from sqlalchemy.dialects import postgresql, sqlite


def one_of(conn: Connection, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter for the whole list
    (binding and planning 900 parameters per batch cost 6 × the query itself)."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def dialect_insert(conn: Connection) -> Any:
    """The dialect's own INSERT: the generic one has no ON CONFLICT clause."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
