"""A brand on disk for `tick` scenarios: config and playbooks in a temp dir, one tick, the ledger and the log.

`Brand` writes a config whose four channels all use the `log` adapter (one JSONL file),
writes playbooks as YAML files, loads `engine.run.service.Service` once, and runs a tick the
way `siyu tick --at` does: decide with the evaluator, then drain the dispatcher, both with
the clock stopped at the tick's instant.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, insert, select

from engine.clock import now as clock_now
from engine.ledger import touch_id_for
from engine.run.service import Service
from engine.store.schema import runs, touches

CHANNELS = ("sms", "wecom", "template", "ai_call")
MESSAGES: dict[str, dict[str, Any]] = {
    "sms": {"template_code": "SMS_1", "params": {"name": "{{ member.nickname }}"}},
    "wecom": {"text": "{{ member.nickname }}，您好"},
    "template": {"template_id": "TPL_1", "data": {"thing1": "{{ member.nickname }}"}},
    "ai_call": {"scenario": "recall", "variables": {"name": "{{ member.nickname }}"}},
}
NO_POLICIES: dict[str, Any] = {"frequency": [], "quiet_hours": {}}
"""`policies:` with caps and quiet hours switched off (budgets are off unless configured)."""
WECOM = {"wecom_external_userid": "wmEXT", "wecom_staff_userid": "staff-li"}
"""Member fields that make a member reachable on WeCom."""


def scheduled(playbook_id: str, cron: str, *, channels: tuple[str, ...] = ("sms",), tag: str = "vip",
              priority: int = 50, limits: Mapping[str, Any] | None = None, holdout: int = 0) -> dict[str, Any]:
    """A scheduled playbook document: members tagged `tag`, the given channels in order."""
    document: dict[str, Any] = {
        "id": playbook_id, "name": playbook_id, "priority": priority, "trigger": {"schedule": cron},
        "audience": {"all": [{"tag": tag}]}, "channels": [{ch: MESSAGES[ch]} for ch in channels],
        "holdout": holdout,
    }
    if limits:
        document["limits"] = dict(limits)
    return document


def unpaid_nudge(playbook_id: str = "unpaid", delay: str = "15m") -> dict[str, Any]:
    """An event-triggered SMS playbook: an `order_created` event whose order is still unpaid."""
    return {"id": playbook_id, "name": playbook_id, "trigger": {"event": "order_created", "delay": delay},
            "audience": {"all": [{"triggering_order": {"paid": False}}]},
            "channels": [{"sms": MESSAGES["sms"]}]}


@dataclass
class Brand:
    """One brand's files under `root`, on the database at `db_url`."""

    root: Path
    db_url: str
    _service: Service | None = None

    @property
    def playbook_dir(self) -> Path:
        return self.root / "playbooks"

    @property
    def config_path(self) -> Path:
        return self.root / "siyu.yaml"

    @property
    def log_path(self) -> Path:
        return self.root / "touches.jsonl"

    def configure(self, *, policies: Mapping[str, Any] | None = None, costs: Mapping[str, str] | None = None,
                  dispatch: Mapping[str, Any] | None = None, misfire_grace: str = "1h") -> Path:
        """Write the config; `policies` None leaves the key out (the documented defaults)."""
        channels = {ch: {"adapter": "log", "path": str(self.log_path), "cost": (costs or {}).get(ch, "0")}
                    for ch in CHANNELS}
        config: dict[str, Any] = {"database": {"url": self.db_url}, "timezone": "Asia/Shanghai",
                                  "playbooks": str(self.playbook_dir), "misfire_grace": misfire_grace,
                                  "links": {"tmall": "https://shop.example/tmall"}, "channels": channels,
                                  "log": {"format": "json", "level": "warning"}}
        if policies is not None:
            config["policies"] = dict(policies)
        if dispatch is not None:
            config["dispatch"] = dict(dispatch)
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        self.playbook_dir.mkdir(exist_ok=True)
        return self.config_path

    def add_playbook(self, document: Mapping[str, Any]) -> None:
        self.playbook_dir.mkdir(exist_ok=True)
        path = self.playbook_dir / f"{document['id']}.yaml"
        path.write_text(yaml.safe_dump(dict(document), allow_unicode=True, sort_keys=False))

    @property
    def service(self) -> Service:
        """The service, loaded on first use (write the config and playbooks before)."""
        if self._service is None:
            if not self.config_path.exists():
                self.configure()
            self._service = Service.load(self.config_path, migrate=False)
        return self._service

    @property
    def engine(self) -> Engine:
        return self.service.engine

    def decide(self, at: datetime) -> None:
        """The evaluator's half of a tick: due occurrences and events decided into the ledger."""
        self.service.evaluator(clock=lambda: at).tick(at)

    def dispatch(self, at: datetime) -> None:
        """The dispatcher's half of a tick: reconcile expired leases, send everything due."""
        asyncio.run(self.service.dispatcher(clock=lambda: at).drain())

    def tick(self, at: datetime) -> None:
        """`siyu tick --at AT`, in process."""
        self.decide(at)
        self.dispatch(at)

    def tick_now(self) -> datetime:
        """`siyu tick` without `--at`: everything reads the wall clock (freeze it with freezegun)."""
        at = clock_now()
        self.service.evaluator().tick(at)
        asyncio.run(self.service.dispatcher().drain())
        return at

    def touches(self, **where: Any) -> list[dict[str, Any]]:
        """Ledger rows (as dicts), filtered by column equality."""
        statement = select(touches).where(*(touches.c[k] == v for k, v in where.items()))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(statement.order_by(touches.c.touch_id)).mappings()]

    def states(self, playbook: str | None = None) -> dict[str, tuple[str, str | None]]:
        """member_id → (state, reason) of one playbook's rows (each member once)."""
        rows = self.touches(**({} if playbook is None else {"playbook": playbook}))
        out = {r["member_id"]: (r["state"], r["reason"]) for r in rows}
        assert len(out) == len(rows), "a member has several rows: pass a playbook or read touches()"
        return out

    def runs(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(select(runs).order_by(runs.c.scheduled_for, runs.c.playbook))
                    .mappings()]

    def logged(self) -> list[dict[str, Any]]:
        """What the log adapter wrote: one dict per touch, in order."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def close(self) -> None:
        if self._service is not None:
            self._service.engine.dispose()


def touch_row(playbook: str, member_id: str, occurrence: str, state: str, at: datetime, *,
              channel: str | None = "sms", **values: Any) -> dict[str, Any]:
    """A ledger row as `engine.run.occurrences.ledger_row` writes it, for seeding the ledger directly."""
    row: dict[str, Any] = {
        "touch_id": touch_id_for(playbook, member_id, occurrence), "playbook": playbook, "member_id": member_id,
        "occurrence": occurrence, "event_id": None, "state": state, "reason": None, "channel": channel,
        "priority": 50, "offer": None, "message": {"text": "hi"}, "why": {}, "cost_e4": 0,
        "decided_at": at, "touch_at": at, "not_before": None, "expires_at": None,
    }
    row.update(values)
    return row


def seed(engine: Engine, *rows: Mapping[str, Any]) -> None:
    """Insert ledger rows as given (one statement each: the rows may set different columns)."""
    with engine.begin() as conn:
        for row in rows:
            conn.execute(insert(touches).values(**row))


def hours(at: datetime, count: int, step: timedelta = timedelta(hours=1)) -> list[datetime]:
    """`count` instants from `at`, `step` apart."""
    return [at + step * i for i in range(count)]
