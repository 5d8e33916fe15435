"""The policy gate: contact policies applied to candidates, reading (and in `tick`, locking) the ledger.

After the holdout draw, a candidate's reachable channels are tried in the playbook's
order: suppressed addresses are skipped (opted_out), a channel over a frequency cap or a
budget falls through to the next (frequency_cap / budget when none is left), and the
chosen channel's quiet hours may defer the touch to the next allowed minute.

`prepare` is called once per batch: it takes the per-member locks (when recording), and
fetches histories, suppressions and today's spend in a few queries, so the gate never
queries per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from engine import ledger
from engine.clock import day_start, local_date
from engine.decide.contact_policy import ContactPolicy
from engine.grammar.policies import MemberHistory


@dataclass(frozen=True)
class Candidate:
    """An audience member who passed offer, reachability, cooldown and holdout."""

    member_id: str
    phone: str | None
    channels: tuple[str, ...]  #: reachable channels, in the playbook's preference order


@dataclass(frozen=True)
class Choice:
    """The gate's answer: a channel (maybe deferred), or the reason there is none."""

    channel: str | None = None
    reason: str | None = None
    not_before: datetime | None = None
    cost_e4: int = 0


class Gate(Protocol):
    def prepare(self, candidates: Sequence[Candidate]) -> None: ...

    def choose(self, candidate: Candidate) -> Choice: ...


@dataclass
class LedgerGate:
    """Applies one playbook's contact policy as of `now`, counting days in `tz` (the config timezone).

    With `lock=True` (tick, daemon) it locks the batch's members and the budgets first, and
    accounts each touch it allows so later candidates in the same transaction see it. A
    dry-run (`lock=False`) only reads the ledger, so its output never depends on batching.
    """

    conn: Connection
    playbook: str
    policies: ContactPolicy
    now: datetime
    tz: ZoneInfo
    lock: bool = False
    _histories: dict[str, MemberHistory] = field(default_factory=dict)
    _suppressed: dict[str, set[str]] = field(default_factory=dict)
    _spend: dict[str, int] = field(default_factory=dict)
    _playbook_spend: dict[date, int] = field(default_factory=dict)
    _when: dict[str, tuple[datetime | None, date, bool]] = field(default_factory=dict)

    def prepare(self, candidates: Sequence[Candidate]) -> None:
        ids = [c.member_id for c in candidates]
        if self.lock:
            ledger.lock_members(self.conn, ids)
            if self.policies.channel_budgets_e4 or self.policies.playbook_budget_e4 is not None:
                ledger.lock_budgets(self.conn)
        today = local_date(self.now, self.tz)
        since = day_start(today - timedelta(days=self.policies.longest_cap_days), self.tz)
        self._histories = ledger.member_histories(self.conn, ids, since, self.tz) if self.policies.frequency else {}
        self._suppressed = ledger.suppressed_channels(self.conn, [(c.member_id, c.phone) for c in candidates])
        self._spend = {}
        self._playbook_spend = {}

    def _playbook_day_spend(self, day: date) -> int:
        if day not in self._playbook_spend:
            self._playbook_spend[day] = ledger.spend_e4(self.conn, day_start(day, self.tz),
                                                        day_start(day + timedelta(days=1), self.tz),
                                                        playbook=self.playbook)
        return self._playbook_spend[day]

    def _channel_spend(self, channel: str, day: Any) -> int:
        key = f"{channel}:{day}"
        if key not in self._spend:
            self._spend[key] = ledger.spend_e4(self.conn, day_start(day, self.tz),
                                               day_start(day + timedelta(days=1), self.tz), channel=channel)
        return self._spend[key]

    def _send_time(self, channel: str) -> tuple[datetime | None, date, bool]:
        """When a touch on `channel` decided `now` may go out (None: at once), its local day, and
        whether the caps allow it to a member with no touch yet (most members: worked out once)."""
        if channel not in self._when:
            not_before = self.policies.send_after(channel, self.now, self.tz)
            day = local_date(not_before or self.now, self.tz)
            self._when[channel] = (not_before, day,
                                   self.policies.caps_allow(MemberHistory({}), channel, day))
        return self._when[channel]

    def choose(self, candidate: Candidate) -> Choice:
        blocked = self._suppressed.get(candidate.member_id, set())
        channels = [ch for ch in candidate.channels if ch not in blocked and "all" not in blocked]
        if not channels:
            return Choice(reason="opted_out")
        history = self._histories.setdefault(candidate.member_id, MemberHistory({}))
        first_refusal: str | None = None
        for channel in channels:
            not_before, day, allowed_to_untouched = self._send_time(channel)
            allowed = self.policies.caps_allow(history, channel, day) if history.counts \
                else allowed_to_untouched
            if not allowed:
                first_refusal = first_refusal or "frequency_cap"
                continue
            cost = self.policies.costs_e4.get(channel, 0)
            limit = self.policies.channel_budgets_e4.get(channel)
            if cost and limit is not None and self._channel_spend(channel, day) + cost > limit:
                first_refusal = first_refusal or "budget"
                continue
            playbook_limit = self.policies.playbook_budget_e4
            if cost and playbook_limit is not None and self._playbook_day_spend(day) + cost > playbook_limit:
                first_refusal = first_refusal or "budget"
                continue
            if not self.lock:  # a preview reads the ledger; it does not simulate its own touches
                return Choice(channel=channel, not_before=not_before, cost_e4=cost)
            history.add(channel, day)
            if cost:
                self._spend[f"{channel}:{day}"] = self._channel_spend(channel, day) + cost
                self._playbook_spend[day] = self._playbook_day_spend(day) + cost
            return Choice(channel=channel, not_before=not_before, cost_e4=cost)
        return Choice(reason=first_refusal)
