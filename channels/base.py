"""The one interface every channel adapter implements, and the values that cross it.

An adapter turns a batch of `Touch`es into one `Outcome` per touch. Reachability is
decided by the engine (engine/grammar/addresses.py), never re-decided here. Adapters are
registered by name in `channels.ADAPTERS` and configured from the config file.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Protocol, runtime_checkable

import certifi
import httpx
from pydantic import Field

from engine.clock import now as clock_now
from engine.grammar.policies import ClockTime, Duration, QuietWindow
from engine.grammar.values import GrammarModel


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
    vendor_id: str | None = None  #: set once sent: the vendor's id for it (for receipts and lookups)
    claimed_at: datetime | None = None  #: when its latest send began, when the engine knows it
    provider: str | None = None  #: the adapter that sent it (or tried to), when the engine knows it


@dataclass(frozen=True)
class Outcome:
    """The result for one touch; `code` and `message` are the vendor's own."""

    touch_id: str
    kind: OutcomeKind
    vendor_id: str | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None  #: the adapter that answered (set by channels whose touches go to one of several)


NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before the request left this host: the vendor surely did not accept it."""

CONNECT_FAILED = "ConnectFailed"
"""`Outcome.code` of a `retry` whose request never left this host (the vendor is down or unreachable)."""


def not_connected(touch_id: str, exc: Exception) -> Outcome:
    """The outcome of a send whose connection failed: surely not accepted, so it may be retried."""
    return Outcome(touch_id, OutcomeKind.retry, code=CONNECT_FAILED, message=f"{type(exc).__name__}: {exc}".rstrip(": "))


@dataclass(frozen=True)
class Receipt:
    """A vendor's word on delivery: found by our `touch_id` (OutId, SessionContext, client_msg_id,
    referenceId) or, failing that, by the `vendor_id` returned at send time."""

    touch_id: str | None
    vendor_id: str | None
    delivered: bool
    status: str  #: the vendor's own status code or text
    at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)  #: e.g. call outcome: answered, duration_s, intent
    address: str | None = None  #: whom the vendor says it reached (phone, openid): a push's must be the member's


@dataclass(frozen=True)
class Reply:
    """A member's SMS reply (上行), e.g. 退订."""

    phone: str
    text: str
    at: datetime | None = None


@dataclass(frozen=True)
class Inbound:
    """What a receipt pull or a vendor push brought: delivery receipts and SMS replies."""

    receipts: list[Receipt] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)


@runtime_checkable
class TokenStore(Protocol):
    """**Protocol:** where vendor access tokens are kept for every worker and replica (the engine's ledger).

    A token is stored under a key per vendor credential (`wecom:<corp id>`). At most one owner
    holds the claim to refresh a key at a time, so the vendor is asked once. Each method is
    one committed transaction and blocks: adapters call it in a thread, off the event loop.
    """

    def read_token(self, key: str) -> tuple[str, datetime] | None:
        """The token stored under `key` and when it expires (aware), or None while none is stored."""
        ...

    def claim_refresh(self, key: str, owner: str, now: datetime, hold: timedelta) -> bool:
        """Make `owner` the one refresher of `key` until `now + hold`; False while another owner's claim
        has not run out (it is refreshing: wait for its token rather than ask the vendor too)."""
        ...

    def store_token(self, key: str, token: str, expires_at: datetime, now: datetime) -> None:
        """Store `key`'s new `token`, valid until `expires_at`, and end any claim on it."""
        ...

    def release_refresh(self, key: str, owner: str) -> None:
        """End `owner`'s claim on `key` without storing a token (its refresh failed); a no-op if
        the claim is no longer `owner`'s."""
        ...

    def invalidate_token(self, key: str, bad: str) -> bool:
        """Forget `key`'s token only if it is still `bad` (the vendor said it expired), so no owner ever
        discards another's fresh token; True if it was forgotten."""
        ...


@dataclass(frozen=True)
class ChannelContext:
    """What the engine lends an adapter: the shared token store and the clock."""

    store: TokenStore | None = None  #: None: tokens are kept in this process only
    clock: Callable[[], datetime] | None = None

    def now(self) -> datetime:
        """The engine's clock, else the real one (UTC): what every adapter reads as now."""
        return self.clock() if self.clock else clock_now()


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


MessageCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]
"""(rendered message, address) → the vendor rule the message breaks, or None when the vendor may take it."""


@runtime_checkable
class ChecksMessages(Protocol):
    """**Protocol:** an adapter class that knows, without calling its vendor, messages its vendor refuses.

    `message_check` is called on the class (not an instance) with the channel's settings and
    returns a `MessageCheck`: it opens no connection and reads nothing but the settings and the
    message. It judges the message and the form of its address (one callee, a template the
    account has), never whether the member is reachable (the engine decides that). The engine
    applies it when it decides (a broken rule is `suppressed/invalid_message`, the rule in
    `why`), and the adapter's `send` applies the same function again as a last guard (a
    `failed` outcome, the vendor never called).
    """

    def message_check(self, settings: Any) -> MessageCheck: ...


@runtime_checkable
class ReceiptSource(Protocol):
    """**Protocol:** an adapter whose vendor offers a pull API for receipts and replies.

    `pull` only reads; it returns what the vendor reports for `touches` (sent rows still
    waiting for a delivery result) and any SMS replies since `since`. The engine applies
    them idempotently.
    """

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound: ...


@runtime_checkable
class Groups(Protocol):
    """**Protocol:** an adapter whose one vendor request may carry several touches (a WeCom task).

    `group_key` is equal for touches that one request may carry. The dispatcher puts a claimed
    batch's touches with one key next to each other (keys in the order they first appear) before
    it cuts the batch into `send` calls, so they share as few requests as the calls allow. That
    changes only which `send` call carries a touch, never whether or how often it is sent.
    """

    def group_key(self, touch: Touch) -> Hashable: ...


@runtime_checkable
class KeepsConnections(Protocol):
    """**Protocol:** an adapter that can keep its HTTP connections from one call to the next.

    `open()`, called on the event loop that will use the adapter, starts keeping them;
    `aclose()` stops: idle connections are closed at once, those of calls still in flight when
    the call ends (it is never cut short). Without `open()`, each call makes its own and closes
    them. The dispatcher opens the adapters it sends through and closes them when it is done.
    """

    def open(self) -> None: ...

    async def aclose(self) -> None: ...


@cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context (certifi's CA bundle, as httpx uses) for the whole process: httpx
    would build one per client, and building one costs 20–100 ms."""
    return ssl.create_default_context(cafile=certifi.where())


class HttpClients:
    """An adapter's HTTP clients, kept between `open()` and `aclose()` (see `KeepsConnections`).

    A call takes an idle client (or makes one) and gives it back, so connections and the TLS
    context outlive a batch. One client per call in flight rather than one for all: httpcore's
    pool does work per request that grows with its connections, and one client shared by every
    slice in flight cost more CPU per SMS than a new client per slice. Clients belong to the
    event loop that opened them; on any other loop (each `asyncio.run`) a call makes its own.
    """

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._idle: list[httpx.AsyncClient] = []
        self._loop: asyncio.AbstractEventLoop | None = None  #: the loop it is open on; None: closed

    @classmethod
    def verified(cls, *, timeout: float, base_url: str = "") -> HttpClients:
        """What every adapter uses: clients with `timeout` seconds per request, verifying TLS with
        the process's `tls_context()`, and `base_url` for relative paths."""
        return cls(lambda: httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=tls_context()))

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._idle = []  # left open on a loop that has ended: unusable here
        self._loop = loop

    async def aclose(self) -> None:
        self._loop = None
        idle, self._idle = self._idle, []
        for client in idle:
            await client.aclose()

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client for one call: a kept one while open on this loop, else one closed after the call."""
        loop = asyncio.get_running_loop()
        client = self._idle.pop() if self._loop is loop and self._idle else self._make()
        try:
            yield client
        finally:
            if self._loop is loop and not client.is_closed:
                self._idle.append(client)
            else:
                await client.aclose()


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
    base_url: str | None = None
    """The vendor's endpoint (default: the real one); tests point it at a local fake."""
    timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds per vendor request."""
    pause_for: Duration = timedelta(minutes=10)
    """After a channel-fatal answer (credentials, balance), wait this long, then probe with one send."""
    send_window: tuple[ClockTime, ClockTime] | None = None
    """Local hours [start, end) in which the vendor takes these messages (marketing SMS: 08:00–22:00,
    Beijing time, read in the config's timezone); outside them touches wait (deferred), like quiet hours."""

    @property
    def vendor_quiet_hours(self) -> QuietWindow | None:
        """The complement of `send_window`, as a quiet-hours window."""
        return None if self.send_window is None else (self.send_window[1], self.send_window[0])
