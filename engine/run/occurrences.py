"""What is due, and deciding it into the ledger: scheduled occurrences and triggering events.

A scheduled occurrence runs once: its run row is unique on (playbook, scheduled_for), a
finished run is never redone, and a run cut short by a crash is resumed (members already
in the ledger for that occurrence are skipped; the ledger's unique key makes that safe).
Each event is evaluated once per playbook: its id is the occurrence key. A watermark
remembers how far events were evaluated, so a daemon that was down picks up where it left.

Decisions are taken by engine.decide.decisions (the same code as the dry-run) in batches; each
batch is one write transaction that locks its members, applies the policy gate and
records the rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine

from engine import ledger
from engine.clock import now as clock_now
from engine.clock import zone
from engine.config import Settings
from engine.decide.compiler import Frame
from engine.decide.contact_policy import ContactPolicies, ContactPolicy
from engine.decide.decisions import Decision, Evaluation, MessageCheck
from engine.decide.gate import LedgerGate
from engine.decide.preview import evaluation_order, playbook_zone
from engine.grammar.playbook import Playbook
from engine.ledger import TouchState, touch_id_for
from engine.logs import log
from engine.store.connect import write_transaction

EVENTS_WATERMARK = "events"


def occurrence_key(scheduled_for: datetime) -> str:
    """The ledger's occurrence key of a scheduled run: its instant in UTC, ISO 8601."""
    return scheduled_for.astimezone(UTC).isoformat()


def ledger_row(decision: Decision, playbook: Playbook, policy: ContactPolicy, now: datetime) -> dict[str, Any]:
    """The touches row for one decision taken at `now` under `policy`."""
    if decision.decision == "send":
        state = TouchState.deferred if decision.not_before is not None else TouchState.queued
    else:
        state = TouchState(decision.decision)
    touch_at = decision.not_before or now
    return {
        "touch_id": touch_id_for(playbook.id, decision.member_id, decision.occurrence),
        "playbook": playbook.id, "member_id": decision.member_id, "occurrence": decision.occurrence,
        "event_id": decision.event_id, "state": state, "reason": decision.reason, "channel": decision.channel,
        "priority": playbook.priority, "offer": decision.offer or decision.candidate_offer,
        "message": decision.message, "why": decision.why, "cost_e4": decision.cost_e4,
        "decided_at": now, "touch_at": touch_at, "not_before": decision.not_before,
        "expires_at": policy.expires_at(now) if state == TouchState.deferred else None,
    }


@dataclass
class Evaluator:
    """Decides due occurrences and events into the ledger; shared by `tick` and the daemon."""

    engine: Engine
    settings: Settings
    playbooks: Sequence[Playbook]
    contact: ContactPolicies  #: the contact policy of each playbook
    owner: str
    clock: Callable[[], datetime] = clock_now
    checks: Mapping[str, MessageCheck] = field(default_factory=dict)  #: the channels' vendor rules, by name
    counts: Counter[str] = field(default_factory=Counter)

    def due_occurrences(self, until: datetime, since: datetime) -> list[tuple[datetime, Playbook]]:
        """Scheduled occurrences in (since, until]: by time, then priority (higher first), then id."""
        due = []
        for playbook in evaluation_order(p for p in self.playbooks if p.enabled and p.trigger.cron is not None):
            cron = playbook.trigger.cron
            assert cron is not None
            tz = playbook_zone(playbook, self.settings.timezone)
            due += [(moment, playbook) for moment in cron.occurrences(since, until, tz)]
        due.sort(key=lambda item: (item[0].astimezone(UTC), -item[1].priority, item[1].id))
        return due

    def tick(self, at: datetime) -> Counter[str]:
        """One round as of `at`: occurrences in (at − misfire_grace, at] and events due in that interval."""
        return self.round(at, at - self.settings.misfire_grace_td)

    def round(self, at: datetime, events_since: datetime) -> Counter[str]:
        """Everything due as of `at`, in priority order (higher first; then time; then id).

        Scheduled occurrences in (at − misfire_grace, at], runs an earlier crash left unfinished
        (whatever their age), and events whose occurred_at + delay is in (events_since, at]:
        when caps allow fewer touches than they want, the higher priority gets the member.
        """
        work: list[tuple[tuple[int, datetime, str], Callable[[], Any]]] = []
        for scheduled_for, playbook in self.due_occurrences(at, at - self.settings.misfire_grace_td):
            work.append(((-playbook.priority, scheduled_for.astimezone(UTC), playbook.id),
                         partial(self.run_occurrence, playbook, scheduled_for)))
        by_id = {p.id: p for p in self.playbooks if p.enabled}
        with self.engine.connect() as conn:
            unfinished = ledger.unfinished_runs(conn, before=at - self.settings.misfire_grace_td)
        for playbook_id, scheduled_for in unfinished:
            if playbook_id in by_id:
                playbook = by_id[playbook_id]
                work.append(((-playbook.priority, scheduled_for, playbook.id),
                             partial(self.run_occurrence, playbook, scheduled_for)))
        work.extend(((-p.priority, at.astimezone(UTC), p.id), partial(self.run_event_playbook, p, at, events_since))
                    for p in self._with_due_events(at, events_since))
        for _, job in sorted(work, key=lambda item: item[0]):
            job()
        with write_transaction(self.engine) as conn:
            ledger.advance_watermark(conn, EVENTS_WATERMARK, at)
        return self.counts

    def _with_due_events(self, at: datetime, since: datetime) -> list[Playbook]:
        """The event-triggered playbooks whose event type has an event that may be due in
        (since, at] (occurred in (since − delay, at − delay]): the others have nothing to decide,
        and an idle poller asks the database one question per event type, not one per playbook."""
        books = [p for p in self.playbooks if p.enabled and p.is_event_triggered]
        if not books:
            return []
        delays = [p.trigger.delay_td for p in books]
        with self.engine.connect() as conn:
            present = ledger.event_types_between(conn, (str(p.trigger.event) for p in books),
                                                 since - max(delays), at - min(delays))
        return [p for p in books if p.trigger.event in present]

    def run_occurrence(self, playbook: Playbook, scheduled_for: datetime) -> bool:
        """Decide one scheduled occurrence (as of its own time); False if it had already run."""
        key = occurrence_key(scheduled_for)
        with write_transaction(self.engine) as conn:
            if not ledger.start_run(conn, playbook.id, scheduled_for, self.owner, self.clock()):
                return False
        tz = playbook_zone(playbook, self.settings.timezone)
        evaluation = Evaluation(playbook, Frame(scheduled_for, tz, self.engine.dialect.name), self.settings.links,
                                occurrence=key, skip_decided=True, checks=self.checks)
        with self.engine.connect() as conn:
            evaluation.sends = ledger.sends_in_run(conn, playbook.id, key)
        counts = self._decide(evaluation, playbook, scheduled_for)
        with write_transaction(self.engine) as conn:
            ledger.finish_run(conn, playbook.id, scheduled_for, counts, self.clock())
        log.info("run.finished", playbook=playbook.id, scheduled_for=key, **counts)
        return True

    def run_event_playbook(self, playbook: Playbook, at: datetime, since: datetime) -> None:
        """Decide `playbook` for every event whose occurred_at + delay is in (since, at], as of `at`."""
        tz = playbook_zone(playbook, self.settings.timezone)
        evaluation = Evaluation(playbook, Frame(at, tz, self.engine.dialect.name), self.settings.links,
                                event_window=at - since, skip_decided=True, checks=self.checks)
        counts = self._decide(evaluation, playbook, at)
        if counts:
            log.info("events.decided", playbook=playbook.id, at=at.isoformat(), **counts)

    def events_since(self, now: datetime) -> datetime:
        """Where the daemon's event poller starts: the watermark, but never later than now − misfire_grace."""
        with self.engine.connect() as conn:
            mark = ledger.get_watermark(conn, EVENTS_WATERMARK)
        floor = now - self.settings.misfire_grace_td
        return floor if mark is None or mark > floor else mark

    def _decide(self, evaluation: Evaluation, playbook: Playbook, as_of: datetime) -> dict[str, int]:
        policy = self.contact[playbook.id]
        counts: Counter[str] = Counter()
        config_tz = zone(self.settings.timezone)
        with self.engine.connect() as read:
            for batch in evaluation.batches(read, self.settings.dispatch.batch_size):
                with write_transaction(self.engine) as conn:
                    gate = LedgerGate(conn, playbook.id, policy, now=as_of, tz=config_tz, lock=True)
                    decisions = evaluation.resolve(batch, gate)
                    ledger.record(conn, [ledger_row(d, playbook, policy, as_of) for d in decisions])
                for d in decisions:
                    counts[d.decision if d.reason is None else f"{d.decision}/{d.reason}"] += 1
        self.counts.update(counts)
        return dict(counts)

