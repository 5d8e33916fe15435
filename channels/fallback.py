"""A channel with a second provider: the `fallback:` of an SMS adapter's settings.

Every touch goes to one provider only, never both:

- the first provider (the primary) is used while it works;
- when it answers that it cannot send at all (a channel-fatal answer: no balance, arrears,
  bad credentials, unapproved signature or template) or cannot be reached (the request
  never left this host), it surely accepted none of those touches: they go to the fallback
  at once, and the primary rests for its `pause_for` before it is tried again;
- any other answer stays the primary's: a rate limit is retried by the engine, and an
  unknown outcome (the request may have been accepted) never goes to the fallback;
- a channel-fatal answer from the fallback as well reaches the engine, which pauses the channel.

Each outcome names the provider that answered; the ledger keeps it, so `lookup` and `pull` ask
the provider that sent each touch. A touch whose provider is not known (its sender died
mid-send) is looked up at both: `sent` if either lists it, `not_sent` only if both provably
do not, `unknown` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, Union

import structlog
from pydantic import Field, field_validator

from channels.base import (
    CONNECT_FAILED,
    Channel,
    ChannelError,
    ChannelSettings,
    Inbound,
    KeepsConnections,
    Outcome,
    OutcomeKind,
    ReceiptSource,
    Touch,
)
from engine.grammar.policies import ClockTime

log = structlog.get_logger("siyu.channels.fallback")

K = OutcomeKind


class SmsSettings(ChannelSettings):
    """Settings every SMS adapter has: an optional second provider."""

    send_window: tuple[ClockTime, ClockTime] | None = (time(8), time(22))
    """Marketing SMS are accepted 08:00–22:00 only (Tencent MarketingSendTimeConstraint, carriers' rule)."""
    fallback: SmsProviderSettings | None = None
    """A second SMS provider, used when the first is down or out of balance (never both for one touch)."""

    def maps_template(self, code: str) -> bool:
        """Whether this provider can send a playbook's `template_code` (adapters that map codes to
        their own templates narrow it); with a fallback, each of the primary's templates must be
        one its fallback can send (engine.config says so at start)."""
        return True

    def template_codes(self) -> frozenset[str]:
        """The template codes this provider's settings name (those a fallback must be able to send)."""
        return frozenset(getattr(self, "templates", None) or ())

    @field_validator("fallback")
    @classmethod
    def _no_chain(cls, value: ChannelSettings | None) -> ChannelSettings | None:
        if value is not None and getattr(value, "fallback", None) is not None:
            raise ValueError("a fallback provider has no fallback of its own")
        return value


if TYPE_CHECKING:
    SmsProviderSettings = ChannelSettings


def resolve_sms_settings(*models: type[SmsSettings]) -> None:
    """Bind `fallback:` to the registered SMS adapters' settings (called once by `channels`)."""
    union: Any = Annotated[Union[models], Field(discriminator="adapter")]  # noqa: UP007 - built from the registry
    every: list[type[SmsSettings]] = [SmsSettings, *models]
    for model in every:
        model.model_rebuild(force=True, _types_namespace={"SmsProviderSettings": union})


def _cannot_send(outcome: Outcome) -> bool:
    """The provider accepted nothing and will not for a while: the fallback may take the touch."""
    return outcome.kind == K.channel_fatal or (outcome.kind == K.retry and outcome.code == CONNECT_FAILED)


class FallbackChannel:
    """Sends through `primary`, and through `fallback` only what the primary surely did not accept."""

    def __init__(self, name: str, primary: Channel, primary_settings: ChannelSettings, fallback: Channel,
                 fallback_settings: ChannelSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.name = name
        self.primary, self.fallback = primary, fallback
        self.labels = (primary_settings.adapter, fallback_settings.adapter)
        if self.labels[0] == self.labels[1]:
            self.labels = (self.labels[0], f"{self.labels[1]}/fallback")
        self.rest_for = primary_settings.pause_for
        self.clock = clock or (lambda: datetime.now(UTC))
        self.resting_until: datetime | None = None

    def open(self) -> None:
        for provider in (self.primary, self.fallback):
            if isinstance(provider, KeepsConnections):
                provider.open()

    async def aclose(self) -> None:
        for provider in (self.primary, self.fallback):
            if isinstance(provider, KeepsConnections):
                await provider.aclose()

    # -- send -------------------------------------------------------------------------------
    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        now = self.clock()
        if self.resting_until is not None and now < self.resting_until:
            return await self._send(self.fallback, self.labels[1], touches)
        first = await self._send(self.primary, self.labels[0], touches)
        down = {o.touch_id: o for o in first if _cannot_send(o)}
        if not down:
            self.resting_until = None
            return first
        reason = next(iter(down.values()))
        self.resting_until = now + self.rest_for
        log.warning("channel.fallback", channel=self.name, primary=self.labels[0], fallback=self.labels[1],
                    code=reason.code, reason=reason.message, touches=len(down),
                    primary_retry_at=self.resting_until.isoformat())
        kept = [o for o in first if o.touch_id not in down]
        return kept + await self._send(self.fallback, self.labels[1], [t for t in touches if t.touch_id in down])

    @staticmethod
    async def _send(channel: Channel, label: str, touches: Sequence[Touch]) -> list[Outcome]:
        """One provider's outcomes, each naming it; its errors become outcomes, so that the other
        provider can take what this one surely did not accept."""
        try:
            outcomes = await channel.send(touches)
        except ChannelError as exc:
            kind = K.retry if exc.retryable else K.failed
            outcomes = [Outcome(t.touch_id, kind, code=exc.code, message=str(exc)) for t in touches]
        except Exception as exc:  # noqa: BLE001 - the request may have left: unknown, never resent elsewhere
            outcomes = [Outcome(t.touch_id, K.unknown, code=type(exc).__name__, message=str(exc)) for t in touches]
        return [replace(o, provider=label) for o in outcomes]

    # -- lookup and pull ----------------------------------------------------------------------
    def _split(self, touches: Sequence[Touch]) -> tuple[list[Touch], list[Touch], list[Touch]]:
        """(sent by the primary, sent by the fallback, provider not known)."""
        primary = [t for t in touches if t.provider == self.labels[0]]
        fallback = [t for t in touches if t.provider == self.labels[1]]
        neither = [t for t in touches if t.provider not in self.labels]
        return primary, fallback, neither

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        primary, fallback, neither = self._split(touches)
        asked_primary = await self._lookup(self.primary, self.labels[0], [*primary, *neither])
        asked_fallback = await self._lookup(self.fallback, self.labels[1], [*fallback, *neither])
        out = [asked_primary[t.touch_id] for t in primary] + [asked_fallback[t.touch_id] for t in fallback]
        for t in neither:
            answers = (asked_primary[t.touch_id], asked_fallback[t.touch_id])
            sent = next((a for a in answers if a.kind == K.sent), None)
            if sent is not None:
                out.append(sent)
            elif all(a.kind == K.not_sent for a in answers):
                out.append(Outcome(t.touch_id, K.not_sent, message="neither provider has it"))
            else:
                out.append(Outcome(t.touch_id, K.unknown, message="; ".join(
                    f"{label}: {a.message or a.kind}" for label, a in zip(self.labels, answers, strict=True))))
        return out

    @staticmethod
    async def _lookup(channel: Channel, label: str, touches: Sequence[Touch]) -> dict[str, Outcome]:
        if not touches:
            return {}
        try:
            answers = {o.touch_id: o for o in await channel.lookup(touches)}
        except Exception as exc:  # noqa: BLE001 - no answer from this provider: unknown
            answers = {}
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "no answer for this touch"
        return {t.touch_id: replace(answers.get(t.touch_id) or Outcome(t.touch_id, K.unknown, message=reason),
                                    provider=label) for t in touches}

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        """Receipts from the provider that sent each touch (touches sent before a provider was
        recorded came from the primary), and SMS replies from both."""
        primary, fallback, neither = self._split(touches)
        receipts, replies = [], []
        for channel, label, mine in ((self.primary, self.labels[0], [*primary, *neither]),
                                     (self.fallback, self.labels[1], fallback)):
            if not isinstance(channel, ReceiptSource):
                continue
            try:
                inbound = await channel.pull(mine, since)
            except Exception as exc:  # noqa: BLE001 - one provider's outage must not hide the other's receipts
                log.warning("receipts.pull_failed", channel=self.name, provider=label,
                            error=f"{type(exc).__name__}: {exc}")
                continue
            receipts += inbound.receipts
            replies += inbound.replies
        return Inbound(receipts=receipts, replies=replies)
