"""Receipts, unsubscribe replies and call outcomes land on the ledger once, whatever the vendor repeats."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from scenario import add_member
from sqlalchemy import Engine, insert, select

from channels.base import Inbound, Receipt, Reply
from engine import ledger
from engine.run.receipts import ReceiptBook, is_unsubscribe
from engine.store.schema import events, suppressions, touches

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def _sent_touch(db: Engine, touch_id: str, member_id: str, channel: str = "sms") -> None:
    with db.begin() as conn:
        add_member(conn, member_id, phone="13812345678")
        conn.execute(insert(touches).values(
            touch_id=touch_id, playbook="p", member_id=member_id, occurrence="o", state="sent", channel=channel,
            decided_at=NOW, touch_at=NOW, sent_at=NOW, vendor_id=f"biz-{touch_id}"))


def _touch(db: Engine, touch_id: str) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(select(touches).where(touches.c.touch_id == touch_id)).mappings().one())


def test_receipts__pushed_three_times_changes_nothing_after_the_first(db: Engine) -> None:
    """A delivery receipt pushed three times records `delivered` once; the 2nd and 3rd change nothing."""
    _sent_touch(db, "T1", "M1")
    book = ReceiptBook(db)
    receipt = Receipt("T1", None, True, "DELIVRD", NOW)
    assert book.apply(Inbound(receipts=[receipt]))["receipts"] == 1
    first = _touch(db, "T1")
    for _ in range(2):
        book.apply(Inbound(receipts=[receipt]))
    assert _touch(db, "T1") == first
    assert (first["delivery"], first["delivery_status"]) == ("delivered", "DELIVRD")


def test_receipts__found_by_vendor_id_when_no_touch_id(db: Engine) -> None:
    """A receipt without our correlation id is matched by the vendor id recorded at send time."""
    _sent_touch(db, "T2", "M2")
    counts = ReceiptBook(db).apply(Inbound(receipts=[Receipt(None, "biz-T2", False, "MOBILE_NOT_ON_SERVICE", NOW)]))
    assert counts["receipts"] == 1
    assert _touch(db, "T2")["delivery"] == "undelivered"


def test_receipts__unknown_touch_is_counted_not_invented(db: Engine) -> None:
    """A receipt for a touch we never sent changes no row."""
    counts = ReceiptBook(db).apply(Inbound(receipts=[Receipt("TNOPE", None, True, "DELIVRD", NOW)]))
    assert counts == {"receipts": 0, "unmatched": 1, "inconsistent": 0, "replies": 0, "unsubscribed": 0,
                      "call_results": 0}


@pytest.mark.parametrize("text", ["退订", " t ", "TD", "r", "N"])
def test_receipts__unsubscribe_reply_suppresses_the_number(db: Engine, text: str) -> None:
    """An SMS reply such as 退订 adds an SMS suppression for that number, once."""
    book = ReceiptBook(db)
    for _ in range(2):
        book.apply(Inbound(replies=[Reply("13812345678", text, NOW)]))
    with db.connect() as conn:
        rows = conn.execute(select(suppressions.c.phone, suppressions.c.channel, suppressions.c.source)).all()
        blocked = ledger.suppressed_channels(conn, [("M9", "13812345678")])
    assert [tuple(r) for r in rows] == [("13812345678", "sms", "reply")]
    assert blocked["M9"] == {"sms"}


def test_receipts__other_replies_suppress_nothing(db: Engine) -> None:
    """A reply that is not an unsubscribe keyword ("谢谢", "TDX") adds no suppression."""
    ReceiptBook(db).apply(Inbound(replies=[Reply("13812345678", "谢谢", NOW), Reply("13812345678", "TDX", NOW)]))
    with db.connect() as conn:
        assert conn.execute(select(suppressions)).all() == []
    assert not is_unsubscribe("请不要退订")


def test_receipts__call_outcome_is_kept_and_becomes_a_member_event(db: Engine) -> None:
    """An AI call's outcome is stored on the touch and written once as an `ai_call_result` event."""
    _sent_touch(db, "T3", "M3", channel="ai_call")
    details = {"answered": True, "duration_s": 42, "hangup_by": "callee", "intent": "interested"}
    book = ReceiptBook(db)
    for _ in range(2):
        book.apply(Inbound(receipts=[Receipt("T3", None, True, "200000", NOW, details)]))
    assert _touch(db, "T3")["vendor_result"] == details
    with db.connect() as conn:
        rows = conn.execute(select(events.c.member_id, events.c.type, events.c.attributes)).all()
    assert len(rows) == 1
    assert (rows[0].member_id, rows[0].type) == ("M3", "ai_call_result")
    assert rows[0].attributes["intent"] == "interested"


class _PullingVendor:
    """A vendor with a pull API: reports delivery for every touch it is asked about, and one reply."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def pull(self, touches: list, since: datetime) -> Inbound:
        self.asked += [t.touch_id for t in touches]
        return Inbound(receipts=[Receipt(t.touch_id, None, True, "DELIVRD", NOW) for t in touches],
                       replies=[Reply("13900000000", "退订", NOW)])


def test_receipts__pull_all_asks_only_for_touches_still_waiting(db: Engine) -> None:
    """The periodic pull asks each pulling adapter about sent touches without a result, and applies the answers."""
    import asyncio

    from engine.run.receipts import pull_all

    _sent_touch(db, "T5", "M5")
    vendor = _PullingVendor()
    first = asyncio.run(pull_all(db, {"sms": vendor, "wecom": object()}, NOW))
    assert vendor.asked == ["T5"]
    assert (first["receipts"], first["unsubscribed"]) == (1, 1)
    assert _touch(db, "T5")["delivery"] == "delivered"
    asyncio.run(pull_all(db, {"sms": vendor}, NOW))
    assert vendor.asked == ["T5"], "a touch with a delivery result is not asked about again"
