"""`siyu explain`: why did (or didn't) this member get it?

The audience tree with each leaf true/false for the member and the fact behind it, then
the offer, the channel and the final decision, taken from the very decision stream the
dry-run uses (so they always agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, select

from engine.decide.compiler import CompiledAudience, Frame, compile_audience
from engine.decide.decisions import AudienceRow, Decision, MessageCheck, member_context
from engine.decide.preview import dry_run, playbook_zone
from engine.errors import SiyuError, UsageError
from engine.grammar import audience as a
from engine.grammar.addresses import reach_column
from engine.grammar.loader import load_file, load_playbooks
from engine.grammar.playbook import Playbook
from engine.store.schema import members


@dataclass(frozen=True)
class LeafVerdict:
    label: str
    holds: bool
    fact: str | None
    wants: str | None


@dataclass(frozen=True)
class Explanation:
    playbook: Playbook
    member_id: str
    at: datetime
    event_id: str | None
    matched: bool
    tree: list[str]  # rendered lines of the truth tree
    decision: Decision | None
    member: dict[str, Any]
    reachable: dict[str, bool]


def find_playbook(name: str, settings: Any) -> Playbook:
    """A playbook file, or the playbook with that id in the config's playbooks directory."""
    path = Path(name)
    if path.is_file():
        return load_file(path).playbook
    for loaded in load_playbooks([Path(settings.playbooks)]):
        if loaded.playbook.id == name:
            return loaded.playbook
    raise UsageError(f"no playbook file or id {name!r} (looked in {settings.playbooks})")


def _days_ago(value: datetime, frame: Frame) -> int:
    return (frame.today - value.astimezone(frame.tz).date()).days


def _fact_text(value: Any, frame: Frame) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        days = _days_ago(value, frame)
        when = "today" if days == 0 else (f"in {-days} days" if days < 0 else f"{days} days ago")
        return f"{value.astimezone(frame.tz):%Y-%m-%d %H:%M} ({when})"
    return str(value)


def _wants(leaf: Any) -> str | None:
    arg = leaf.arg
    if isinstance(arg, a.Window) and arg.has_window():
        return f"wants {arg.describe_window().replace('=', ' ')}"
    return None


def _tree(node: Any, truths: list[bool], facts: list[str | None], frame: Frame, counter: list[int],
          depth: int, lines: list[str]) -> bool:
    pad = "  " * depth
    if isinstance(node, a.Group):
        results = []
        for kind, items in node.parts():
            header = len(lines)
            lines.append("")
            values = [_tree(item, truths, facts, frame, counter, depth + 2, lines) for item in items]
            held = all(values) if kind == "all" else any(values) if kind == "any" else not any(values)
            lines[header] = f"{pad}  {kind} → {'true' if held else 'false'}"
            results.append(held)
        return all(results)
    i = counter[0]
    counter[0] += 1
    holds = truths[i]
    fact = facts[i]
    wants = _wants(node)
    text = f"{pad}{'✓' if holds else '✗'} {_leaf_title(node)}"
    if fact is not None:
        text += f": {fact}"
    text += f" → {'true' if holds else 'false'}"
    if wants and not holds:
        text += f", {wants}"
    lines.append(text)
    return holds


def _leaf_title(leaf: Any) -> str:
    from engine.decide.compiler import leaf_label

    return leaf_label(leaf)


def explain(engine: Engine, playbook: Playbook, member_id: str, at: datetime, settings: Any,
            event_id: str | None = None, event_window: timedelta | None = None,
            checks: Mapping[str, MessageCheck] | None = None) -> Explanation:
    frame = Frame(at, playbook_zone(playbook, settings.timezone), engine.dialect.name)
    window = event_window or settings.misfire_grace_td
    with engine.connect() as conn:
        if conn.execute(select(members.c.member_id).where(members.c.member_id == member_id)).first() is None:
            raise SiyuError(f"no member {member_id!r} in the database")
        compiled: CompiledAudience = compile_audience(
            playbook, frame, event_window=None if event_id else (window if playbook.is_event_triggered else None),
            explain_member=member_id, explain_event=event_id)
        rows = conn.execute(compiled.statement).mappings().all()
    decision = None
    for candidate in dry_run(engine, [playbook], at, default_timezone=settings.timezone, links=settings.links,
                             event_window=window, policies=settings.policies, costs=settings.costs,
                             vendor_quiet_hours=settings.vendor_quiet_hours, checks=checks):
        if candidate.member_id == member_id and (event_id is None or candidate.event_id == event_id):
            decision = candidate
            break
    if not rows:
        what = f"event {event_id!r}" if event_id else f"a due `{playbook.trigger.event}` event"
        raise SiyuError(f"{member_id} has no {what} for {playbook.id} as of {at.isoformat()}")
    row: AudienceRow = rows[0]
    if decision is not None and decision.event_id is not None:
        row = next(r for r in rows if r["event_id"] == decision.event_id)
    truths = [bool(row[f"leaf_{i}"]) for i in range(len(compiled.leaves))]
    facts = [_fact_text(row[f"fact_{i}"], frame) if f"fact_{i}" in row else None
             for i in range(len(compiled.leaves))]
    lines: list[str] = []
    matched = _tree(playbook.audience, truths, facts, frame, [0], 0, lines)
    if matched != bool(row["matched"]):
        raise AssertionError("explain disagrees with the compiled audience: please report this")
    reach = {ch: bool(row[reach_column(ch)]) for ch in compiled.channels}
    return Explanation(playbook, member_id, frame.at, row["event_id"] if compiled.event_mode else None, matched,
                       lines, decision, member_context(row, frame.tz), reach)


def render_explanation(x: Explanation, out: IO[str]) -> None:
    p = x.playbook
    tz = playbook_zone(p, "Asia/Shanghai") if p.timezone else x.at.tzinfo
    at = x.at.astimezone(tz) if tz else x.at
    write = out.write
    write(f"{p.id} ({p.name}) for {x.member_id} as of {at.isoformat()}\n")
    if x.event_id:
        write(f"event: {x.event_id}\n")
    m = x.member
    write(f"member: {m['nickname'] or ''} · orders {m['order_count']} · total ¥{m['total_spend']} · "
          f"average ¥{m['avg_order_value'] if m['avg_order_value'] is not None else '-'} · "
          f"habitual platform {m['habitual_platform'] or '-'}\n")
    write(f"audience → {'matched' if x.matched else 'not matched'}\n")
    for line in x.tree:
        write(line + "\n")
    d = x.decision
    if not x.matched or d is None:
        write("decision: not in the audience (no touch)\n")
        return
    offer = d.offer or d.candidate_offer
    if p.offer is None:
        write("offer: none (the playbook has no offer)\n")
    elif d.reason == "no_offer":
        write(f"offer: none: {p.offer.by} below every tier → suppressed/no_offer\n")
    elif offer is not None:
        coupon = offer["coupon"]
        tier = f"tier {offer['tier']} ({offer['by']} ≥ {offer['min']}) → " if "tier" in offer else ""
        write(f"offer: {tier}满{coupon['threshold']}减{coupon['discount']}\n")
    reach = ", ".join(f"{ch} {'yes' if ok else 'no'}" for ch, ok in x.reachable.items())
    if d.channel:
        write(f"channel: {d.channel} (reachable: {reach})\n")
    else:
        write(f"channel: none chosen (reachable: {reach})\n")
    write(f"decision: {d.decision}{'/' + d.reason if d.reason else ''}\n")
    if d.message:
        from engine.decide.preview import to_json

        write(f"message: {to_json(d.message)}\n")
