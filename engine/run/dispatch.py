"""Dispatch: claim → check → send → record, at most once per ledger row.

1. claim: due rows become `sending` under a lease, and the opt-outs, the caps and the quiet
   hours are checked again right before sending (the playbook's ContactPolicy, through
   engine.decide.contact_policy.ClaimCheck), in one committed transaction;
2. send: the batch is cut into `send` calls of the channel's `batch_size` (touches one vendor
   request may carry put side by side first), within the channel's rate limit and concurrency;
   outcomes that surely were not accepted (`retry`) are retried with exponential backoff
   and jitter, up to `dispatch.max_attempts`;
3. record: each outcome is written in a transaction shielded from cancellation.

Rows whose lease ran out (their holder died, or the vendor's answer was lost) are settled by
the adapter's `lookup`: only an authoritative `not_sent` puts a row back in the queue;
`unknown` is shown to the operator.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from channels.base import (
    Channel,
    ChannelError,
    ChannelSettings,
    Groups,
    KeepsConnections,
    Outcome,
    OutcomeKind,
    Touch,
)
from engine import ledger
from engine.clock import now as clock_now
from engine.config import DispatchSettings
from engine.decide.contact_policy import ClaimCheck, ContactPolicies
from engine.grammar.addresses import reach_column
from engine.ledger import TouchState
from engine.logs import log
from engine.run.ratelimit import ChannelLimits
from engine.run.touches import touch_of
from engine.store.connect import write_transaction


def _grouped(channel: Channel, touches: list[Touch]) -> list[Touch]:
    """A claimed batch with the touches one vendor request may carry next to each other (in the order
    their keys first appear), for an adapter that groups them; otherwise as claimed."""
    if not isinstance(channel, Groups):
        return touches
    by_key: dict[Hashable, list[Touch]] = {}
    for touch in touches:
        by_key.setdefault(channel.group_key(touch), []).append(touch)
    return [touch for group in by_key.values() for touch in group]


class _NotAccepted(Exception):
    """The vendor surely did not accept these touches (throttled, refused before sending): retry them."""

    def __init__(self, touches: list[Touch], codes: dict[str, str | None]) -> None:
        super().__init__(f"{len(touches)} touch(es) not accepted")
        self.touches = touches
        self.codes = codes


@dataclass
class Dispatcher:
    """Sends what the ledger holds, for the channels it was given."""

    engine: Engine
    settings: DispatchSettings
    channels: Mapping[str, Channel]
    channel_settings: Mapping[str, ChannelSettings]
    contact: ContactPolicies  #: checked again at claim time; a reload swaps it
    tz: ZoneInfo
    owner: str
    clock: Callable[[], datetime] = clock_now
    counts: Counter[str] = field(default_factory=Counter)
    paused: dict[str, str] = field(default_factory=dict)  #: mirror of channel_pauses, as last read
    _probing: set[str] = field(default_factory=set)
    claiming: bool = True
    _limits: dict[str, ChannelLimits] = field(default_factory=dict)
    _opened: set[str] = field(default_factory=set)  #: channels whose adapters keep connections for us

    def limits(self, channel: str) -> ChannelLimits:
        if channel not in self._limits:
            cfg = self.channel_settings[channel]
            self._limits[channel] = ChannelLimits(cfg.rate_per_second, cfg.concurrency, self.settings.replicas)
        return self._limits[channel]

    def _open(self, name: str) -> None:
        """Let channel `name`'s adapter keep its connections from one batch to the next, until `aclose`."""
        channel = self.channels[name]
        if name not in self._opened and isinstance(channel, KeepsConnections):
            channel.open()
            self._opened.add(name)

    async def aclose(self) -> None:
        """Close the connections the adapters kept for this dispatcher; sends in flight finish first."""
        opened, self._opened = self._opened, set()
        for name in sorted(opened):
            channel = self.channels[name]
            if isinstance(channel, KeepsConnections):
                await channel.aclose()

    # -- the loop ---------------------------------------------------------------------------------
    async def drain(self) -> Counter[str]:
        """Send everything due now, then return (tick). Rows under someone else's live lease are left."""
        try:
            await self.reconcile()
            await asyncio.gather(*(self._drain_channel(name) for name in self.channels))
        finally:
            await self.aclose()
        return self.counts

    async def _drain_channel(self, name: str) -> None:
        while self.claiming and name not in self.paused:
            sent = await self.dispatch_once(name)
            if not sent:
                return

    async def dispatch_once(self, name: str) -> int:
        """Claim one batch of `name` and send it; the number of rows claimed."""
        ready = await asyncio.to_thread(self._claim, name)
        if not ready:
            return 0
        self._open(name)
        ready = _grouped(self.channels[name], ready)
        size = self.channel_settings[name].batch_size
        slices = [ready[i:i + size] for i in range(0, len(ready), size)]
        held = {t.touch_id for t in ready}
        heartbeat = asyncio.create_task(self._hold_leases(held))
        try:
            await asyncio.gather(*(self._send_slice(name, piece, held) for piece in slices))
        finally:
            heartbeat.cancel()
        return len(ready)

    async def _hold_leases(self, held: set[str]) -> None:
        """Extend the leases of rows still in flight every lease/3, so a slow vendor or a long wait
        behind the rate limit never lets the reconciler take over a row that is being sent."""
        interval = self.settings.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            if held:
                await asyncio.to_thread(self._extend, sorted(held))

    def _extend(self, touch_ids: list[str]) -> None:
        with write_transaction(self.engine) as conn:
            ledger.extend_leases(conn, touch_ids, self.clock() + self.settings.lease, self.owner)

    # -- 1. claim -----------------------------------------------------------------------------------
    def _claim_limit(self, conn: Any, name: str, now: datetime) -> int:
        """How many rows to claim: none while the channel is paused, one (a probe) once its pause is over."""
        pause = ledger.channel_pauses_now(conn).get(name)
        if pause is None:
            self.paused.pop(name, None)
            self._probing.discard(name)
            return self.settings.batch_size
        if now < pause["resume_at"]:
            self.paused[name] = pause["reason"]
            return 0
        self._probing.add(name)
        return 1

    def _claim(self, name: str) -> list[Touch]:
        now = self.clock()
        with self.engine.connect() as conn:  # idle: one read, no write lock taken every second
            if not ledger.claim_has_work(conn, name, now):
                return []
        with write_transaction(self.engine) as conn:
            ledger.expire_deferred(conn, now)
            limit = self._claim_limit(conn, name, now)
            if not limit:
                return []
            rows = ledger.claim_batch(conn, name, now, limit, self.settings.lease, self.owner)
            if not rows:
                return []
            contacts = ledger.contacts(conn, [r["member_id"] for r in rows])
            phones = {m: c["phone"] for m, c in contacts.items()}
            blocked = ledger.suppressed_channels(conn, [(r["member_id"], phones.get(r["member_id"])) for r in rows])
            check = ClaimCheck(conn, self.contact, rows, now, self.tz)
            ready: list[Touch] = []
            for row in rows:
                contact = contacts.get(row["member_id"])
                stop = blocked.get(row["member_id"], set())
                if contact is None or not contact[reach_column(name)] or name in stop or "all" in stop:
                    ledger.settle(conn, row["touch_id"], TouchState.suppressed, reason="opted_out")
                    self._log("touch.suppressed", row, TouchState.suppressed, reason="opted_out")
                    continue
                recheck = check.recheck(row)
                if recheck.reason is not None:
                    ledger.settle(conn, row["touch_id"], TouchState.suppressed, reason=recheck.reason)
                    self._log("touch.suppressed", row, TouchState.suppressed, reason=recheck.reason)
                    continue
                if recheck.not_before is not None:
                    ledger.release(conn, row["touch_id"], TouchState.deferred, not_before=recheck.not_before,
                                   touch_at=recheck.not_before, expires_at=recheck.expires_at)
                    self._log("touch.deferred", row, TouchState.deferred, not_before=recheck.not_before.isoformat())
                    continue
                ready.append(touch_of(row, contact))
            return ready

    # -- 2. send ------------------------------------------------------------------------------------
    async def _send_slice(self, name: str, touches: Sequence[Touch], held: set[str]) -> None:
        """Send one slice; touches the vendor surely did not accept are retried (tenacity), the rest recorded."""
        pending = list(touches)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait_exponential_jitter(multiplier=self.settings.retry_wait.total_seconds(),
                                         max=self.settings.lease.total_seconds() / 4,
                                         jitter=self.settings.retry_wait.total_seconds()),
            retry=retry_if_exception_type(_NotAccepted), reraise=True,
            before_sleep=lambda state: self._log_retry(name, state))
        async with self.limits(name).slots:
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._attempt(name, pending, held)
            except _NotAccepted as exc:  # out of attempts: what is left failed
                gave_up = [Outcome(t.touch_id, OutcomeKind.failed, code=exc.codes.get(t.touch_id),
                                   message="not accepted after retries") for t in exc.touches]
                await asyncio.shield(asyncio.to_thread(self._record, name, exc.touches, gave_up, held))

    @staticmethod
    def _log_retry(name: str, state: RetryCallState) -> None:
        """One line per retry of a slice (the adapters log no line per touch): how many and the vendor's codes."""
        exc = state.outcome.exception() if state.outcome is not None else None
        codes = Counter(str(c) for c in exc.codes.values()) if isinstance(exc, _NotAccepted) else Counter()
        log.info("dispatch.retry", channel=name, attempt=state.attempt_number, touches=codes.total(),
                 codes=dict(codes))

    async def _attempt(self, name: str, pending: list[Touch], held: set[str]) -> None:
        """One send call: record the final outcomes; leave in `pending` (and raise _NotAccepted
        with) only the touches to retry, so a retry never resends a touch that got an answer."""
        await self.limits(name).bucket.acquire(len(pending))
        try:
            outcomes = await self.channels[name].send(pending)
        except ChannelError as exc:
            kind = OutcomeKind.retry if exc.retryable else OutcomeKind.failed
            outcomes = [Outcome(t.touch_id, kind, code=exc.code, message=str(exc)) for t in pending]
        except Exception as exc:  # noqa: BLE001 - the request may have left: the outcome is unknown
            outcomes = [Outcome(t.touch_id, OutcomeKind.unknown, code=type(exc).__name__, message=str(exc))
                        for t in pending]
        by_id = {o.touch_id: o for o in outcomes}
        again = [t for t in pending if t.touch_id not in by_id or by_id[t.touch_id].kind == OutcomeKind.retry]
        final = [by_id[t.touch_id] for t in pending if t not in again]
        if final:
            await asyncio.shield(asyncio.to_thread(self._record, name, pending, final, held))
        pending[:] = again
        if again:
            codes = {t.touch_id: by_id[t.touch_id].code if t.touch_id in by_id else None for t in again}
            raise _NotAccepted(list(again), codes)

    # -- 3. record ------------------------------------------------------------------------------------
    def _record(self, name: str, touches: Sequence[Touch], outcomes: Sequence[Outcome], held: set[str]) -> None:
        """Write the outcomes in one transaction: the settled rows by one statement per state, then log them."""
        now = self.clock()
        by_id = {t.touch_id: t for t in touches}
        settle: dict[TouchState, list[dict[str, Any]]] = defaultdict(list)
        with write_transaction(self.engine) as conn:
            states = [self._apply(conn, name, by_id[o.touch_id], o, now, settle) for o in outcomes]
            for final, rows in settle.items():
                ledger.settle_many(conn, final, self.owner, rows)
        for outcome, state in zip(outcomes, states, strict=True):
            touch = by_id[outcome.touch_id]
            held.discard(touch.touch_id)
            self.counts[state] += 1
            self._log(f"touch.{state}", touch, state, code=outcome.code, error=outcome.message,
                      vendor_id=outcome.vendor_id, provider=outcome.provider)

    def _apply(self, conn: Any, name: str, touch: Touch, outcome: Outcome, now: datetime,
               settle: dict[TouchState, list[dict[str, Any]]]) -> str:
        """Write what `outcome` means, except the row's own settling, which is added to `settle`."""
        error = {"error_code": outcome.code, "error_message": outcome.message}
        if name in self._probing and outcome.kind != OutcomeKind.channel_fatal:
            ledger.resume_channel(conn, name)  # the probe got an answer that is not fatal: the channel works
            self._probing.discard(name)
            self.paused.pop(name, None)
            log.info("channel.resumed", channel=name)
        if outcome.kind == OutcomeKind.sent:
            settle[TouchState.sent].append({"touch_id": touch.touch_id, "sent_at": now, "touch_at": now,
                                            "vendor_id": outcome.vendor_id, "provider": outcome.provider,
                                            "error_code": None, "error_message": None})
            return TouchState.sent
        if outcome.kind == OutcomeKind.failed_member:
            settle[TouchState.failed].append({"touch_id": touch.touch_id, **error})
            phone = touch.address.get("phone")
            ledger.add_suppression(conn, member_id=None if phone else touch.member_id, phone=phone, channel=name,
                                   reason=f"{outcome.code}: {outcome.message}", source="vendor", now=now)
            return TouchState.failed
        if outcome.kind == OutcomeKind.channel_fatal:
            ledger.release(conn, touch.touch_id, TouchState.queued, owner=self.owner, **error)
            reason = f"{outcome.code}: {outcome.message}"
            resume_at = now + self.channel_settings[name].pause_for
            ledger.pause_channel(conn, name, outcome.code, reason, now, resume_at)
            self.paused[name] = reason
            self._probing.discard(name)
            log.error("channel.paused", channel=name, code=outcome.code, reason=outcome.message,
                      resume_at=resume_at.isoformat())
            return "paused"

        if outcome.kind == OutcomeKind.unknown:
            # It may have gone out: never resend blindly. The row stays `sending` until its lease
            # runs out, then the reconciler asks the vendor's query API (which needs a moment to
            # list a fresh send) and only an authoritative answer settles it.
            ledger.await_lookup(conn, touch.touch_id, self.owner, now + self.settings.lease,
                                provider=outcome.provider, **error)
            return "awaiting_lookup"
        settle[TouchState.failed].append({"touch_id": touch.touch_id, **error})
        return TouchState.failed

    # -- reconciliation -------------------------------------------------------------------------------
    async def reconcile(self) -> int:
        """Settle `sending` rows whose lease ran out, through the adapters' `lookup`."""
        expired = await asyncio.to_thread(self._take_over_expired)
        settled = 0
        for name in {t.channel for t in expired}:
            channel = self.channels.get(name)
            if channel is None:
                continue
            self._open(name)
            touches = [t for t in expired if t.channel == name]
            try:
                outcomes = await channel.lookup(touches)
            except Exception as exc:  # noqa: BLE001 - no answer: the outcome stays unknown
                outcomes = [Outcome(t.touch_id, OutcomeKind.unknown, code=type(exc).__name__, message=str(exc))
                            for t in touches]
            await asyncio.shield(asyncio.to_thread(self._settle_lookups, touches, outcomes))
            settled += len(outcomes)
        return settled

    def _take_over_expired(self) -> list[Touch]:
        """Take over `sending` rows whose lease ran out, as touches with their addresses (a lookup
        by phone number needs the number: without it, a send that went out could look unsent)."""
        now = self.clock()
        with write_transaction(self.engine) as conn:
            rows = ledger.expired_leases(conn, now, 1000)
            for row in rows:
                ledger.extend_lease(conn, row["touch_id"], now + self.settings.lease, self.owner)
            contacts = ledger.contacts(conn, [r["member_id"] for r in rows])
            return [touch_of(r, contacts.get(r["member_id"])) for r in rows]

    def _settle_lookups(self, touches: Sequence[Touch], outcomes: Sequence[Outcome]) -> None:
        now = self.clock()
        by_id = {t.touch_id: t for t in touches}
        with write_transaction(self.engine) as conn:
            for outcome in outcomes:
                touch = by_id[outcome.touch_id]
                if outcome.kind == OutcomeKind.sent:
                    ledger.settle(conn, touch.touch_id, TouchState.sent, owner=self.owner, sent_at=now,
                                  touch_at=now, vendor_id=outcome.vendor_id, provider=outcome.provider)
                    state: str = TouchState.sent
                elif outcome.kind == OutcomeKind.not_sent:
                    ledger.release(conn, touch.touch_id, TouchState.queued, owner=self.owner)
                    state = TouchState.queued
                else:
                    ledger.settle_unknown(conn, touch.touch_id, self.owner, outcome.code, outcome.message)
                    state = TouchState.unknown
                self.counts[f"reconciled_{state}"] += 1
                self._log("touch.reconciled", touch, state)

    def _log(self, event: str, row: Any, state: str, **extra: Any) -> None:
        get = row.get if isinstance(row, Mapping) else lambda k: getattr(row, k)
        log.info(event, touch_id=get("touch_id"), playbook=get("playbook"), member_id=get("member_id"),
                 channel=get("channel"), state=str(state), **{k: v for k, v in extra.items() if v is not None})
