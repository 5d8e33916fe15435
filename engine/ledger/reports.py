"""Counts of the touches for `siyu status` and the benchmarks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.engine import RowMapping

from engine.ledger.touches import TouchState
from engine.store.schema import touches


def state_counts(conn: Connection, since: datetime | None = None) -> dict[str, int]:
    conditions = [] if since is None else [touches.c.decided_at >= since]
    rows = conn.execute(select(touches.c.state, func.count()).where(*conditions).group_by(touches.c.state))
    return {state: int(n) for state, n in rows}


def playbook_state_counts(conn: Connection, since: datetime) -> dict[str, dict[str, int]]:
    rows = conn.execute(select(touches.c.playbook, touches.c.state, func.count())
                        .where(touches.c.decided_at >= since).group_by(touches.c.playbook, touches.c.state))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for playbook, state, n in rows:
        out[playbook][state] = int(n)
    return dict(out)


def channel_day(conn: Connection, start: datetime, end: datetime) -> dict[str, dict[str, int]]:
    """Per channel: touches sent with touch_at in [start, end), their cost (1/10,000 yuan), and how
    many of them the vendors reported delivered and undelivered."""
    def delivery(value: str) -> Any:
        return func.count(case((touches.c.delivery == value, 1)))

    rows = conn.execute(select(touches.c.channel, func.count(), func.coalesce(func.sum(touches.c.cost_e4), 0),
                               delivery("delivered"), delivery("undelivered"))
                        .where(touches.c.state == TouchState.sent, touches.c.touch_at >= start,
                               touches.c.touch_at < end).group_by(touches.c.channel))
    return {channel: {"sent": int(n), "cost_e4": int(cost), "delivered": int(ok), "undelivered": int(bad)}
            for channel, n, cost, ok, bad in rows}


def rows_in_states(conn: Connection, states: Sequence[str], limit: int = 50) -> list[RowMapping]:
    return list(conn.execute(select(touches).where(touches.c.state.in_(list(states)))
                             .order_by(touches.c.decided_at.desc()).limit(limit)).mappings())
