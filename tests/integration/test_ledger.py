"""The touch ledger: states, touch ids, recording, claiming, and settling abandoned sends, on both databases."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from daemonkit import Brand, scheduled, seed, touch_row
from scenario import AT, PHONE, add_event, add_member
from sqlalchemy import CheckConstraint, event, insert
from sqlalchemy.exc import IntegrityError

from channels.log import LogChannel
from engine import ledger
from engine.ledger import TouchState, touch_id_for
from engine.store.connect import write_transaction
from engine.store.schema import touches

LEASE = timedelta(minutes=5)


@pytest.fixture
def brand(db_url: str, tmp_path: Path) -> Iterator[Brand]:
    brand = Brand(tmp_path, db_url)
    brand.configure(policies={"frequency": [], "quiet_hours": {}})
    brand.add_playbook(scheduled("p", "0 10 * * *"))
    yield brand
    brand.close()


def _check_values(column: str) -> tuple[str, ...]:
    """The values a CHECK constraint of engine/store/schema.py allows for `column` (`column IN ('a', 'b', …)`)."""
    (text,) = [str(c.sqltext) for c in touches.constraints
               if isinstance(c, CheckConstraint) and str(c.sqltext).startswith(f"{column} IN")]
    return tuple(re.findall(r"'([a-z_]+)'", text))


def test_touch_state__mirrors_the_check_constraint(brand: Brand) -> None:
    """TouchState has exactly the values the touches.state CHECK constraint allows, and the database agrees."""
    assert tuple(TouchState) == _check_values("state")
    with brand.engine.begin() as conn:
        add_member(conn, "M1", phone=PHONE)
    seed(brand.engine, *(touch_row("p", "M1", f"o-{state}", state, AT) for state in TouchState))
    with pytest.raises(IntegrityError), brand.engine.begin() as conn:
        conn.execute(insert(touches), [touch_row("p", "M1", "o-bogus", "delivered", AT)])


def test_touch_id_for__short_ascii_and_stable(brand: Brand) -> None:
    """A touch id is at most 15 ASCII characters, the same for the same key, and differs between keys."""
    one = touch_id_for("pet-milk-refill", "M000001", "2026-11-22T02:00:00+00:00")
    assert one == touch_id_for("pet-milk-refill", "M000001", "2026-11-22T02:00:00+00:00")
    assert one == "TYO62PCBYRGJ44O"  # pinned: rows in flight are looked up by this id after an upgrade
    assert len(one) <= 15 and one.isascii() and one.isalnum()
    keys = [("a", "b c", "o"), ("a b", "c", "o"), ("p", "m", "o1"), ("p", "m", "o2"), ("p", "会员", "o")]
    ids = [touch_id_for(*key) for key in keys]
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= 15 and i.isascii() for i in ids)


def test_record__same_key_twice_keeps_one_row(brand: Brand) -> None:
    """Recording the same (playbook, member, occurrence) twice keeps the first row and reports one new row."""
    first = touch_row("p", "M1", "occ-1", "queued", AT)
    again = touch_row("p", "M1", "occ-1", "suppressed", AT + timedelta(hours=1), reason="cooldown")
    other = touch_row("p", "M1", "occ-2", "queued", AT)
    with write_transaction(brand.engine) as conn:
        assert ledger.record(conn, [first]) == 1
    with write_transaction(brand.engine) as conn:
        assert ledger.record(conn, [again, other]) == 1
    rows = brand.touches(member_id="M1")
    assert [(r["occurrence"], r["state"], r["reason"]) for r in rows] == sorted(
        [("occ-1", "queued", None), ("occ-2", "queued", None)], key=lambda r: touch_id_for("p", "M1", r[0]))


def test_claim_batch__due_rows_become_sending_under_a_lease(brand: Brand) -> None:
    """Queued and due deferred rows are claimed under a lease; a deferred row waits for its not_before."""
    later = AT + timedelta(hours=3)
    seed(brand.engine,
         touch_row("p", "Q", "o", "queued", AT),
         touch_row("p", "DUE", "o", "deferred", AT - timedelta(minutes=1),
                   not_before=AT - timedelta(minutes=1)),
         touch_row("p", "WAIT", "o", "deferred", later, not_before=later),
         touch_row("p", "SENT", "o", "sent", AT),
         touch_row("p", "WECOM", "o", "queued", AT, channel="wecom"))
    with write_transaction(brand.engine) as conn:
        claimed = ledger.claim_batch(conn, "sms", AT, 10, LEASE, "me")
    assert sorted(r["member_id"] for r in claimed) == ["DUE", "Q"]
    assert {(r["state"], r["lease_until"], r["lease_owner"], r["attempts"]) for r in claimed} == {
        ("sending", AT + LEASE, "me", 1)}
    assert brand.touches(member_id="WAIT")[0]["state"] == "deferred"
    with write_transaction(brand.engine) as conn:
        assert ledger.claim_batch(conn, "sms", later - timedelta(seconds=1), 10, LEASE, "me") == []
    with write_transaction(brand.engine) as conn:
        assert [r["member_id"] for r in ledger.claim_batch(conn, "sms", later, 10, LEASE, "me")] == ["WAIT"]


def test_due_count__counts_exactly_what_a_claim_takes(brand: Brand) -> None:
    """due_count of a channel is the number of rows a claim of that channel would take at that time."""
    later = AT + timedelta(hours=3)
    seed(brand.engine,
         touch_row("p", "Q", "o", "queued", AT),
         touch_row("p", "DUE", "o", "deferred", AT, not_before=AT - timedelta(minutes=1)),
         touch_row("p", "WAIT", "o", "deferred", AT, not_before=later),
         touch_row("p", "SENT", "o", "sent", AT),
         touch_row("p", "SENDING", "o", "sending", AT, lease_until=AT + LEASE, lease_owner="other"),
         touch_row("p", "WECOM", "o", "queued", AT, channel="wecom"))
    with brand.engine.connect() as conn:
        assert (ledger.due_count(conn, "sms", AT), ledger.due_count(conn, "sms", later)) == (2, 3)
        assert ledger.due_count(conn, "wecom", AT) == 1
    with write_transaction(brand.engine) as conn:
        assert len(ledger.claim_batch(conn, "sms", later, 10, LEASE, "me")) == 3
    with brand.engine.connect() as conn:
        assert ledger.due_count(conn, "sms", later) == 0


def test_claim_batch__limit_and_priority_order(brand: Brand) -> None:
    """A batch takes at most `limit` rows, higher priority first; the rest stay queued for the next batch."""
    seed(brand.engine, *(touch_row("low", f"M{i}", "o", "queued", AT, priority=10) for i in range(3)),
         touch_row("high", "M9", "o", "queued", AT + timedelta(minutes=5), priority=90))
    with write_transaction(brand.engine) as conn:
        first = ledger.claim_batch(conn, "sms", AT + timedelta(minutes=5), 2, LEASE, "me")
    assert [(r["playbook"], r["member_id"]) for r in first] == [("high", "M9"), ("low", "M0")]
    assert Counter(r["state"] for r in brand.touches()) == {"sending": 2, "queued": 2}


def test_claim_batch__reads_its_batch_from_the_claim_index(brand: Brand) -> None:
    """The claim's candidates come from ix_touches_claim in claim order, without sorting every queued row."""
    seed(brand.engine, *(touch_row("p", f"M{i}", "o", "queued", AT) for i in range(3)))
    sent: list[tuple[str, object]] = []

    def grab(conn: object, cursor: object, statement: str, parameters: object, *rest: object) -> None:
        if "FOR UPDATE" in statement or ("ORDER BY" in statement and "LIMIT" in statement):
            sent.append((statement, parameters))

    event.listen(brand.engine, "before_cursor_execute", grab)
    try:
        with write_transaction(brand.engine) as conn:
            assert len(ledger.claim_batch(conn, "sms", AT, 2, LEASE, "me")) == 2
    finally:
        event.remove(brand.engine, "before_cursor_execute", grab)
    statement, parameters = sent[0]
    with brand.engine.connect() as conn:
        if brand.engine.dialect.name == "postgresql":  # a tiny table: make the planner show whether it can
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
        else:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
    text = "\n".join(plan)
    assert "ix_touches_claim" in text and "Sort" not in text and "TEMP B-TREE" not in text, text


def test_claim_batch__two_claimers_never_share_a_row(brand: Brand) -> None:
    """Two claimers take disjoint rows: on PostgreSQL the second skips the rows the first holds locked."""
    seed(brand.engine, *(touch_row("p", f"M{i}", "o", "queued", AT) for i in range(5)))
    if brand.engine.dialect.name == "postgresql":
        with write_transaction(brand.engine) as first:
            mine = ledger.claim_batch(first, "sms", AT, 2, LEASE, "one")
            with write_transaction(brand.engine) as second:  # while the first has not committed
                theirs = ledger.claim_batch(second, "sms", AT, 10, LEASE, "two")
    else:  # SQLite: one writer at a time (BEGIN IMMEDIATE), so the claims are serialised
        with write_transaction(brand.engine) as first:
            mine = ledger.claim_batch(first, "sms", AT, 2, LEASE, "one")
        with write_transaction(brand.engine) as second:
            theirs = ledger.claim_batch(second, "sms", AT, 10, LEASE, "two")
    assert (len(mine), len(theirs)) == (2, 3)
    assert {r["touch_id"] for r in mine}.isdisjoint({r["touch_id"] for r in theirs})
    assert Counter(r["lease_owner"] for r in brand.touches()) == {"one": 2, "two": 3}


def test_settle_many__only_the_lease_owner_settles_each_row_with_its_own_values(brand: Brand) -> None:
    """One statement settles a slice: rows `me` holds get their own values; a row another sender now
    holds, or one already settled, is left as it is."""
    lease = {"lease_until": AT + LEASE, "attempts": 1}
    seed(brand.engine, touch_row("p", "M1", "o", "sending", AT, lease_owner="me", **lease),
         touch_row("p", "M2", "o", "sending", AT, lease_owner="me", **lease),
         touch_row("p", "TAKEN", "o", "sending", AT, lease_owner="other", **lease),
         touch_row("p", "DONE", "o", "sent", AT, lease_owner="me", vendor_id="first"))
    later = AT + timedelta(minutes=1)
    rows = [{"touch_id": touch_id_for("p", m, "o"), "sent_at": later, "vendor_id": f"biz-{m}"}
            for m in ("M1", "M2", "TAKEN", "DONE")]
    with write_transaction(brand.engine) as conn:
        assert ledger.settle_many(conn, TouchState.sent, "me", rows) == 2
    got = {r["member_id"]: (r["state"], r["vendor_id"], r["sent_at"], r["lease_until"]) for r in brand.touches()}
    assert got == {"M1": ("sent", "biz-M1", later, None), "M2": ("sent", "biz-M2", later, None),
                   "TAKEN": ("sending", None, None, AT + LEASE), "DONE": ("sent", "first", None, None)}


def _abandoned(brand: Brand, *member_ids: str, lease_until: object) -> list[str]:
    """`sending` rows of a sender that died (owner `dead`), for members with phones."""
    with brand.engine.begin() as conn:
        for member_id in member_ids:
            add_member(conn, member_id, phone=PHONE)
    rows = [touch_row("p", m, "o", "sending", AT - timedelta(minutes=10), lease_until=lease_until,
                      lease_owner="dead", attempts=1) for m in member_ids]
    seed(brand.engine, *rows)
    return [r["touch_id"] for r in rows]


def test_reconcile__expired_lease_found_in_the_log_is_sent_not_resent(brand: Brand) -> None:
    """An expired `sending` row whose line is in the log file is settled `sent`, and the file keeps one line."""
    (written,) = _abandoned(brand, "M1", lease_until=AT - timedelta(minutes=1))
    brand.log_path.write_text(f'{{"touch_id": "{written}", "member_id": "M1"}}\n')
    brand.dispatch(AT)
    (row,) = brand.touches()
    assert (row["state"], row["vendor_id"], row["sent_at"]) == ("sent", f"log:{written}", AT)
    assert [line["touch_id"] for line in brand.logged()] == [written]


def test_reconcile__expired_lease_missing_from_the_log_is_requeued_then_sent_once(brand: Brand) -> None:
    """An expired `sending` row absent from the log is provably not sent: it is queued again and sent once."""
    (missing,) = _abandoned(brand, "M1", lease_until=AT - timedelta(minutes=1))
    brand.dispatch(AT)
    brand.dispatch(AT + timedelta(minutes=30))
    (row,) = brand.touches()
    assert (row["state"], row["attempts"]) == ("sent", 2)
    assert [line["touch_id"] for line in brand.logged()] == [missing]


def test_reconcile__unanswered_lookup_leaves_the_row_unknown_never_resent(brand: Brand,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """When lookup cannot answer, an expired `sending` row becomes `unknown` for the operator and is not resent."""
    _abandoned(brand, "M1", lease_until=AT - timedelta(minutes=1))

    async def no_answer(self: LogChannel, batch: object) -> list[object]:
        raise OSError("log file unreadable")

    monkeypatch.setattr(LogChannel, "lookup", no_answer)
    brand.dispatch(AT)
    brand.dispatch(AT + timedelta(hours=1))
    (row,) = brand.touches()
    assert (row["state"], row["error_code"]) == ("unknown", "OSError")
    assert brand.logged() == []


def test_reconcile__live_lease_is_left_to_its_holder(brand: Brand) -> None:
    """A `sending` row under a live lease is neither looked up, nor taken over, nor sent by another tick."""
    _abandoned(brand, "M1", lease_until=AT + timedelta(minutes=1))
    brand.tick(AT)
    (row,) = brand.touches()
    assert (row["state"], row["lease_owner"], row["lease_until"]) == ("sending", "dead", AT + timedelta(minutes=1))
    assert brand.logged() == []


def test_claim_has_work__only_what_a_claim_would_take_or_expire(brand: Brand) -> None:
    """An idle dispatcher asks before it locks: nothing, a sent row or a deferred row still
    waiting is no work; a queued row, a due deferred row or an expired deferred row is."""
    later = AT + timedelta(hours=3)
    with brand.engine.connect() as conn:
        assert not ledger.claim_has_work(conn, "sms", AT)
    seed(brand.engine, touch_row("p", "SENT", "o", "sent", AT),
         touch_row("p", "WAIT", "o", "deferred", AT, not_before=later, expires_at=later + timedelta(hours=1)))
    with brand.engine.connect() as conn:
        assert not ledger.claim_has_work(conn, "sms", AT)
        assert ledger.claim_has_work(conn, "sms", later)  # its not_before has come
        assert ledger.claim_has_work(conn, "wecom", later + timedelta(hours=1))  # expired: to be dropped
    seed(brand.engine, touch_row("p", "Q", "o", "queued", AT, channel="wecom"))
    with brand.engine.connect() as conn:
        assert ledger.claim_has_work(conn, "wecom", AT) and not ledger.claim_has_work(conn, "sms", AT)


def test_event_types_between__one_probe_per_type_in_the_window(brand: Brand) -> None:
    """Types with an event in (after, until], and only those."""
    with brand.engine.begin() as conn:
        add_member(conn, "M1")
        add_event(conn, "M1", "order_created", AT - timedelta(minutes=40))
        add_event(conn, "M1", "signed_up", AT - timedelta(days=2))
    with brand.engine.connect() as conn:
        found = ledger.event_types_between(conn, ["order_created", "signed_up", "page_view"],
                                           AT - timedelta(hours=1), AT)
        assert found == {"order_created"}
        assert ledger.event_types_between(conn, ["order_created"], AT - timedelta(minutes=40), AT) == set()
