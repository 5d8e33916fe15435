"""The one interface every channel adapter implements, and the values that cross it.

An adapter turns a batch of `Touch`es into one `Outcome` per touch. Reachability is
decided by the engine (engine/reachability.py), never re-decided here. Adapters are
registered by name in `channels.ADAPTERS` and configured from the config file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import Field

from engine.grammar import GrammarModel


class OutcomeKind(StrEnum):
    """What happened to one touch at the vendor."""

    sent = "sent"  #: accepted; `vendor_id` identifies it
    not_sent = "not_sent"  #: `lookup` only: the vendor provably has no such message
    retry = "retry"  #: surely not accepted (throttled, refused before sending): may be sent again
    failed = "failed"  #: this touch failed for good (bad parameters, content rejected)
    failed_member = "failed_member"  #: the address is dead (invalid number, not a friend): suppress it
    channel_fatal = "channel_fatal"  #: credentials, balance, unapproved template: pause the channel
    unknown = "unknown"  #: may have been accepted: never resent blindly


@dataclass(frozen=True)
class Touch:
    """One message to one member on one channel, as decided and rendered by the engine."""

    touch_id: str  #: ≤ 15 ASCII characters: fits every vendor's correlation field
    playbook: str
    member_id: str
    channel: str
    occurrence: str
    message: dict[str, Any]  #: the rendered payload (text, template code and params, …)
    address: dict[str, Any]  #: phone, wecom ids, openid: whatever the channel needs
    offer: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """The result for one touch; `code` and `message` are the vendor's own."""

    touch_id: str
    kind: OutcomeKind
    vendor_id: str | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ChannelError(Exception):
    """A vendor call failed; `retryable` only when the vendor surely did not accept the message."""

    def __init__(self, message: str, *, retryable: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


@runtime_checkable
class Channel(Protocol):
    """**Protocol:** a channel adapter.

    `send` delivers a batch and returns exactly one `Outcome` per touch, in any order; it
    never resends by itself (the engine decides what is retried). `lookup` only reads: it
    settles touches whose send outcome is unknown, answering `sent`, `not_sent` (only when
    the vendor provably has no such message) or `unknown`.
    """

    name: str

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]: ...

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]: ...


class ChannelSettings(GrammarModel):
    """Settings every channel has; each adapter's own settings model extends this one.

    `cost` is yuan per touch (budgets and `siyu status` spend), `rate_per_second` and
    `concurrency` keep Siyu within the vendor's published limits.
    """

    adapter: str
    cost: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=4)] = Decimal(0)
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    concurrency: Annotated[int, Field(ge=1)] = 4
    batch_size: Annotated[int, Field(ge=1)] = 100
    """Touches handed to one `send` call (adapters may group them further)."""
