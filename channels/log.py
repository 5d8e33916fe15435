"""The `log` adapter: appends each touch as one JSON line to a file. Any channel may use it.

It stands in for a vendor while a brand tries Siyu out, and it is the sink of the daemon
tests: each touch is one `write` on a file opened with O_APPEND, so a kill never leaves
half a line, and `lookup` finds a touch by `touch_id` in the file, so a crash between
writing and recording is reconciled, never resent.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from channels.base import ChannelContext, ChannelSettings, Outcome, OutcomeKind, Touch


class LogSettings(ChannelSettings):
    adapter: Literal["log"]
    path: str = "touches.jsonl"
    """The JSONL file touches are appended to (created if missing)."""
    latency_ms: int = Field(0, ge=0)
    """Sleep this long before each batch, to stand in for a slow vendor."""


class LogChannel:
    """Writes touches to a JSONL file; `lookup` reads it back."""

    Settings = LogSettings

    def __init__(self, name: str, settings: LogSettings, context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.path = Path(settings.path)

    def _append(self, lines: list[bytes]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # messages: the owner's only
        try:
            for line in lines:
                os.write(fd, line)  # one write per touch: a kill never leaves half a line
        finally:
            os.close(fd)

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        now = datetime.now(UTC).isoformat()
        lines = [
            (json.dumps({"touch_id": t.touch_id, "playbook": t.playbook, "member_id": t.member_id,
                         "channel": t.channel, "occurrence": t.occurrence, "offer": t.offer,
                         "message": t.message, "written_at": now}, ensure_ascii=False, default=str)
             + "\n").encode()
            for t in touches
        ]
        await asyncio.to_thread(self._append, lines)
        return [Outcome(t.touch_id, OutcomeKind.sent, vendor_id=f"log:{t.touch_id}") for t in touches]

    def _written(self) -> set[str]:
        if not self.path.exists():
            return set()
        found = set()
        with self.path.open("rb") as handle:
            for raw in handle:
                try:
                    found.add(json.loads(raw)["touch_id"])
                except (ValueError, KeyError, TypeError):
                    continue  # a foreign or damaged line is not a touch
        return found

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        written = await asyncio.to_thread(self._written)
        return [Outcome(t.touch_id, OutcomeKind.sent, vendor_id=f"log:{t.touch_id}") if t.touch_id in written
                else Outcome(t.touch_id, OutcomeKind.not_sent, message="not in the log file")
                for t in touches]
