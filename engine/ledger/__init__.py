"""The touch ledger: every statement on touches, runs, watermarks and suppressions lives here.

One row per decision, unique on (playbook, member, occurrence): a second decision for the
same key is "already decided", a return value, never an error. Dispatch is at most once:
a row is marked `sending` under a lease in a committed transaction before its adapter is
called; a row left in `sending` past its lease is settled by the adapter's `lookup`, never
resent blindly.

SQLite means one daemon: SQLAlchemy drops FOR UPDATE on SQLite, and writers are
serialised by BEGIN IMMEDIATE (engine.store.connect.write_transaction). PostgreSQL means many:
batches are claimed with FOR UPDATE SKIP LOCKED, and caps are checked under per-member
advisory locks, so two replicas never pass the same member's last allowed touch.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from engine.grammar.policies import MemberHistory
from engine.store.reachability import reach_columns
from engine.store.schema import (
    CLAIMABLE_STATES,
    REACHING_STATES,
    TOUCH_STATES,
    channel_pauses,
    events,
    members,
    runs,
    suppressions,
    touches,
    vendor_tokens,
    watermarks,
)


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


def one_of(conn: Connection, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`, one parameter for the whole list
    (binding and planning 900 parameters per batch cost 6 × the query itself)."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def touch_id_for(playbook: str, member_id: str, occurrence: str) -> str:
    """A 15-character ASCII id, the same for the same (playbook, member, occurrence)."""
    digest = hashlib.sha256(f"{playbook}\x1f{member_id}\x1f{occurrence}".encode()).digest()
    return "T" + base64.b32encode(digest).decode()[:14]


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


# --------------------------------------------------------------------------- recording decisions

def record(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert decision rows; a row whose (playbook, member, occurrence) is already decided is skipped.

    Returns how many rows were new.
    """
    if not rows:
        return 0
    statement = _insert(conn)(touches).on_conflict_do_nothing().returning(touches.c.touch_id)
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


# --------------------------------------------------------------------------- suppressions

def suppressed_channels(conn: Connection, members: Sequence[tuple[str, str | None]]) -> dict[str, set[str]]:
    """member_id → channels ('all' included) suppressed for that member or for their phone."""
    found: dict[str, set[str]] = defaultdict(set)
    for start in range(0, len(members), 900):
        chunk = members[start:start + 900]
        ids = [m for m, _ in chunk]
        phones = {p: m for m, p in chunk if p}
        rows = conn.execute(select(suppressions.c.member_id, suppressions.c.phone, suppressions.c.channel).where(
            or_(one_of(conn, suppressions.c.member_id, ids), one_of(conn, suppressions.c.phone, list(phones)))))
        for member_id, phone, channel in rows:
            if member_id is not None:
                found[member_id].add(channel)
            elif phone in phones:
                for m, p in chunk:
                    if p == phone:
                        found[m].add(channel)
    return found


def add_suppression(conn: Connection, *, member_id: str | None, phone: str | None, channel: str,
                    reason: str | None, source: str, now: datetime) -> bool:
    """Record a suppression; False if the same one exists already."""
    subject = suppressions.c.member_id == member_id if member_id is not None else suppressions.c.phone == phone
    exists = conn.execute(select(suppressions.c.id).where(subject, suppressions.c.channel == channel)).first()
    if exists is not None:
        return False
    conn.execute(insert(suppressions).values(member_id=member_id, phone=phone, channel=channel, reason=reason,
                                             source=source, created_at=now))
    return True


def remove_suppression(conn: Connection, *, member_id: str | None, phone: str | None, channel: str) -> int:
    subject = suppressions.c.member_id == member_id if member_id is not None else suppressions.c.phone == phone
    return int(conn.execute(delete(suppressions).where(subject, suppressions.c.channel == channel)).rowcount or 0)


def list_suppressions(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(suppressions).order_by(suppressions.c.created_at, suppressions.c.id)).mappings())


# --------------------------------------------------------------------------- runs and watermarks

def start_run(conn: Connection, playbook: str, scheduled_for: datetime, owner: str, now: datetime) -> bool:
    """Record that a run starts; False when it already finished (a crashed run is resumed: True)."""
    conn.execute(_insert(conn)(runs).values(playbook=playbook, scheduled_for=scheduled_for, started_at=now,
                                            owner=owner).on_conflict_do_nothing())
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


def get_watermark(conn: Connection, name: str) -> datetime | None:
    value: datetime | None = conn.execute(select(watermarks.c.value).where(watermarks.c.name == name)).scalar()
    return value


def advance_watermark(conn: Connection, name: str, value: datetime) -> None:
    """Move a watermark forward (never back)."""
    statement = _insert(conn)(watermarks).values(name=name, value=value)
    statement = statement.on_conflict_do_update(
        index_elements=[watermarks.c.name],
        set_={"value": case((watermarks.c.value < statement.excluded.value, statement.excluded.value),
                            else_=watermarks.c.value)})
    conn.execute(statement)


# --------------------------------------------------------------------------- dispatch

def _due(channel: str, now: datetime) -> ColumnElement[bool]:
    """Rows of `channel` a claim would take: queued, or deferred whose `not_before` has come.

    The first state test repeats the claim index's WHERE (engine/store/schema.py, ix_touches_claim),
    with the states written into the SQL: SQLite uses a partial index only for a query that
    contains its WHERE term, and PostgreSQL cannot match it against bound parameters in a
    prepared statement's generic plan."""
    claimable: BindParameter[str] = bindparam("claimable_states", CLAIMABLE_STATES, expanding=True,
                                              literal_execute=True)
    return and_(touches.c.channel == channel, touches.c.state.in_(claimable),
                or_(touches.c.state == TouchState.queued,
                    and_(touches.c.state == TouchState.deferred, touches.c.not_before <= now)))


def claim_has_work(conn: Connection, channel: str, now: datetime) -> bool:
    """Would a claim of `channel` now find anything to do (a due row, or a deferred row to expire)?
    One indexed read, so an idle dispatcher polls without taking the write lock."""
    expiring = and_(touches.c.state == TouchState.deferred, touches.c.expires_at.is_not(None),
                    touches.c.expires_at <= now)
    return conn.execute(select(literal(1)).where(or_(_due(channel, now), expiring)).limit(1)).first() is not None


def claim_batch(conn: Connection, channel: str, now: datetime, limit: int, lease: timedelta,
                owner: str) -> list[RowMapping]:
    """Claim up to `limit` due rows of `channel` for sending: they become `sending` under a lease.

    Due: `queued`, or `deferred` whose `not_before` has come. Higher priority first, then
    the order they were decided in. On PostgreSQL, SKIP LOCKED lets replicas share the queue.
    The caller commits before calling the adapter.
    """
    candidates = (select(touches.c.touch_id).where(_due(channel, now))
                  .order_by(touches.c.priority.desc(), touches.c.decided_at, touches.c.touch_id)
                  .limit(limit).with_for_update(skip_locked=True))
    ids = [row[0] for row in conn.execute(candidates)]
    if not ids:
        return []
    conn.execute(update(touches).where(one_of(conn, touches.c.touch_id, ids))
                 .values(state=TouchState.sending, lease_until=now + lease, lease_owner=owner,
                         claimed_at=now, attempts=touches.c.attempts + 1))
    return list(conn.execute(select(touches).where(one_of(conn, touches.c.touch_id, ids))
                             .order_by(touches.c.priority.desc(), touches.c.decided_at, touches.c.touch_id))
                .mappings())


def settle(conn: Connection, touch_id: str, state: TouchState, *, owner: str | None = None,
           **values: Any) -> bool:
    """Move a `sending` row to its outcome; False when the row is no longer ours (lease lost)."""
    conditions = [touches.c.touch_id == touch_id, touches.c.state == TouchState.sending]
    if owner is not None:
        conditions.append(touches.c.lease_owner == owner)
    result = conn.execute(update(touches).where(*conditions)
                          .values(state=state, lease_until=None, **values))
    return bool(result.rowcount)


def settle_many(conn: Connection, state: TouchState, owner: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Move several `sending` rows held by `owner` to `state`: one UPDATE, executed once per row
    (executemany). Each mapping holds `touch_id` and that row's values, all mappings the same
    columns. A row no longer ours (lease lost) is left as it is; returns how many rows moved."""
    if not rows:
        return 0
    columns = [c for c in rows[0] if c != "touch_id"]
    # bound as `b_<column>`: SQLAlchemy reserves the column names themselves for the SET clause
    statement = (update(touches)
                 .where(touches.c.touch_id == bindparam("b_touch_id"), touches.c.state == TouchState.sending,
                        touches.c.lease_owner == owner)
                 .values(state=state, lease_until=None, **{c: bindparam(f"b_{c}") for c in columns}))
    result = conn.execute(statement, [{f"b_{k}": v for k, v in row.items()} for row in rows])
    return int(result.rowcount or 0)


def settle_unknown(conn: Connection, touch_id: str, owner: str, code: str | None, message: str | None) -> bool:
    """Nothing could settle a lost send: `unknown`, for the operator. The send's own error is kept
    when the lookup gave none (a lost answer); a row with neither had a sender that died mid-send."""
    result = conn.execute(update(touches).where(
        touches.c.touch_id == touch_id, touches.c.state == TouchState.sending, touches.c.lease_owner == owner)
        .values(state=TouchState.unknown, lease_until=None,
                error_code=code if code else func.coalesce(touches.c.error_code, "lease_expired"),
                error_message=message if message else func.coalesce(
                    touches.c.error_message, "the sender died mid-send; the vendor cannot say whether it was sent")))
    return bool(result.rowcount)


def await_lookup(conn: Connection, touch_id: str, owner: str, lookup_at: datetime, **values: Any) -> bool:
    """Keep a `sending` row whose send outcome is unknown for the reconciler: its lease now ends at
    `lookup_at`, when the vendor's query API is asked. False when the row is no longer ours."""
    result = conn.execute(update(touches).where(
        touches.c.touch_id == touch_id, touches.c.state == TouchState.sending, touches.c.lease_owner == owner)
        .values(lease_until=lookup_at, **values))
    return bool(result.rowcount)


def expired_leases(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    """`sending` rows whose lease ran out: their holder died or hangs. Locked for the caller on PostgreSQL."""
    return list(conn.execute(
        select(touches).where(touches.c.state == TouchState.sending, touches.c.lease_until < now)
        .order_by(touches.c.lease_until).limit(limit).with_for_update(skip_locked=True)).mappings())


def live_leases(conn: Connection, now: datetime) -> int:
    return int(conn.execute(select(func.count()).select_from(touches).where(
        touches.c.state == TouchState.sending, touches.c.lease_until >= now)).scalar_one())


def due_count(conn: Connection, now: datetime, channels: Sequence[str] | None = None) -> int:
    """Rows that could be claimed now."""
    due = or_(touches.c.state == TouchState.queued,
              and_(touches.c.state == TouchState.deferred, touches.c.not_before <= now))
    conditions = [due]
    if channels is not None:
        conditions.append(touches.c.channel.in_(list(channels)))
    return int(conn.execute(select(func.count()).select_from(touches).where(*conditions)).scalar_one())


def expire_deferred(conn: Connection, now: datetime) -> int:
    """Deferred rows past their `expires_at` are dropped as suppressed/expired."""
    result = conn.execute(update(touches).where(
        touches.c.state == TouchState.deferred, touches.c.expires_at.is_not(None), touches.c.expires_at <= now)
        .values(state=TouchState.suppressed, reason="expired"))
    return int(result.rowcount or 0)


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


# --------------------------------------------------------------------------- reports

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


def release(conn: Connection, touch_id: str, state: TouchState, *, owner: str | None = None, **values: Any) -> bool:
    """Give a claimed row back (`queued` or `deferred`) without sending it; False if no longer ours."""
    conditions = [touches.c.touch_id == touch_id, touches.c.state == TouchState.sending]
    if owner is not None:
        conditions.append(touches.c.lease_owner == owner)
    result = conn.execute(update(touches).where(*conditions)
                          .values(state=state, lease_until=None, lease_owner=None, **values))
    return bool(result.rowcount)


def extend_lease(conn: Connection, touch_id: str, lease_until: datetime, owner: str) -> None:
    """Take over (or extend) the lease of a `sending` row."""
    conn.execute(update(touches).where(touches.c.touch_id == touch_id, touches.c.state == TouchState.sending)
                 .values(lease_until=lease_until, lease_owner=owner))


def unfinished_runs(conn: Connection, before: datetime) -> list[tuple[str, datetime]]:
    """Runs started before `before` and never finished (their process died): they are completed, never skipped."""
    rows = conn.execute(select(runs.c.playbook, runs.c.scheduled_for).where(
        runs.c.finished_at.is_(None), runs.c.scheduled_for <= before).order_by(runs.c.scheduled_for))
    return [(playbook, scheduled_for) for playbook, scheduled_for in rows]


def extend_leases(conn: Connection, touch_ids: Sequence[str], lease_until: datetime, owner: str) -> None:
    """Keep holding rows whose sends are still in flight (only ours, only while `sending`)."""
    conn.execute(update(touches).where(one_of(conn, touches.c.touch_id, touch_ids), touches.c.lease_owner == owner,
                                       touches.c.state == TouchState.sending).values(lease_until=lease_until))


# --------------------------------------------------------------------------- vendor tokens and pauses

def token_row(conn: Connection, key: str) -> RowMapping | None:
    return conn.execute(select(vendor_tokens).where(vendor_tokens.c.key == key)).mappings().first()


def claim_token_refresh(conn: Connection, key: str, owner: str, now: datetime, hold: timedelta) -> bool:
    """Become the one refresher of token `key` for `hold`; False while another replica holds it."""
    conn.execute(_insert(conn)(vendor_tokens).values(key=key, updated_at=now).on_conflict_do_nothing())
    result = conn.execute(update(vendor_tokens).where(
        vendor_tokens.c.key == key,
        or_(vendor_tokens.c.refreshing_until.is_(None), vendor_tokens.c.refreshing_until < now,
            vendor_tokens.c.refreshing_owner == owner))
        .values(refreshing_until=now + hold, refreshing_owner=owner))
    return bool(result.rowcount)


def store_token(conn: Connection, key: str, token: str, expires_at: datetime, now: datetime) -> None:
    conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key).values(
        token=token, expires_at=expires_at, refreshing_until=None, refreshing_owner=None, updated_at=now))


def release_token_refresh(conn: Connection, key: str, owner: str) -> None:
    conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key, vendor_tokens.c.refreshing_owner == owner)
                 .values(refreshing_until=None, refreshing_owner=None))


def invalidate_token(conn: Connection, key: str, bad_token: str) -> bool:
    """Forget token `key` only if it is still `bad_token`: a replica never discards another's fresh token."""
    result = conn.execute(update(vendor_tokens).where(vendor_tokens.c.key == key,
                                                      vendor_tokens.c.token == bad_token)
                          .values(token=None, expires_at=None))
    return bool(result.rowcount)


def pause_channel(conn: Connection, channel: str, code: str | None, reason: str, now: datetime,
                  resume_at: datetime) -> None:
    statement = _insert(conn)(channel_pauses).values(channel=channel, code=code, reason=reason, paused_at=now,
                                                     resume_at=resume_at)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[channel_pauses.c.channel],
        set_={"code": code, "reason": reason, "paused_at": now, "resume_at": resume_at}))


def resume_channel(conn: Connection, channel: str) -> bool:
    return bool(conn.execute(delete(channel_pauses).where(channel_pauses.c.channel == channel)).rowcount)


def channel_pauses_now(conn: Connection) -> dict[str, RowMapping]:
    return {row["channel"]: row for row in conn.execute(select(channel_pauses)).mappings()}


# --------------------------------------------------------------------------- receipts

def record_delivery(conn: Connection, *, touch_id: str | None, vendor_id: str | None, delivered: bool,
                    status: str, at: datetime | None, result: Mapping[str, Any] | None = None) -> str | None:
    """Record a delivery receipt on its touch (found by touch_id, else vendor_id); idempotent.

    Returns the touch_id it landed on, or None when no sent touch matches. A receipt that
    says the same thing again changes nothing.
    """
    if touch_id is not None:
        where = touches.c.touch_id == touch_id
    elif vendor_id is not None:
        where = touches.c.vendor_id == vendor_id
    else:
        return None
    row = conn.execute(select(touches.c.touch_id, touches.c.delivery, touches.c.delivery_status)
                       .where(where, touches.c.state.in_(("sent", "unknown"))).limit(1)).first()
    if row is None:
        return None
    delivery = "delivered" if delivered else "undelivered"
    if row.delivery == delivery and row.delivery_status == status:
        return str(row.touch_id)
    values: dict[str, Any] = {"delivery": delivery, "delivery_status": status, "delivered_at": at}
    if result:
        values["vendor_result"] = dict(result)
    conn.execute(update(touches).where(touches.c.touch_id == row.touch_id).values(**values))
    return str(row.touch_id)


def awaiting_receipts(conn: Connection, channel: str, since: datetime, limit: int = 1000) -> list[RowMapping]:
    """Sent touches of `channel` since `since` with no delivery result yet."""
    return list(conn.execute(select(touches).where(
        touches.c.channel == channel, touches.c.state == TouchState.sent, touches.c.delivery.is_(None),
        touches.c.sent_at >= since).order_by(touches.c.sent_at).limit(limit)).mappings())


def add_member_event(conn: Connection, event_id: str, member_id: str, type_: str, occurred_at: datetime,
                     attributes: Mapping[str, Any]) -> bool:
    """Insert an event (e.g. `ai_call_result`) once; False if that event id exists."""
    result = conn.execute(_insert(conn)(events).values(event_id=event_id, member_id=member_id, type=type_,
                                                       occurred_at=occurred_at, attributes=dict(attributes))
                          .on_conflict_do_nothing())
    return bool(result.rowcount)
