"""The dry-run: evaluate playbooks as of an instant and stream their decisions; nothing is written.

It shares `engine.decisions.Evaluation` with `tick` and the daemon; it only skips
writing and sending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from engine.clock import zone
from engine.compiler import Frame
from engine.decisions import Decision, Evaluation
from engine.playbook import Playbook


def playbook_zone(playbook: Playbook, default: str) -> ZoneInfo:
    return zone(playbook.timezone or default)


def evaluation_order(playbooks: Iterable[Playbook]) -> list[Playbook]:
    """Higher priority first; ties by playbook id."""
    return sorted(playbooks, key=lambda p: (-p.priority, p.id))


def dry_run(engine: Engine, playbooks: Iterable[Playbook], at: datetime, *, default_timezone: str,
            links: Mapping[str, str], event_window: timedelta) -> Iterator[Decision]:
    """Every enabled playbook's decisions as of `at` (events due in (at − event_window, at])."""
    with engine.connect() as conn:
        for playbook in evaluation_order(p for p in playbooks if p.enabled):
            frame = Frame(at, playbook_zone(playbook, default_timezone), engine.dialect.name)
            evaluation = Evaluation(playbook, frame, links,
                                    event_window if playbook.is_event_triggered else None)
            yield from evaluation.decisions(conn)
