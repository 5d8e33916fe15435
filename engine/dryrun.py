"""The dry-run: evaluate playbooks as of an instant and stream their decisions; nothing is written.

It shares `engine.decisions.Evaluation` with `tick` and the daemon; it only skips
writing and sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from engine.clock import zone
from engine.compiler import Frame
from engine.decisions import Decision, Evaluation
from engine.gate import EffectivePolicies, LedgerGate
from engine.playbook import Playbook
from engine.policies import PolicySettings, QuietWindow


def playbook_zone(playbook: Playbook, default: str) -> ZoneInfo:
    return zone(playbook.timezone or default)


def evaluation_order(playbooks: Iterable[Playbook]) -> list[Playbook]:
    """Higher priority first; ties by playbook id."""
    return sorted(playbooks, key=lambda p: (-p.priority, p.id))


def dry_run(engine: Engine, playbooks: Iterable[Playbook], at: datetime, *, default_timezone: str,
            links: Mapping[str, str], event_window: timedelta, policies: PolicySettings | None = None,
            costs: Mapping[str, Decimal] | None = None,
            vendor_quiet_hours: Mapping[str, QuietWindow] | None = None) -> Iterator[Decision]:
    """Every enabled playbook's decisions as of `at` (events due in (at − event_window, at]).

    Policies read the ledger (caps, budgets, suppressions, cooldowns) but the dry-run does
    not simulate caps between the playbooks it previews, and writes nothing.
    """
    policies = policies if policies is not None else PolicySettings()
    with engine.connect() as conn, engine.connect() as ledger_conn:
        for playbook in evaluation_order(p for p in playbooks if p.enabled):
            frame = Frame(at, playbook_zone(playbook, default_timezone), engine.dialect.name)
            evaluation = Evaluation(playbook, frame, links,
                                    event_window if playbook.is_event_triggered else None)
            gate = LedgerGate(ledger_conn, playbook.id, EffectivePolicies.of(playbook, policies, costs or {},
                                                                            vendor_quiet_hours),
                              now=at, tz=zone(default_timezone))
            yield from evaluation.decisions(conn, gate)
