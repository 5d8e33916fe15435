"""Decisions: every audience member gets exactly one, in the contract's order.

1. below every offer tier → suppressed/no_offer
2. no channel of the playbook reachable → suppressed/unreachable
3. touched or held out by this playbook within `cooldown_days` → suppressed/cooldown
4. the per-member holdout draw → holdout
5. the first `max_per_run` still standing (member_id byte order) → send; the rest suppressed/max_per_run
6. (of the sends) a message that fails to render → suppressed/render_error; one its channel's vendor
   would refuse (the adapter's own check, passed in as `checks`) → suppressed/invalid_message, the
   broken rule in `why`. The member's next channel is not tried.

The dry-run, `tick` and the daemon all take their decisions here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError
from sqlalchemy import Connection

from engine.decide.compiler import FEN_PER_YUAN, CompiledAudience, Frame, compile_audience
from engine.decide.gate import Candidate, Choice, Gate
from engine.grammar.addresses import ADDRESS_FIELDS, reach_column
from engine.grammar.playbook import Coupon, Offer, Playbook
from engine.grammar.templates import render_value
from engine.grammar.values import MEMBER_FIELDS

AudienceRow = Mapping[Any, Any]
"""One row of a compiled audience statement (a SQLAlchemy RowMapping)."""

MessageCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]
"""(rendered message, address) → the vendor rule it breaks, or None: a channel adapter's own check
(`channels.base.ChecksMessages`), handed in by whoever knows the configured channels."""


@dataclass(frozen=True)
class Decision:
    """One (playbook, member, occurrence) verdict, with everything needed to touch or explain it."""

    playbook: str
    member_id: str
    occurrence: str
    decision: str  #: send | holdout | suppressed
    reason: str | None
    channel: str | None
    offer: dict[str, Any] | None
    message: dict[str, Any] | None
    why: dict[str, Any]
    event_id: str | None = None
    #: the offer the member would have had (also for holdout and later suppressions)
    candidate_offer: dict[str, Any] | None = field(default=None, compare=False)
    #: quiet hours: the earliest send time of a deferred touch
    not_before: datetime | None = None
    cost_e4: int = 0

    def as_record(self) -> dict[str, Any]:
        """The dry-run JSON object (the contract's fields first)."""
        record = {"playbook": self.playbook, "member_id": self.member_id, "occurrence": self.occurrence,
                  "decision": self.decision, "reason": self.reason, "channel": self.channel,
                  "offer": self.offer, "message": self.message, "why": self.why}
        if self.not_before is not None:
            record["not_before"] = self.not_before.isoformat()
        return record


def holdout_draw(playbook_id: str, member_id: str) -> int:
    """The member's 0–99 draw for this playbook; it never depends on who else is in the audience."""
    return int(hashlib.sha256(f"{playbook_id}:{member_id}".encode()).hexdigest()[:8], 16) % 100


def yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else (Decimal(fen) / FEN_PER_YUAN).quantize(Decimal("0.01"))


def plain_number(value: Decimal) -> int | Decimal:
    """250 rather than Decimal('250.00') when the value is whole."""
    return int(value) if value == value.to_integral_value() else value.normalize()


def _coupon_view(coupon: Coupon, today: date) -> dict[str, Any]:
    view: dict[str, Any] = {"threshold": plain_number(coupon.threshold), "discount": plain_number(coupon.discount)}
    if coupon.valid_days is not None:
        view["valid_days"] = coupon.valid_days
        view["valid_until"] = (today + timedelta(days=coupon.valid_days - 1)).isoformat()
    return view


def choose_offer(offer: Offer | None, order_count: int, total_fen: int, today: date) -> dict[str, Any] | None:
    """The member's offer, or None when the member is below every tier (no_offer).

    Averages compare exactly: avg ≥ min ⇔ total ≥ min·count, so ¥199.99 is not ¥200.
    """
    assert offer is not None
    if offer.coupon is not None:
        return {"coupon": _coupon_view(offer.coupon, today)}
    assert offer.by is not None and offer.tiers is not None
    for index, tier in enumerate(offer.tiers, start=1):
        if offer.by == "avg_order_value":
            wins = order_count > 0 and total_fen >= tier.min * FEN_PER_YUAN * order_count
        elif offer.by == "total_spend":
            wins = total_fen >= tier.min * FEN_PER_YUAN
        else:
            wins = order_count >= tier.min
        if wins:
            return {"coupon": _coupon_view(tier.coupon, today), "by": offer.by, "tier": index,
                    "min": plain_number(tier.min)}
    return None


def member_context(row: AudienceRow, tz: ZoneInfo) -> dict[str, Any]:
    """The `member` template variable: stored fields, tags and order metrics (money in yuan)."""
    member = {name: row[name] for name in MEMBER_FIELDS}
    for name in ("joined_at", "points_expire_at"):
        if member[name] is not None:
            member[name] = member[name].astimezone(tz)
    count = int(row["order_count"] or 0)
    total = int(row["total_fen"] or 0)
    member.update(
        tags=sorted(row["tags"].split("|")) if row["tags"] else [],
        order_count=count,
        total_spend=yuan(total),
        avg_order_value=(Decimal(total) / count / FEN_PER_YUAN).quantize(Decimal("0.01")) if count else None,
        last_purchase_at=row["last_purchase_at"].astimezone(tz) if row["last_purchase_at"] else None,
        habitual_platform=row["habitual_platform"],
    )
    return member


def _fact(value: Any, label: str, tz: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if label.startswith(("total_spend", "avg_order_value")) and value is not None:
        return str(yuan(int(Decimal(str(value)).to_integral_value())))
    if isinstance(value, Decimal | float):  # PostgreSQL sums are numeric: keep the ledger's JSON plain
        return int(value) if value == int(value) else str(value)
    return value


def why(row: AudienceRow, member: Mapping[str, Any], compiled: CompiledAudience, tz: ZoneInfo) -> dict[str, Any]:
    """The facts behind the match: order metrics and each leaf's own fact."""
    facts: dict[str, Any] = {
        "order_count": member["order_count"],
        "total_spend": str(member["total_spend"]),
        "avg_order_value": None if member["avg_order_value"] is None else str(member["avg_order_value"]),
        "last_purchase_at": None if member["last_purchase_at"] is None else member["last_purchase_at"].isoformat(),
        "habitual_platform": member["habitual_platform"],
    }
    for key, label in compiled.fact_labels.items():
        facts[label] = _fact(row[key], label, tz)
    return facts


def _json_offer(offer: dict[str, Any] | None) -> dict[str, Any] | None:
    if offer is None:
        return None
    coupon = {k: v for k, v in offer["coupon"].items() if k != "valid_until"}
    return {**offer, "coupon": coupon}


@dataclass(frozen=True)
class Screened:
    """An audience row that passed offer, reachability, cooldown and holdout: the gate decides next."""

    candidate: Candidate
    row: AudienceRow
    member: dict[str, Any]
    facts: dict[str, Any]
    offer: dict[str, Any] | None
    occurrence: str
    event_id: str | None


@dataclass
class Evaluation:
    """One playbook evaluated as of one instant: compiled once, decided row by row, in batches.

    `occurrence` is the run's key in the ledger (a scheduled time); event-triggered
    playbooks use each event's id. With `skip_decided`, members already in the ledger for
    that occurrence are left out (tick and the daemon); the dry-run keeps them.
    """

    playbook: Playbook
    frame: Frame
    links: Mapping[str, str]
    event_window: timedelta | None = None
    occurrence: str | None = None
    skip_decided: bool = False
    checks: Mapping[str, MessageCheck] = field(default_factory=dict)  #: by channel name; none: not checked
    sends: int = 0
    _touched: set[str] = field(default_factory=set)
    _payloads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def compile(self, **kwargs: Any) -> CompiledAudience:
        skip = (self.occurrence or "event") if self.skip_decided else None
        return compile_audience(self.playbook, self.frame, event_window=self.event_window, skip_decided=skip,
                                **kwargs)

    def decisions(self, conn: Connection, gate: Gate | None = None, batch_size: int = 500) -> Iterator[Decision]:
        """Stream the decisions (memory does not grow with the audience)."""
        for batch in self.batches(conn, batch_size):
            yield from self.resolve(batch, gate)

    def batches(self, conn: Connection, batch_size: int = 500) -> Iterator[list[Decision | Screened]]:
        """The audience, screened, in batches (the unit of one ledger transaction)."""
        compiled = self.compile()
        result = conn.execution_options(stream_results=True, yield_per=1000).execute(compiled.statement)
        keys = tuple(result.keys())
        batch: list[Decision | Screened] = []
        for values in result:
            # A plain dict per row: every field is read several times below, and a dict is the
            # cheapest mapping to read (this loop runs once per audience member).
            batch.append(self.screen(dict(zip(keys, values, strict=True)), compiled))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def screen(self, row: AudienceRow, compiled: CompiledAudience) -> Decision | Screened:
        """The checks that need no policy: no_offer, unreachable, cooldown, holdout."""
        playbook, tz = self.playbook, self.frame.tz
        member = member_context(row, tz)
        facts = why(row, member, compiled, tz)
        event_id = row["event_id"] if compiled.event_mode else None
        occurrence = event_id if event_id is not None else self._occurrence
        member_id = row["member_id"]

        def verdict(decision: str, reason: str | None = None, candidate: dict[str, Any] | None = None) -> Decision:
            return Decision(playbook.id, member_id, occurrence, decision, reason, None, None, None, facts,
                            event_id, _json_offer(candidate))

        offer = None
        if playbook.offer is not None:
            offer = choose_offer(playbook.offer, member["order_count"], int(row["total_fen"] or 0),
                                 self.frame.today)
            if offer is None:
                return verdict("suppressed", "no_offer")
        channels = tuple(ch for ch in compiled.channels if row[reach_column(ch)])
        if not channels:
            return verdict("suppressed", "unreachable", offer)
        if row["in_cooldown"] or member_id in self._touched:
            return verdict("suppressed", "cooldown", offer)
        if holdout_draw(playbook.id, member_id) < playbook.holdout:
            self._remember(member_id)
            return verdict("holdout", candidate=offer)
        return Screened(Candidate(member_id, row["phone"], channels), row, member, facts, offer, occurrence,
                        event_id)

    @cached_property
    def _occurrence(self) -> str:
        """The ledger key of a scheduled run (its time; the dry-run's instant)."""
        return self.occurrence or self.frame.at.astimezone(self.frame.tz).isoformat()

    def _remember(self, member_id: str) -> None:
        # Two due events of one member in one run: the second sees the first for cooldown.
        if self.event_window is not None and self.playbook.limits.cooldown_days:
            self._touched.add(member_id)

    def resolve(self, batch: Sequence[Decision | Screened], gate: Gate | None) -> list[Decision]:
        """Policies (through `gate`), then max_per_run, then rendering, in audience order."""
        screened = [item for item in batch if isinstance(item, Screened)]
        if gate is not None and screened:
            gate.prepare([s.candidate for s in screened])
        return [item if isinstance(item, Decision) else self._finish(item, gate) for item in batch]

    def _finish(self, s: Screened, gate: Gate | None) -> Decision:
        def verdict(decision: str, reason: str | None = None, **extra: Any) -> Decision:
            return Decision(self.playbook.id, s.candidate.member_id, s.occurrence, decision, reason,
                            extra.get("channel"), _json_offer(extra.get("offer")), extra.get("message"),
                            s.facts, s.event_id, _json_offer(s.offer), extra.get("not_before"),
                            extra.get("cost_e4", 0))

        if s.candidate.member_id in self._touched:  # an earlier event of this run touched the member
            return verdict("suppressed", "cooldown")
        choice = gate.choose(s.candidate) if gate is not None else Choice(channel=s.candidate.channels[0])
        if choice.channel is None:
            return verdict("suppressed", choice.reason)
        limit = self.playbook.limits.max_per_run
        if limit is not None and self.sends >= limit:
            return verdict("suppressed", "max_per_run")
        context = self.context(s.member, s.offer, s.row, s.event_id is not None)
        try:
            message = render_value(self._payload(choice.channel), context)
        except Exception as exc:  # noqa: BLE001 - any failure of a marketer's template suppresses this touch
            s.facts["render_error"] = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
            return verdict("suppressed", "render_error")
        check = self.checks.get(choice.channel)
        if check is not None:
            address = {name: s.row[name] for name in ADDRESS_FIELDS.get(choice.channel, ())}
            problem = check(message, address)
            if problem is not None:
                s.facts["invalid_message"] = problem
                return verdict("suppressed", "invalid_message")
        self.sends += 1
        self._remember(s.candidate.member_id)
        return verdict("send", channel=choice.channel, offer=s.offer, message=message,
                       not_before=choice.not_before, cost_e4=choice.cost_e4)

    def _payload(self, channel: str) -> dict[str, Any]:
        """The channel step's message as written (templates unrendered), dumped once per evaluation."""
        if channel not in self._payloads:
            step = next(step for step in self.playbook.channels if step.channel == channel)
            self._payloads[channel] = step.message.model_dump(exclude_none=True)
        return self._payloads[channel]

    def context(self, member: dict[str, Any], offer: dict[str, Any] | None, row: AudienceRow,
                event_mode: bool) -> dict[str, Any]:
        tz = self.frame.tz
        context: dict[str, Any] = {
            "member": member, "offer": offer, "links": dict(self.links),
            "now": self.frame.at.astimezone(tz),
            "playbook": {"id": self.playbook.id, "name": self.playbook.name,
                         "priority": self.playbook.priority, "timezone": str(tz)},
        }
        if event_mode:
            context["event"] = {"event_id": row["event_id"], "type": row["event_type"],
                                "occurred_at": row["event_occurred_at"].astimezone(tz),
                                "attributes": row["event_attributes"]}
        return context
