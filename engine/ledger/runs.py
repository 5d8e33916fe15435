"""Runs (one row per playbook and scheduled occurrence, so an occurrence runs once) and the watermarks that
say how far event triggers have been read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, literal, select, update
from sqlalchemy.engine import RowMapping

from engine.ledger.dialect import dialect_insert
from engine.store.schema import events, runs, watermarks


def start_run(conn: Connection, playbook: str, scheduled_for: datetime, owner: str, now: datetime) -> bool:
    """Record that a run starts; False when it already finished (a crashed run is resumed: True)."""
    conn.execute(dialect_insert(conn)(runs).values(playbook=playbook, scheduled_for=scheduled_for,
                                                   started_at=now, owner=owner).on_conflict_do_nothing())
    finished = conn.execute(select(runs.c.finished_at).where(
        runs.c.playbook == playbook, runs.c.scheduled_for == scheduled_for)).scalar_one()
    return finished is None


def finish_run(conn: Connection, playbook: str, scheduled_for: datetime, counts: Mapping[str, int],
               now: datetime) -> None:
    conn.execute(update(runs).where(runs.c.playbook == playbook, runs.c.scheduled_for == scheduled_for)
                 .values(finished_at=now, counts=dict(counts)))


def last_runs(conn: Connection) -> dict[str, RowMapping]:
    """The newest run of each playbook."""
    newest = select(runs.c.playbook, func.max(runs.c.scheduled_for).label("scheduled_for")) \
        .group_by(runs.c.playbook).subquery()
    rows = conn.execute(select(runs).join(newest, and_(runs.c.playbook == newest.c.playbook,
                                                       runs.c.scheduled_for == newest.c.scheduled_for)))
    return {row.playbook: row for row in rows.mappings()}


def unfinished_runs(conn: Connection, before: datetime) -> list[tuple[str, datetime]]:
    """Runs started before `before` and never finished (their process died): they are completed, never skipped."""
    rows = conn.execute(select(runs.c.playbook, runs.c.scheduled_for).where(
        runs.c.finished_at.is_(None), runs.c.scheduled_for <= before).order_by(runs.c.scheduled_for))
    return [(playbook, scheduled_for) for playbook, scheduled_for in rows]


def get_watermark(conn: Connection, name: str) -> datetime | None:
    value: datetime | None = conn.execute(select(watermarks.c.value).where(watermarks.c.name == name)).scalar()
    return value


def advance_watermark(conn: Connection, name: str, value: datetime) -> None:
    """Move a watermark forward (never back)."""
    statement = dialect_insert(conn)(watermarks).values(name=name, value=value)
    statement = statement.on_conflict_do_update(
        index_elements=[watermarks.c.name],
        set_={"value": case((watermarks.c.value < statement.excluded.value, statement.excluded.value),
                            else_=watermarks.c.value)})
    conn.execute(statement)


def event_types_between(conn: Connection, types: Iterable[str], after: datetime, until: datetime) -> set[str]:
    """Which of `types` have an event with occurred_at in (after, until] (the (type, occurred_at)
    index answers each type with one probe)."""
    found = set()
    for kind in sorted(set(types)):
        hit = conn.execute(select(literal(1)).where(events.c.type == kind, events.c.occurred_at > after,
                                                    events.c.occurred_at <= until).limit(1)).first()
        if hit is not None:
            found.add(kind)
    return found
