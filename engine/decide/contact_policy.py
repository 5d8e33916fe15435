"""May we touch this member now: the contact policy of each playbook, in one place.

A `ContactPolicy` is the config's `policies:` tightened by one playbook's `limits:` (its
rules are added to the config's; it can only tighten). The service builds one per playbook,
once per playbook set (`ContactPolicies`), and the same objects answer at decision time (the
gate, engine.decide.gate) and again right before sending (`ClaimCheck`, used by the
dispatcher); a SIGHUP reload swaps the whole map. A touch whose playbook is no longer loaded
is held to the config's policies alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection
from sqlalchemy.engine import RowMapping

from engine import ledger
from engine.clock import day_start, local_date
from engine.grammar.playbook import Playbook
from engine.grammar.policies import (
    FrequencyRule,
    MemberHistory,
    PolicySettings,
    QuietWindow,
    frequency_allows,
    next_allowed,
)

E4_PER_YUAN = 10_000


@dataclass(frozen=True)
class ContactPolicy:
    """The config's policies tightened by one playbook's limits (or the config's alone)."""

    frequency: tuple[FrequencyRule, ...]
    quiet_hours: Mapping[str, tuple[QuietWindow, ...]]  #: config, playbook and vendor windows per channel
    channel_budgets_e4: Mapping[str, int]
    playbook_budget_e4: int | None
    costs_e4: Mapping[str, int]
    expire_after: timedelta | None  #: a deferred touch older than this is dropped (suppressed/expired)

    @classmethod
    def of(cls, playbook: Playbook | None, policies: PolicySettings, costs: Mapping[str, Decimal],
           vendor_quiet_hours: Mapping[str, QuietWindow] | None = None) -> ContactPolicy:
        """`playbook`'s policy; with no playbook, the config's policies alone."""
        limits = playbook.limits if playbook is not None else None
        quiet: dict[str, list[QuietWindow]] = {}
        for source in (policies.quiet_hours, limits.quiet_hours if limits else {}, vendor_quiet_hours or {}):
            for channel, window in source.items():
                quiet.setdefault(channel, []).append(window)
        budget = limits.budget_daily if limits else None
        return cls(
            frequency=(*policies.frequency, *(limits.frequency if limits else ())),
            quiet_hours={ch: tuple(ws) for ch, ws in quiet.items()},
            channel_budgets_e4={ch: int(b.daily * E4_PER_YUAN) for ch, b in policies.budgets.items()},
            playbook_budget_e4=None if budget is None else int(budget * E4_PER_YUAN),
            costs_e4={ch: int(cost * E4_PER_YUAN) for ch, cost in costs.items()},
            expire_after=limits.expire_after if limits else None,
        )

    @property
    def longest_cap_days(self) -> int:
        return max((rule.per_days for rule in self.frequency), default=1)

    def caps_allow(self, history: MemberHistory, channel: str, day: date) -> bool:
        """Whether one more touch on `channel` on local `day` keeps the member within every cap."""
        return frequency_allows(self.frequency, history, channel, day)

    def send_after(self, channel: str, moment: datetime, tz: ZoneInfo) -> datetime | None:
        """The first minute at or after `moment` outside `channel`'s quiet hours; None: at once."""
        return next_allowed(moment, self.quiet_hours.get(channel, ()), tz)

    def expires_at(self, decided_at: datetime) -> datetime | None:
        """When a touch decided at `decided_at` and deferred is dropped instead of sent late."""
        return decided_at + self.expire_after if self.expire_after else None


@dataclass(frozen=True)
class ContactPolicies:
    """Every loaded playbook's policy by id; a touch of a playbook no longer loaded gets the config's."""

    by_playbook: Mapping[str, ContactPolicy]
    config: ContactPolicy

    @classmethod
    def of(cls, playbooks: Iterable[Playbook], policies: PolicySettings,
           costs: Mapping[str, Decimal] | None = None,
           vendor_quiet_hours: Mapping[str, QuietWindow] | None = None) -> ContactPolicies:
        costs = costs or {}
        return cls({p.id: ContactPolicy.of(p, policies, costs, vendor_quiet_hours) for p in playbooks},
                   ContactPolicy.of(None, policies, costs, vendor_quiet_hours))

    def __getitem__(self, playbook: str) -> ContactPolicy:
        return self.by_playbook.get(playbook, self.config)


@dataclass(frozen=True)
class Recheck:
    """The claim check's answer for one claimed row: suppressed for `reason`, deferred until
    `not_before` (dropped at `expires_at`), or neither: send it now."""

    reason: str | None = None
    not_before: datetime | None = None
    expires_at: datetime | None = None


class ClaimCheck:
    """The policies checked again for one claimed batch, right before sending.

    Quiet hours may defer a row, and the caps are counted again for a row that now reaches the
    member on another local day than the one it was decided for (deferred, or claimed late):
    under the members' locks, with the batch's members' histories read once.
    """

    def __init__(self, conn: Connection, policies: ContactPolicies, rows: Sequence[RowMapping], now: datetime,
                 tz: ZoneInfo) -> None:
        self.conn = conn
        self.policies = policies
        self.rows = rows
        self.now = now
        self.tz = tz
        self._histories: dict[str, MemberHistory] | None = None

    def recheck(self, row: RowMapping) -> Recheck:
        policy = self.policies[row["playbook"]]
        later = policy.send_after(row["channel"], self.now, self.tz)
        if not self._caps_allow(row, policy, later or self.now):
            return Recheck(reason="frequency_cap")
        if later is not None:
            return Recheck(not_before=later, expires_at=row["expires_at"] or policy.expires_at(row["decided_at"]))
        return Recheck()

    def _caps_allow(self, row: RowMapping, policy: ContactPolicy, reach_at: datetime) -> bool:
        old_day, new_day = local_date(row["touch_at"], self.tz), local_date(reach_at, self.tz)
        if old_day == new_day or not policy.frequency:
            return True
        history = self._history_of(row["member_id"])
        channel = row["channel"]
        history.counts[(channel, old_day)] = history.counts.get((channel, old_day), 1) - 1  # it moves away
        if not policy.caps_allow(history, channel, new_day):
            return False
        history.add(channel, new_day)
        return True

    def _history_of(self, member_id: str) -> MemberHistory:
        """The member's history; the batch's members are locked and read the first time one is needed,
        back far enough for every row's days and playbook."""
        if self._histories is None:
            ids = [r["member_id"] for r in self.rows]
            ledger.lock_members(self.conn, ids)
            first = min([local_date(self.now, self.tz), *(local_date(r["touch_at"], self.tz) for r in self.rows)])
            longest = max(self.policies[r["playbook"]].longest_cap_days for r in self.rows)
            self._histories = ledger.member_histories(self.conn, ids, day_start(first - timedelta(days=longest),
                                                                                self.tz), self.tz)
        return self._histories.setdefault(member_id, MemberHistory({}))
