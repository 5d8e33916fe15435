"""Receipts, replies and call outcomes, pulled or pushed, applied to the ledger exactly once in effect.

- A delivery receipt sets `delivery` (delivered / undelivered) and the vendor's status on
  its touch; the same receipt again changes nothing.
- An SMS reply that unsubscribes (`T`, `TD`, `R`, `N`, `退订` by default: trimmed,
  case-insensitive; configurable) adds an SMS suppression for that number at once, normalised
  (`engine.grammar.addresses.mainland_mobile`) so it matches the member whatever spelling the
  vendor reports and the member was imported with.
- An AI call's outcome (answered, duration, who hung up, intent) is kept on the touch and
  written as a member event `ai_call_result`, so a playbook can follow up.

A pushed receipt must also be consistent with what it lands on (`PushOrigin`): the touch was
sent on the route's channel through the route's adapter, and the number (or openid) the
vendor reports is the member's current one. Anything else is counted `inconsistent` and
changes nothing: a forged or misdirected receipt cannot flip a delivery or create an
`ai_call_result` event. Pulled receipts answer our own query for our own touches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.engine import RowMapping

from channels.base import Inbound, Receipt, ReceiptSource, Reply
from engine import ledger
from engine.clock import now as clock_now
from engine.grammar.addresses import REACH, mainland_mobile, masked
from engine.logs import log
from engine.run.touches import touch_of
from engine.store.connect import write_transaction
from engine.store.schema import touches

DEFAULT_UNSUBSCRIBE = ("T", "TD", "R", "N", "退订")


def is_unsubscribe(text: str, keywords: Iterable[str] = DEFAULT_UNSUBSCRIBE) -> bool:
    """True when the reply, trimmed and case-insensitive, is one of the unsubscribe keywords."""
    reply = text.strip().casefold()
    return any(reply == keyword.strip().casefold() for keyword in keywords)


@dataclass(frozen=True)
class PushOrigin:
    """The route a push came in on, and the touches its receipts may land on."""

    route: str
    senders: frozenset[tuple[str, str | None]]
    """(channel, provider) of the touches this route's adapter sends, as the ledger records them
    (`provider` is None for a channel without a fallback)."""

    def admits(self, target: RowMapping, address: str | None) -> bool:
        """True when the receipt reached the touch's member through this route's adapter."""
        channel = str(target["channel"])
        if (channel, target["provider"]) not in self.senders or channel not in REACH or address is None:
            return False
        reach = REACH[channel]
        field = reach.address[0]
        pushed = mainland_mobile(address) if field in reach.mobile else address
        return pushed is not None and pushed == target[field]


@dataclass
class ReceiptBook:
    """Applies what vendors report about touches and members."""

    engine: Engine
    unsubscribe: Sequence[str] = DEFAULT_UNSUBSCRIBE
    clock: Callable[[], datetime] = clock_now

    def apply(self, inbound: Inbound, origin: PushOrigin | None = None) -> dict[str, int]:
        """Apply receipts and replies in one transaction; counts of what changed. Receipts pushed
        through `origin` apply only where it `admits` them (else counted `inconsistent`)."""
        counts = {"receipts": 0, "unmatched": 0, "inconsistent": 0, "replies": len(inbound.replies),
                  "unsubscribed": 0, "call_results": 0}
        with write_transaction(self.engine) as conn:
            for reply in inbound.replies:
                counts["unsubscribed"] += self._reply(conn, reply)
            for receipt in inbound.receipts:
                touch_id: str | None = receipt.touch_id
                if origin is not None:
                    target = ledger.receipt_target(conn, touch_id=receipt.touch_id, vendor_id=receipt.vendor_id)
                    if target is None:
                        counts["unmatched"] += 1
                        continue
                    if not origin.admits(target, receipt.address):
                        counts["inconsistent"] += 1
                        continue
                    touch_id = str(target["touch_id"])
                touch_id = ledger.record_delivery(conn, touch_id=touch_id, vendor_id=receipt.vendor_id,
                                                  delivered=receipt.delivered, status=receipt.status,
                                                  at=receipt.at, result=receipt.details or None)
                if touch_id is None:
                    counts["unmatched"] += 1
                    continue
                counts["receipts"] += 1
                if receipt.details and "answered" in receipt.details:
                    counts["call_results"] += self._call_result(conn, touch_id, receipt)
        return counts

    def _reply(self, conn: Connection, reply: Reply) -> int:
        if not is_unsubscribe(reply.text, self.unsubscribe):
            return 0
        phone = mainland_mobile(reply.phone) or reply.phone
        added = ledger.add_suppression(conn, member_id=None, phone=phone, channel="sms",
                                       reason=f"SMS reply {reply.text.strip()!r}", source="reply", now=self.clock())
        if added:
            log.info("suppression.added", phone=masked(phone), channel="sms", source="reply")
        return int(added)

    def _call_result(self, conn: Connection, touch_id: str, receipt: Receipt) -> int:
        row = conn.execute(select(touches.c.member_id).where(touches.c.touch_id == touch_id)).first()
        if row is None:
            return 0
        attributes = {"touch_id": touch_id, "status": receipt.status, **receipt.details}
        return int(ledger.add_member_event(conn, f"call-{touch_id}", row.member_id, "ai_call_result",
                                           receipt.at or self.clock(), attributes))


def _awaiting(engine: Engine, channel: str, since: datetime) -> list[Any]:
    """Sent touches of `channel` still waiting for a receipt, with their addresses."""
    with engine.connect() as conn:
        rows = ledger.awaiting_receipts(conn, channel, since)
        contacts = ledger.contacts(conn, [r["member_id"] for r in rows])
    return [touch_of(r, contacts.get(r["member_id"])) for r in rows]


async def pull_all(engine: Engine, channels: Mapping[str, object], now: datetime,
                   lookback: timedelta = timedelta(days=3), unsubscribe: Sequence[str] = DEFAULT_UNSUBSCRIBE
                   ) -> dict[str, int]:
    """Ask every adapter with a pull API for the receipts of touches still waiting for one (and for
    SMS replies), and apply them. Run periodically by the daemon and at the end of every `tick`."""
    book = ReceiptBook(engine, unsubscribe)
    totals: dict[str, int] = {}
    since = now - lookback
    for name, channel in channels.items():
        if not isinstance(channel, ReceiptSource):
            continue
        touches = await asyncio.to_thread(_awaiting, engine, name, since)
        try:
            inbound = await channel.pull(touches, since)
        except Exception as exc:  # noqa: BLE001 - a vendor outage must not stop the daemon: try again next time
            log.warning("receipts.pull_failed", channel=name, error=f"{type(exc).__name__}: {exc}")
            continue
        for key, value in (await asyncio.to_thread(book.apply, inbound)).items():
            totals[key] = totals.get(key, 0) + value
    return totals
