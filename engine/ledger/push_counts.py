"""How many vendor pushes each callback route took, per day and outcome (`siyu status`).

The callback server counts in memory and adds its counts here once a minute; several daemons
on one database add to the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from engine.ledger.dialect import dialect_insert
from engine.store.schema import callback_counts


def add_push_counts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add rows of (day, route, outcome, count, last_at) to the kept counts."""
    for row in rows:
        statement = dialect_insert(conn)(callback_counts).values(**row)
        conn.execute(statement.on_conflict_do_update(
            index_elements=[callback_counts.c.day, callback_counts.c.route, callback_counts.c.outcome],
            set_={"count": callback_counts.c.count + statement.excluded.count,
                  "last_at": case((statement.excluded.last_at > callback_counts.c.last_at, statement.excluded.last_at),
                                  else_=callback_counts.c.last_at)}))


def push_counts(conn: Connection, day: str) -> dict[str, dict[str, int]]:
    """Route → outcome → count on `day` (YYYY-MM-DD)."""
    out: dict[str, dict[str, int]] = {}
    for row in conn.execute(select(callback_counts.c.route, callback_counts.c.outcome, callback_counts.c.count)
                            .where(callback_counts.c.day == day)).mappings():
        out.setdefault(row["route"], {})[row["outcome"]] = int(row["count"])
    return out


def last_accepted_pushes(conn: Connection) -> dict[str, datetime]:
    """Route → the latest push whose contents were applied, over all days kept."""
    return {row.route: row.last_at for row in conn.execute(
        select(callback_counts.c.route, func.max(callback_counts.c.last_at).label("last_at"))
        .where(callback_counts.c.outcome == "applied").group_by(callback_counts.c.route))}
