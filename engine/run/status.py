"""`siyu status`: per playbook the last and next run and today's counts; per channel today's sends,
their delivery receipts and spend; rows in `unknown` and `failed`; and the whole ledger's counts by state."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from engine import ledger
from engine.clock import day_start, local_date, zone
from engine.config import Settings
from engine.decide.contact_policy import E4_PER_YUAN
from engine.decide.preview import playbook_zone
from engine.grammar.playbook import Playbook
from engine.logs import mask_phone


def report(engine: Engine, settings: Settings, playbooks: list[Playbook], now: datetime) -> dict[str, Any]:
    """The status as one JSON-ready object."""
    tz = zone(settings.timezone)
    today = local_date(now, tz)
    start, end = day_start(today, tz), day_start(today + timedelta(days=1), tz)
    with engine.connect() as conn:
        runs = ledger.last_runs(conn)
        by_playbook = ledger.playbook_state_counts(conn, start)
        channels = ledger.channel_day(conn, start, end)
        attention = ledger.rows_in_states(conn, ("unknown", "failed"))
        totals = ledger.state_counts(conn)
        pauses = ledger.channel_pauses_now(conn)
        pushes = ledger.push_counts(conn, today.isoformat())
        last_pushes = ledger.last_accepted_pushes(conn)
    books = []
    for p in sorted(playbooks, key=lambda p: p.id):
        last = runs.get(p.id)
        cron = p.trigger.cron
        upcoming = cron.next_after(now, playbook_zone(p, settings.timezone)) if cron and p.enabled else None
        books.append({
            "playbook": p.id, "name": p.name, "enabled": p.enabled,
            "trigger": p.trigger.schedule or f"event {p.trigger.event}",
            "last_run": None if last is None else {
                "scheduled_for": last["scheduled_for"].astimezone(tz).isoformat(),
                "finished_at": last["finished_at"].astimezone(tz).isoformat() if last["finished_at"] else None,
                "counts": last["counts"]},
            "next_run": upcoming.isoformat() if upcoming else None,
            "today": by_playbook.get(p.id, {}),
        })
    return {
        "now": now.astimezone(tz).isoformat(),
        "playbooks": books,
        "channels": {name: {"adapter": cfg.adapter, "sent_today": channels.get(name, {}).get("sent", 0),
                            "delivered_today": channels.get(name, {}).get("delivered", 0),
                            "undelivered_today": channels.get(name, {}).get("undelivered", 0),
                            "spend_today": str(Decimal(channels.get(name, {}).get("cost_e4", 0)) / E4_PER_YUAN),
                            "paused": None if name not in pauses else {
                                "reason": pauses[name]["reason"],
                                "resume_at": pauses[name]["resume_at"].astimezone(tz).isoformat()}}
                     for name, cfg in settings.channels.items()},
        "attention": [{"touch_id": r["touch_id"], "state": r["state"], "playbook": r["playbook"],
                       "member_id": r["member_id"], "channel": r["channel"], "error_code": r["error_code"],
                       "error_message": mask_phone(r["error_message"] or ""),
                       "decided_at": r["decided_at"].astimezone(tz).isoformat()} for r in attention],
        "ledger": totals,
        "pushes": _pushes(settings, pushes, last_pushes, tz),
    }


def _pushes(settings: Settings, today: dict[str, dict[str, int]], last: dict[str, datetime], tz: Any
            ) -> dict[str, Any]:
    """Per push route served: today's counts by outcome and the last accepted push; and warnings
    for adapters that serve no route although their vendor pushes what cannot be pulled."""
    from engine.run.callbacks import OUTCOMES, push_off, served_routes

    routes = sorted({s.route.route for s in served_routes(settings.channels)} | set(today))
    warnings = [f"channel {channel} ({adapter}) serves no push route ({reason}): its 退订 replies are lost "
                "(Aliyun has no pull for SmsUp)" for channel, adapter, reason in
                push_off(settings.channels) if adapter == "aliyun_sms"]
    if settings.http.listen is None:
        warnings.append("http.listen is null: `siyu run` serves no push route")
    return {"routes": {route: {"today": {o: today.get(route, {}).get(o, 0) for o in OUTCOMES},
                               "last_accepted": last[route].astimezone(tz).isoformat() if route in last else None}
                       for route in routes},
            "warnings": warnings}


def render(status: dict[str, Any], out: IO[str]) -> None:
    console = Console(file=out, width=150 if not out.isatty() else None)
    table = Table(title=f"playbooks ({status['now']})")
    for column in ("playbook", "trigger", "last run", "next run", "today"):
        table.add_column(column)
    for p in status["playbooks"]:
        last = p["last_run"]["scheduled_for"] if p["last_run"] else "-"
        today = " ".join(f"{k} {v:,}" for k, v in sorted(p["today"].items())) or "-"
        table.add_row(p["playbook"] + ("" if p["enabled"] else " (disabled)"), p["trigger"], last,
                      p["next_run"] or "-", today)
    console.print(table)
    channels = Table(title="channels today")
    for column, justify in (("channel", "left"), ("adapter", "left"), ("sent", "right"), ("delivered", "right"),
                            ("undelivered", "right"), ("spend ¥", "right"), ("state", "left")):
        channels.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, c in status["channels"].items():
        state = "ok" if c["paused"] is None else f"PAUSED until {c['paused']['resume_at']}: {c['paused']['reason']}"
        channels.add_row(name, c["adapter"], f"{c['sent_today']:,}", f"{c['delivered_today']:,}",
                         f"{c['undelivered_today']:,}", c["spend_today"], state)
    console.print(channels)
    if status["attention"]:
        rows = Table(title="needs attention (unknown / failed)")
        for column in ("touch", "state", "playbook", "member", "channel", "error"):
            rows.add_column(column)
        for r in status["attention"]:
            rows.add_row(r["touch_id"], r["state"], r["playbook"], r["member_id"], r["channel"] or "",
                         f"{r['error_code'] or ''} {r['error_message']}".strip())
        console.print(rows)
    console.print("ledger: " + (", ".join(f"{k} {v:,}" for k, v in sorted(status["ledger"].items())) or "empty"))
    pushes = status["pushes"]
    if pushes["routes"]:
        table = Table(title="vendor pushes today")
        table.add_column("route")
        outcomes = list(next(iter(pushes["routes"].values()))["today"])
        for outcome in outcomes:
            table.add_column(outcome, justify="right")
        table.add_column("last accepted")
        for route, p in pushes["routes"].items():
            table.add_row(route, *(f"{p['today'][o]:,}" for o in outcomes), p["last_accepted"] or "-")
        console.print(table)
    for warning in pushes["warnings"]:
        console.print(f"warning: {warning}", markup=False)
