"""A ledger row and its member's contact, as the `Touch` an adapter is handed (for sends, lookups
and receipt pulls alike): the address is the channel's address fields, read as stored now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import RowMapping

from channels.base import Touch
from engine.grammar.addresses import ADDRESS_FIELDS


def touch_of(row: RowMapping, contact: Mapping[Any, Any] | None) -> Touch:
    """The touch of ledger row `row`, addressed from `contact` (a `ledger.contacts` row; None: no address)."""
    channel = row["channel"]
    address = {k: (contact or {}).get(k) for k in ADDRESS_FIELDS.get(channel, ())}
    return Touch(touch_id=row["touch_id"], playbook=row["playbook"], member_id=row["member_id"], channel=channel,
                 occurrence=row["occurrence"], message=row["message"] or {}, address=address, offer=row["offer"],
                 vendor_id=row.get("vendor_id"), claimed_at=row.get("claimed_at") or row.get("sent_at"),
                 provider=row.get("provider"))
