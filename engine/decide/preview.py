"""The dry-run: evaluate playbooks as of an instant and stream their decisions; nothing is written.

The writers (jsonl, csv and a summary table) see decisions one at a time; the table keeps only
counts and a few samples, so memory never grows with the audience.

It shares `engine.decide.decisions.Evaluation` with `tick` and the daemon; it only skips
writing and sending.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from engine.clock import zone
from engine.decide.compiler import Frame
from engine.decide.contact_policy import ContactPolicy
from engine.decide.decisions import Decision, Evaluation, MessageCheck
from engine.decide.gate import LedgerGate
from engine.grammar.playbook import Playbook
from engine.grammar.policies import PolicySettings, QuietWindow


def playbook_zone(playbook: Playbook, default: str) -> ZoneInfo:
    return zone(playbook.timezone or default)


def evaluation_order(playbooks: Iterable[Playbook]) -> list[Playbook]:
    """Higher priority first; ties by playbook id."""
    return sorted(playbooks, key=lambda p: (-p.priority, p.id))


def dry_run(engine: Engine, playbooks: Iterable[Playbook], at: datetime, *, default_timezone: str,
            links: Mapping[str, str], event_window: timedelta, policies: PolicySettings | None = None,
            costs: Mapping[str, Decimal] | None = None,
            vendor_quiet_hours: Mapping[str, QuietWindow] | None = None,
            checks: Mapping[str, MessageCheck] | None = None) -> Iterator[Decision]:
    """Every enabled playbook's decisions as of `at` (events due in (at − event_window, at]).

    `checks` are the channels' vendor rules (`channels.message_checks`), applied as `tick` applies
    them: a message that breaks one is `suppressed/invalid_message`.

    Policies read the ledger (caps, budgets, suppressions, cooldowns) but the dry-run does
    not simulate caps between the playbooks it previews, and writes nothing.
    """
    policies = policies if policies is not None else PolicySettings()
    with engine.connect() as conn, engine.connect() as ledger_conn:
        for playbook in evaluation_order(p for p in playbooks if p.enabled):
            frame = Frame(at, playbook_zone(playbook, default_timezone), engine.dialect.name)
            evaluation = Evaluation(playbook, frame, links,
                                    event_window if playbook.is_event_triggered else None, checks=checks or {})
            policy = ContactPolicy.of(playbook, policies, costs or {}, vendor_quiet_hours)
            gate = LedgerGate(ledger_conn, playbook.id, policy, now=at, tz=zone(default_timezone))
            yield from evaluation.decisions(conn, gate)


# -- writers --------------------------------------------------------------------------------------

SAMPLES_PER_PLAYBOOK = 3


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default, separators=(", ", ": "))


class JsonlWriter:
    """One JSON object per decision (the dry-run contract)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, decision: Decision) -> None:
        self.out.write(to_json(decision.as_record()) + "\n")

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    """The same fields as jsonl; nested values as JSON text."""

    FIELDS = ("playbook", "member_id", "occurrence", "decision", "reason", "channel", "offer", "message", "why")

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.writer = csv.writer(out)
        self.writer.writerow(self.FIELDS)

    def write(self, decision: Decision) -> None:
        record = decision.as_record()
        self.writer.writerow([
            "" if record[f] is None else (to_json(record[f]) if isinstance(record[f], dict) else record[f])
            for f in self.FIELDS])

    def close(self) -> None:
        self.out.flush()


@dataclass
class PlaybookSummary:
    name: str
    audience: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    holdout: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    samples: list[Decision] = field(default_factory=list)


class TableWriter:
    """Per playbook: audience, sends per channel, holdout, suppressed per reason, sample messages."""

    def __init__(self, out: IO[str], names: dict[str, str] | None = None) -> None:
        self.console = Console(file=out, width=160 if not out.isatty() else None)
        self.names = names or {}
        self.summaries: dict[str, PlaybookSummary] = {}

    def start(self, playbook_id: str) -> None:
        self.summaries.setdefault(playbook_id, PlaybookSummary(self.names.get(playbook_id, "")))

    def write(self, decision: Decision) -> None:
        self.start(decision.playbook)
        summary = self.summaries[decision.playbook]
        summary.audience += 1
        if decision.decision == "send":
            summary.sent[decision.channel or "?"] += 1
            if len(summary.samples) < SAMPLES_PER_PLAYBOOK:
                summary.samples.append(decision)
        elif decision.decision == "holdout":
            summary.holdout += 1
        else:
            summary.suppressed[decision.reason or "?"] += 1

    def close(self) -> None:
        table = Table(title="siyu dry-run", show_lines=False)
        table.add_column("playbook")
        table.add_column("audience", justify="right")
        table.add_column("send", justify="right")
        table.add_column("by channel")
        table.add_column("holdout", justify="right")
        table.add_column("suppressed")
        for playbook_id, s in self.summaries.items():
            table.add_row(
                f"{playbook_id}\n[dim]{s.name}[/dim]" if s.name else playbook_id,
                f"{s.audience:,}",
                f"{sum(s.sent.values()):,}",
                " ".join(f"{ch} {n:,}" for ch, n in sorted(s.sent.items())) or "-",
                f"{s.holdout:,}",
                " ".join(f"{r} {n:,}" for r, n in sorted(s.suppressed.items())) or "-",
            )
        self.console.print(table)
        for playbook_id, s in self.summaries.items():
            if not s.samples:
                continue
            samples = Table(title=f"{playbook_id}: sample messages", title_justify="left")
            samples.add_column("member")
            samples.add_column("channel")
            samples.add_column("offer")
            samples.add_column("message")
            for d in s.samples:
                coupon = (d.offer or {}).get("coupon")
                samples.add_row(d.member_id, d.channel or "",
                                f"满{coupon['threshold']}减{coupon['discount']}" if coupon else "-",
                                to_json(d.message))
            self.console.print(samples)


Writer = JsonlWriter | CsvWriter | TableWriter


def writer_for(fmt: str, out: IO[str], names: dict[str, str] | None = None) -> Writer:
    if fmt == "jsonl":
        return JsonlWriter(out)
    if fmt == "csv":
        return CsvWriter(out)
    return TableWriter(out, names)
