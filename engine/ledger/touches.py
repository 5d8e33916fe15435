"""Touches as decisions: their states and ids, recording them, and what the gate counts before it decides
(a member's recent touches, spend, a run's sends, the members' addresses at claim time)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select, text
from sqlalchemy.engine import RowMapping

from engine.grammar.policies import MemberHistory
from engine.ledger.dialect import dialect_insert, one_of
from engine.store.reachability import reach_columns
from engine.store.schema import REACHING_STATES, TOUCH_STATES, members, touches


class TouchState(StrEnum):
    """A ledger row's state; mirrors the CHECK constraint in engine/store/schema.py (a test keeps them in sync)."""

    holdout = "holdout"
    suppressed = "suppressed"
    queued = "queued"
    deferred = "deferred"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    unknown = "unknown"


assert tuple(TouchState) == TOUCH_STATES
FINAL_STATES = (TouchState.holdout, TouchState.suppressed, TouchState.sent, TouchState.failed, TouchState.unknown)


def touch_id_for(playbook: str, member_id: str, occurrence: str) -> str:
    """A 15-character ASCII id, the same for the same (playbook, member, occurrence)."""
    digest = hashlib.sha256(f"{playbook}\x1f{member_id}\x1f{occurrence}".encode()).digest()
    return "T" + base64.b32encode(digest).decode()[:14]


def record(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert decision rows; a row whose (playbook, member, occurrence) is already decided is skipped.

    Returns how many rows were new.
    """
    if not rows:
        return 0
    statement = dialect_insert(conn)(touches).on_conflict_do_nothing().returning(touches.c.touch_id)
    return len(conn.execute(statement, list(rows)).all())


def lock_members(conn: Connection, member_ids: Iterable[str]) -> None:
    """PostgreSQL: take a transaction-scoped advisory lock per member (sorted: no deadlocks).

    SQLite needs none: the write transaction already holds the database's write lock.
    """
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({zlib.crc32(f"member:{m}".encode()) for m in member_ids})
    for key in keys:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def lock_budgets(conn: Connection) -> None:
    """PostgreSQL: serialise spending decisions across replicas for this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(b"budgets")})


def member_histories(conn: Connection, member_ids: Sequence[str], since: datetime,
                     tz: ZoneInfo) -> dict[str, MemberHistory]:
    """Touches that may reach each member since `since`, counted per (channel, local day in `tz`)."""
    counts: dict[str, dict[tuple[str, date], int]] = defaultdict(lambda: defaultdict(int))
    for chunk_start in range(0, len(member_ids), 900):
        chunk = member_ids[chunk_start:chunk_start + 900]
        rows = conn.execute(
            select(touches.c.member_id, touches.c.channel, touches.c.touch_at).where(
                one_of(conn, touches.c.member_id, chunk), touches.c.state.in_(REACHING_STATES),
                touches.c.touch_at >= since))
        for member_id, channel, touch_at in rows:
            counts[member_id][(channel, touch_at.astimezone(tz).date())] += 1
    return {m: MemberHistory(dict(counts.get(m, {}))) for m in member_ids}


def spend_e4(conn: Connection, start: datetime, end: datetime, *, channel: str | None = None,
             playbook: str | None = None) -> int:
    """Cost (1/10,000 yuan) of touches that may reach members with `touch_at` in [start, end)."""
    conditions = [touches.c.state.in_(REACHING_STATES), touches.c.touch_at >= start, touches.c.touch_at < end]
    if channel is not None:
        conditions.append(touches.c.channel == channel)
    if playbook is not None:
        conditions.append(touches.c.playbook == playbook)
    return int(conn.execute(select(func.coalesce(func.sum(touches.c.cost_e4), 0)).where(*conditions)).scalar_one())


def sends_in_run(conn: Connection, playbook: str, occurrence: str) -> int:
    """Sends already recorded for one run (a resumed run keeps counting towards max_per_run)."""
    return int(conn.execute(select(func.count()).select_from(touches).where(
        touches.c.playbook == playbook, touches.c.occurrence == occurrence,
        touches.c.state.in_(REACHING_STATES + ("failed",)))).scalar_one())


def contacts(conn: Connection, member_ids: Sequence[str]) -> dict[str, RowMapping]:
    """The members' addresses and opt-out flags, as stored now (checked again right before sending)."""
    out: dict[str, RowMapping] = {}
    for start in range(0, len(member_ids), 900):
        chunk = list(member_ids[start:start + 900])
        columns: list[Any] = [members.c.member_id, members.c.phone, members.c.wecom_external_userid,
                   members.c.wecom_staff_userid, members.c.oa_openid, members.c.oa_subscribed,
                   members.c.sms_opt_out, members.c.call_opt_out]
        columns += reach_columns(members)
        for row in conn.execute(select(*columns).where(one_of(conn, members.c.member_id, chunk))).mappings():
            out[row["member_id"]] = row
    return out
