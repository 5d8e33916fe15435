"""The `stub` adapter: scripted outcomes, for tests and rehearsals. It records what it was asked.

`outcomes` maps a member id to a list of outcome kinds played in turn on each attempt
(the last one repeats); other members get `default`. `raise_error` makes every send
raise instead (`retryable` or not), to exercise the dispatcher's error paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from channels.base import ChannelContext, ChannelError, ChannelSettings, Outcome, OutcomeKind, Touch

Kind = Literal["sent", "retry", "failed", "failed_member", "channel_fatal", "unknown"]


class StubSettings(ChannelSettings):
    adapter: Literal["stub"]
    default: Kind = "sent"
    outcomes: dict[str, list[Kind]] = Field(default_factory=dict)
    lookup: Literal["sent", "not_sent", "unknown"] = "not_sent"
    raise_error: Literal["retryable", "permanent"] | None = None


class StubChannel:
    """Plays scripted outcomes; `calls` keeps every batch it was sent (per channel name)."""

    Settings = StubSettings
    calls: ClassVar[dict[str, list[list[Touch]]]] = {}

    def __init__(self, name: str, settings: StubSettings, context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.attempts: dict[str, int] = {}
        StubChannel.calls[name] = []

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        StubChannel.calls[self.name].append(list(touches))
        if self.settings.raise_error is not None:
            raise ChannelError("scripted error", retryable=self.settings.raise_error == "retryable", code="STUB")
        out = []
        for t in touches:
            script = self.settings.outcomes.get(t.member_id, [self.settings.default])
            n = self.attempts.get(t.touch_id, 0)
            self.attempts[t.touch_id] = n + 1
            kind = OutcomeKind(script[min(n, len(script) - 1)])
            out.append(Outcome(t.touch_id, kind, vendor_id=f"stub:{t.touch_id}" if kind == OutcomeKind.sent else None,
                               code=None if kind == OutcomeKind.sent else f"STUB_{kind.upper()}",
                               message=None if kind == OutcomeKind.sent else f"scripted {kind}"))
        return out

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        return [Outcome(t.touch_id, OutcomeKind(self.settings.lookup)) for t in touches]
