"""`siyu tick`: due occurrences and events decided into the ledger once, then dispatched, on both databases.

Each test writes a config (every channel on the `log` adapter) and playbooks into a temp
dir and ticks in process at fixed instants (Sunday 2026-11-22, Shanghai, unless it says
otherwise), then reads the ledger and the log file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemonkit import NO_POLICIES, WECOM, Brand, hours, scheduled, seed, touch_row, unpaid_nudge
from scenario import AT, PHONE, SHANGHAI, add_event, add_member, add_order, local

from channels.log import LogChannel
from engine import ledger
from engine.clock import zone
from engine.decide.preview import dry_run
from engine.run.occurrences import occurrence_key
from engine.store.connect import write_transaction
from engine.store.importer import import_directory
from engine.store.schema import members

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "acceptance"
DAILY = "0 10 * * *"


@pytest.fixture
def brand(db_url: str, tmp_path: Path) -> Iterator[Brand]:
    brand = Brand(tmp_path, db_url)
    yield brand
    brand.close()


def vip(brand: Brand, *member_ids: str, **fields: Any) -> None:
    """Members tagged `vip` with a phone (SMS-reachable) and any other member fields."""
    with brand.engine.begin() as conn:
        for member_id in member_ids:
            add_member(conn, member_id, tags=["vip"], **{"phone": PHONE, "nickname": member_id, **fields})


def sent_pairs(brand: Brand) -> Counter[tuple[str, str]]:
    """(playbook, member_id) → how many lines the log adapter wrote for it."""
    return Counter((line["playbook"], line["member_id"]) for line in brand.logged())


# --------------------------------------------------------------------------- the acceptance sample

@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/acceptance is not present")
def test_tick__acceptance_sample_sends_exactly_the_expected_touches(brand: Brand, tmp_path: Path) -> None:
    """Hourly ticks 10:00–15:00 over the public sample send each expected `send` once; a second pass nothing."""
    shutil.copytree(SAMPLE / "playbooks", brand.playbook_dir)
    brand.configure(policies=NO_POLICIES)
    shutil.copytree(SAMPLE / "data", tmp_path / "data")
    assert import_directory(brand.engine, tmp_path / "data", zone("Asia/Shanghai"), progress=False).problems == []
    expected = [json.loads(line) for line in (SAMPLE / "expected.jsonl").read_text().splitlines() if line]
    want = {(e["playbook"], e["member_id"]): e for e in expected}
    ticks = hours(AT, 6)

    for at in ticks:
        brand.tick(at)
    first_pass = brand.logged()
    for at in ticks:
        brand.tick(at)

    assert brand.logged() == first_pass
    assert sent_pairs(brand) == Counter(k for k, e in want.items() if e["decision"] == "send")
    rows = {(r["playbook"], r["member_id"]): r for r in brand.touches()}
    assert set(rows) == set(want)
    got = {k: (r["state"], r["reason"], r["channel"]) for k, r in rows.items()}
    assert got == {k: ("sent" if e["decision"] == "send" else e["decision"], e["reason"], e["channel"])
                   for k, e in want.items()}
    books = ["p-gut-refill", "p-douyin-lapsed", "p-coupon-week", "p-points-soon", "p-fair-guangzhou",
             "p-silver-gold-hz"]  # their crons: 10:00, 11:00, … 15:00
    assert [(r["playbook"], r["scheduled_for"], r["finished_at"] is not None) for r in brand.runs()] == [
        (book, at, True) for book, at in zip(books, ticks, strict=True)]


def test_tick__windowed_order_count_fact_is_recorded(brand: Brand) -> None:
    """A playbook whose audience counts orders within N days is decided, recorded and sent like any other."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook({**scheduled("recent-buyers", DAILY),
                        "audience": {"all": [{"order_count": {"within_days": 90, "gte": 1}}]}})
    vip(brand, "M1")
    with brand.engine.begin() as conn:
        add_order(conn, "M1", paid_at=AT - timedelta(days=10))
    brand.tick(AT)
    assert brand.states("recent-buyers") == {"M1": ("sent", None)}


def test_tick__same_at_twice_touches_nobody_again(brand: Brand) -> None:
    """A second tick with the same `at` decides and sends nothing new, for scheduled and event playbooks."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY))
    brand.add_playbook(unpaid_nudge())
    vip(brand, "M1", "M2")
    _unpaid_order(brand, "M1", local("2026-11-22 09:30"))
    brand.tick(AT)
    first = (brand.touches(), brand.logged(), brand.runs())
    brand.tick(AT)
    assert (brand.touches(), brand.logged(), brand.runs()) == first
    assert sent_pairs(brand) == {("refill", "M1"): 1, ("refill", "M2"): 1, ("unpaid", "M1"): 1}


# --------------------------------------------------------------------------- tick and dry-run agree

def test_tick__sends_what_the_dry_run_decides_send(brand: Brand) -> None:
    """For a playbook due at `at`, the tick records and sends exactly the decisions `siyu dry-run` previews."""
    brand.configure()  # the documented default policies
    brand.add_playbook(scheduled("refill", DAILY, holdout=30, limits={"max_per_run": 4}))
    vip(brand, *(f"M{i:02d}" for i in range(1, 13)))
    with write_transaction(brand.engine) as conn:
        ledger.add_suppression(conn, member_id="M03", phone=None, channel="all", reason="asked", source="manual",
                               now=AT - timedelta(days=1))
    seed(brand.engine, touch_row("other", "M04", "o", "sent", AT - timedelta(hours=1)))  # its touch today
    with brand.engine.begin() as conn:
        add_member(conn, "M99", tags=["vip"], nickname="no phone")
    settings = brand.service.settings
    preview = {d.member_id: (d.decision, d.reason, d.channel) for d in dry_run(
        brand.engine, brand.service.playbooks, AT, default_timezone=settings.timezone, links=settings.links,
        event_window=settings.misfire_grace_td, policies=settings.policies, costs=settings.costs)}

    brand.tick(AT)

    ticked = {r["member_id"]: ("send" if r["state"] == "sent" else r["state"], r["reason"], r["channel"])
              for r in brand.touches(playbook="refill")}
    assert ticked == preview
    assert {m for m, d in preview.items() if d[0] == "send"} == {line["member_id"] for line in brand.logged()}
    assert {d[:2] for d in preview.values()} >= {("send", None), ("holdout", None), ("suppressed", "opted_out"),
                                                  ("suppressed", "frequency_cap"), ("suppressed", "unreachable"),
                                                  ("suppressed", "max_per_run")}


# --------------------------------------------------------------------------- crashes

def test_tick__run_cut_short_is_completed_by_the_next_tick(brand: Brand) -> None:
    """A run that recorded some decisions and died unfinished is completed by the next tick: no skip, no repeat."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY, limits={"max_per_run": 3}))
    vip(brand, "M1", "M2", "M3", "M4", "M5")
    with write_transaction(brand.engine) as conn:  # the crashed run: started, its first batch recorded
        assert ledger.start_run(conn, "refill", AT, "dead", AT)
        ledger.record(conn, [touch_row("refill", m, occurrence_key(AT), "queued", AT) for m in ("M1", "M2")])

    brand.tick(AT + timedelta(minutes=20))
    brand.tick(AT + timedelta(minutes=40))

    assert brand.states("refill") == {"M1": ("sent", None), "M2": ("sent", None), "M3": ("sent", None),
                                      "M4": ("suppressed", "max_per_run"), "M5": ("suppressed", "max_per_run")}
    assert sorted(line["member_id"] for line in brand.logged()) == ["M1", "M2", "M3"]
    assert {r["occurrence"] for r in brand.touches()} == {occurrence_key(AT)}
    (run,) = brand.runs()
    assert (run["scheduled_for"], run["finished_at"]) == (AT, AT + timedelta(minutes=20))


class Killed(BaseException):
    """The process died (kill -9) right after the vendor accepted the batch."""


def test_tick__dispatch_killed_after_sending_is_reconciled_never_resent(brand: Brand,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Touches written just before a kill stay `sending`; once their lease expires lookup settles them `sent`."""
    brand.configure(policies=NO_POLICIES, dispatch={"lease": "5m"})
    brand.add_playbook(scheduled("refill", DAILY))
    vip(brand, "M1", "M2", "M3")
    original = LogChannel.send

    async def send_then_die(self: LogChannel, batch: Any) -> Any:
        await original(self, batch)
        raise Killed

    monkeypatch.setattr(LogChannel, "send", send_then_die)
    with pytest.raises(Killed):
        brand.tick(AT)
    monkeypatch.setattr(LogChannel, "send", original)
    assert {r["state"] for r in brand.touches()} == {"sending"}

    brand.tick(AT + timedelta(minutes=1))  # the lease is live: left to its holder
    assert {r["state"] for r in brand.touches()} == {"sending"}
    brand.tick(AT + timedelta(minutes=6))  # expired: looked up, found in the log

    assert brand.states("refill") == dict.fromkeys(("M1", "M2", "M3"), ("sent", None))
    assert sent_pairs(brand) == {("refill", m): 1 for m in ("M1", "M2", "M3")}
    assert {r["attempts"] for r in brand.touches()} == {1}


# --------------------------------------------------------------------------- events

def _unpaid_order(brand: Brand, member_id: str, created: datetime) -> str:
    """An unpaid order and its `order_created` event at `created`."""
    with brand.engine.begin() as conn:
        order_id = add_order(conn, member_id, paid_at=None, status="created", created_at=created)
        return add_event(conn, member_id, "order_created", created, {"order_id": order_id})


def test_events__evaluated_once_across_overlapping_windows(brand: Brand) -> None:
    """An order_created event due in two ticks' overlapping windows is decided and sent once."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(unpaid_nudge())
    vip(brand, "M1")
    event_id = _unpaid_order(brand, "M1", local("2026-11-22 09:20"))
    brand.tick(AT)
    brand.tick(AT + timedelta(minutes=30))
    (row,) = brand.touches()
    assert (row["occurrence"], row["event_id"], row["state"]) == (event_id, event_id, "sent")
    assert sent_pairs(brand) == {("unpaid", "M1"): 1}


def test_events__late_arrival_within_misfire_grace_still_counts(brand: Brand) -> None:
    """An event stored after the tick it was due in is decided by the next tick within misfire_grace."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(unpaid_nudge())
    vip(brand, "LATE", "TOO-LATE")
    brand.tick(AT)
    late = _unpaid_order(brand, "LATE", local("2026-11-22 09:30"))  # due 09:45, stored after the 10:00 tick
    _unpaid_order(brand, "TOO-LATE", local("2026-11-22 09:05"))  # due 09:20: outside (09:30, 10:30]
    brand.tick(AT + timedelta(minutes=30))
    assert [(r["member_id"], r["occurrence"], r["state"]) for r in brand.touches()] == [("LATE", late, "sent")]


def test_events__second_due_event_of_a_member_sees_the_first(brand: Brand) -> None:
    """Two due events of one member in one tick: the first is sent, the second is suppressed/cooldown."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook({**unpaid_nudge(), "limits": {"cooldown_days": 1}})
    vip(brand, "M1")
    first = _unpaid_order(brand, "M1", local("2026-11-22 09:20"))
    second = _unpaid_order(brand, "M1", local("2026-11-22 09:30"))
    brand.tick(AT)
    assert {r["occurrence"]: (r["state"], r["reason"]) for r in brand.touches()} == {
        first: ("sent", None), second: ("suppressed", "cooldown")}


# --------------------------------------------------------------------------- frequency caps

def test_frequency_cap__higher_priority_playbook_gets_the_member(brand: Brand) -> None:
    """Two playbooks due the same minute under `any 1/day`: the higher priority sends, the other is capped."""
    brand.configure(policies={"frequency": [{"channel": "any", "max": 1, "per_days": 1}], "quiet_hours": {}})
    brand.add_playbook(scheduled("a-low", DAILY, priority=20))
    brand.add_playbook(scheduled("z-high", DAILY, priority=80))
    vip(brand, "M1", "M2")
    brand.tick(AT)
    assert brand.states("z-high") == {"M1": ("sent", None), "M2": ("sent", None)}
    assert brand.states("a-low") == {"M1": ("suppressed", "frequency_cap"), "M2": ("suppressed", "frequency_cap")}
    assert {line["playbook"] for line in brand.logged()} == {"z-high"}


def test_frequency_cap__event_playbook_of_higher_priority_due_the_same_minute_wins(brand: Brand) -> None:
    """An event playbook (priority 90) and a scheduled one (priority 10), both due at 10:00: the event one wins."""
    brand.configure(policies={"frequency": [{"channel": "any", "max": 1, "per_days": 1}], "quiet_hours": {}})
    brand.add_playbook({**unpaid_nudge(), "priority": 90})
    brand.add_playbook(scheduled("daily", DAILY, priority=10))
    vip(brand, "M1")
    _unpaid_order(brand, "M1", local("2026-11-22 09:45"))  # + 15m: due at 10:00
    brand.tick(AT)
    assert {r["playbook"]: (r["state"], r["reason"]) for r in brand.touches()} == {
        "unpaid": ("sent", None), "daily": ("suppressed", "frequency_cap")}


def test_frequency_cap__over_the_wecom_cap_falls_through_to_sms(brand: Brand) -> None:
    """A member with two WeCom touches in 7 days gets the playbook's next channel, SMS; with none left, capped."""
    brand.configure(policies={"frequency": [{"channel": "wecom", "max": 2, "per_days": 7}], "quiet_hours": {}})
    brand.add_playbook(scheduled("care", DAILY, channels=("wecom", "sms")))
    vip(brand, "TIRED", "FRESH", **WECOM)
    vip(brand, "WECOM-ONLY", **{**WECOM, "phone": None})
    seed(brand.engine, *(touch_row("old", m, f"o{n}", "sent", AT - timedelta(days=n), channel="wecom")
                         for m in ("TIRED", "WECOM-ONLY") for n in (2, 6)))
    brand.tick(AT)
    assert {r["member_id"]: (r["state"], r["reason"], r["channel"]) for r in brand.touches(playbook="care")} == {
        "TIRED": ("sent", None, "sms"), "FRESH": ("sent", None, "wecom"),
        "WECOM-ONLY": ("suppressed", "frequency_cap", None)}


# --------------------------------------------------------------------------- budgets

def test_budget__channel_daily_budget_stops_sms(brand: Brand) -> None:
    """With an SMS budget of ¥0.09 a day at ¥0.045 a touch, two touches go out; the rest are suppressed/budget."""
    brand.configure(policies={**NO_POLICIES, "budgets": {"sms": {"daily": 0.09}}}, costs={"sms": "0.045"})
    brand.add_playbook(scheduled("refill", DAILY))
    vip(brand, "M1", "M2", "M3", "M4", "M5")
    brand.tick(AT)
    assert brand.states("refill") == {"M1": ("sent", None), "M2": ("sent", None), "M3": ("suppressed", "budget"),
                                      "M4": ("suppressed", "budget"), "M5": ("suppressed", "budget")}
    assert {r["cost_e4"] for r in brand.touches(state="sent")} == {450}
    assert len(brand.logged()) == 2


def test_budget__over_the_sms_budget_falls_through_to_wecom(brand: Brand) -> None:
    """When the SMS budget is spent, a member reachable on WeCom gets the playbook's next channel instead."""
    brand.configure(policies={**NO_POLICIES, "budgets": {"sms": {"daily": 0.09}}}, costs={"sms": "0.045"})
    brand.add_playbook(scheduled("care", DAILY, channels=("sms", "wecom")))
    vip(brand, "M1", "M2", "M3", **WECOM)
    vip(brand, "M4")
    brand.tick(AT)
    assert {r["member_id"]: (r["state"], r["reason"], r["channel"]) for r in brand.touches()} == {
        "M1": ("sent", None, "sms"), "M2": ("sent", None, "sms"), "M3": ("sent", None, "wecom"),
        "M4": ("suppressed", "budget", None)}


def test_budget__playbook_budget_daily_is_its_own(brand: Brand) -> None:
    """`limits.budget_daily` caps one playbook's spend; another playbook's spend does not use it up."""
    brand.configure(policies=NO_POLICIES, costs={"sms": "0.045"})
    brand.add_playbook(scheduled("free", DAILY, priority=90))
    brand.add_playbook(scheduled("capped", DAILY, limits={"budget_daily": 0.09}))
    vip(brand, "M1", "M2", "M3", "M4")
    brand.tick(AT)
    assert Counter(brand.states("free").values()) == {("sent", None): 4}
    assert brand.states("capped") == {"M1": ("sent", None), "M2": ("sent", None), "M3": ("suppressed", "budget"),
                                      "M4": ("suppressed", "budget")}


@pytest.mark.parametrize("where", ["channel", "playbook"])
def test_budget__deferred_touches_count_on_the_day_they_go_out(brand: Brand, where: str) -> None:
    """Touches two evening runs defer past quiet hours share tomorrow's budget, whether channel or playbook."""
    budget = {"budgets": {"sms": {"daily": 0.09}}} if where == "channel" else {}
    brand.configure(policies={"frequency": [], **budget}, costs={"sms": "0.045"})
    limits = {"budget_daily": 0.09} if where == "playbook" else None
    brand.add_playbook(scheduled("evening", "0 21,22 * * *", limits=limits))
    vip(brand, "M1", "M2", "M3")
    brand.tick(local("2026-11-22 21:00"))
    brand.tick(local("2026-11-22 22:00"))
    brand.tick(local("2026-11-23 09:00"))
    sent = brand.touches(state="sent")
    assert {r["sent_at"].astimezone(SHANGHAI).date().isoformat() for r in sent} == {"2026-11-23"}
    assert sum(r["cost_e4"] for r in sent) <= 900, f"{len(sent)} SMS at ¥0.045 on 2026-11-23, budget ¥0.09"


# --------------------------------------------------------------------------- quiet hours

def test_quiet_hours__evening_sms_deferred_to_nine_and_sent_then(brand: Brand) -> None:
    """A 22:00 SMS decision is deferred to 09:00 the next local day, and the 09:00 tick sends it, not before."""
    brand.configure(policies={"frequency": []})  # quiet hours: the default, SMS not 21:00–09:00
    brand.add_playbook(scheduled("evening", "0 22 * * *"))
    vip(brand, "M1")
    brand.tick(local("2026-11-22 22:00"))
    (row,) = brand.touches()
    assert (row["state"], row["not_before"]) == ("deferred", local("2026-11-23 09:00"))
    brand.tick(local("2026-11-23 08:59"))
    assert (brand.touches()[0]["state"], brand.logged()) == ("deferred", [])
    brand.tick(local("2026-11-23 09:00"))
    (row,) = brand.touches()
    assert (row["state"], row["sent_at"]) == ("sent", local("2026-11-23 09:00"))
    assert sent_pairs(brand) == {("evening", "M1"): 1}


def test_quiet_hours__expire_after_drops_a_stale_deferred_touch(brand: Brand) -> None:
    """With `expire_after: 2h`, a 22:00 SMS deferred to 09:00 is dropped as suppressed/expired, never sent."""
    brand.configure(policies={"frequency": []})
    brand.add_playbook(scheduled("evening", "0 22 * * *", limits={"expire_after": "2h"}))
    vip(brand, "M1")
    brand.tick(local("2026-11-22 22:00"))
    brand.tick(local("2026-11-22 23:00"))
    assert brand.states("evening") == {"M1": ("deferred", None)}
    brand.tick(local("2026-11-23 09:00"))
    assert brand.states("evening") == {"M1": ("suppressed", "expired")}
    assert brand.logged() == []


def test_quiet_hours__touch_dispatched_after_21_waits_for_nine(brand: Brand) -> None:
    """A 20:59 SMS decision not yet sent at 21:00 is checked again at claim: deferred to 09:00, sent then."""
    brand.configure(policies={"frequency": []})
    brand.add_playbook(scheduled("late", "59 20 * * *"))
    vip(brand, "M1")
    brand.decide(local("2026-11-22 20:59"))  # the dispatcher did not get to it before 21:00
    brand.tick(local("2026-11-22 21:30"))
    (row,) = brand.touches()
    assert (row["state"], row["not_before"], brand.logged()) == ("deferred", local("2026-11-23 09:00"), [])
    brand.tick(local("2026-11-23 09:00"))
    assert [(r["state"], r["sent_at"]) for r in brand.touches()] == [("sent", local("2026-11-23 09:00"))]


def test_quiet_hours__touch_deferred_at_claim_still_expires(brand: Brand) -> None:
    """`expire_after: 2h` also drops a touch quiet hours deferred at claim time, rather than send it 12 h late."""
    brand.configure(policies={"frequency": []})
    brand.add_playbook(scheduled("late", "59 20 * * *", limits={"expire_after": "2h"}))
    vip(brand, "M1")
    brand.decide(local("2026-11-22 20:59"))
    brand.tick(local("2026-11-22 21:30"))
    brand.tick(local("2026-11-23 09:00"))
    assert brand.states("late") == {"M1": ("suppressed", "expired")}
    assert brand.logged() == []


def test_frequency_cap__touch_deferred_at_claim_respects_the_next_day_cap(brand: Brand) -> None:
    """A touch pushed to tomorrow 09:00 at claim time does not make a second touch on a day capped at one."""
    brand.configure(policies={"frequency": [{"channel": "any", "max": 1, "per_days": 1}]})
    brand.add_playbook(scheduled("late", "59 20 * * *"))
    brand.add_playbook(scheduled("evening", "0 22 * * *"))
    vip(brand, "M1")
    brand.decide(local("2026-11-22 20:59"))  # queued for today; the dispatcher is down until 22:00
    brand.tick(local("2026-11-22 22:00"))  # `evening` is deferred to tomorrow 09:00; so is `late`, at claim
    brand.tick(local("2026-11-23 09:00"))
    sent = brand.touches(state="sent")
    assert [r["sent_at"].astimezone(SHANGHAI).date().isoformat() for r in sent] == ["2026-11-23"], [
        (r["playbook"], r["state"], r["sent_at"]) for r in sent]


# --------------------------------------------------------------------------- opt-outs

def test_opt_out__suppress_add_before_the_decision(brand: Brand) -> None:
    """`siyu suppress add --member` before the run makes the decision suppressed/opted_out."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY))
    vip(brand, "M1", "M2")
    command = ["suppress", "add", "--member", "M1", "--reason", "asked", "--config", str(brand.config_path)]
    done = subprocess.run([sys.executable, "-m", "engine", *command], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "suppression added"), done.stderr
    brand.tick(AT)
    assert brand.states("refill") == {"M1": ("suppressed", "opted_out"), "M2": ("sent", None)}
    assert [line["member_id"] for line in brand.logged()] == ["M2"]


def test_opt_out__phone_suppressed_on_sms_falls_through_to_wecom(brand: Brand) -> None:
    """A phone suppressed for SMS only leaves the member's WeCom reachable: the touch goes there."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("care", DAILY, channels=("sms", "wecom")))
    vip(brand, "M1", **WECOM)
    with write_transaction(brand.engine) as conn:
        ledger.add_suppression(conn, member_id=None, phone=PHONE, channel="sms", reason="STOP", source="manual",
                               now=AT - timedelta(days=1))
    brand.tick(AT)
    assert [(r["state"], r["channel"]) for r in brand.touches()] == [("sent", "wecom")]


def test_opt_out__added_between_decision_and_send_is_not_sent(brand: Brand) -> None:
    """A suppression added between decision and dispatch stops the touch: the row ends suppressed/opted_out."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY))
    vip(brand, "M1", "M2")
    brand.decide(AT)
    assert {r["state"] for r in brand.touches()} == {"queued"}
    with write_transaction(brand.engine) as conn:
        ledger.add_suppression(conn, member_id="M1", phone=None, channel="sms", reason="STOP", source="manual",
                               now=AT)
    brand.dispatch(AT)
    assert brand.states("refill") == {"M1": ("suppressed", "opted_out"), "M2": ("sent", None)}
    assert [line["member_id"] for line in brand.logged()] == ["M2"]


def test_opt_out__member_flag_set_between_decision_and_send_is_not_sent(brand: Brand) -> None:
    """A member who opts out of SMS (members.sms_opt_out) after the decision is not sent to: opted_out."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY))
    vip(brand, "M1")
    brand.decide(AT)
    with brand.engine.begin() as conn:
        conn.execute(members.update().where(members.c.member_id == "M1").values(sms_opt_out=True))
    brand.dispatch(AT)
    assert (brand.states("refill"), brand.logged()) == ({"M1": ("suppressed", "opted_out")}, [])


# --------------------------------------------------------------------------- cooldown

def test_cooldown__next_daily_runs_suppress_and_the_dry_run_agrees(brand: Brand) -> None:
    """After a send, the daily runs within cooldown_days suppress the member (dry-run too); then it may send."""
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("refill", DAILY, limits={"cooldown_days": 3}))
    vip(brand, "M1")
    verdicts = []
    for day in range(4):
        at = AT + timedelta(days=day)
        (preview,) = dry_run(brand.engine, brand.service.playbooks, at, default_timezone="Asia/Shanghai", links={},
                             event_window=timedelta(hours=1), policies=brand.service.settings.policies)
        brand.tick(at)
        (row,) = brand.touches(occurrence=occurrence_key(at))
        verdicts.append(((preview.decision, preview.reason), (row["state"], row["reason"])))
    send, cooldown = (("send", None), ("sent", None)), (("suppressed", "cooldown"), ("suppressed", "cooldown"))
    assert verdicts == [send, cooldown, cooldown, send]
    assert len(brand.logged()) == 2


def test_events__a_playbook_whose_event_type_did_not_occur_is_not_evaluated(brand: Brand) -> None:
    """The poller asks once per event type: a playbook on a type with no due event is skipped,
    one whose event is due is decided as before."""
    brand.add_playbook(unpaid_nudge())
    signup = {"id": "welcome", "name": "welcome", "trigger": {"event": "signed_up"},
              "audience": {"all": [{"reachable": "sms"}]}, "channels": [{"sms": {"template_code": "SMS_9"}}]}
    brand.add_playbook(signup)
    at = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    with brand.engine.begin() as conn:
        add_member(conn, "M1", phone=PHONE)
        add_order(conn, "M1", paid_at=None, status="created", order_id="O1", created_at=at - timedelta(minutes=40))
        add_event(conn, "M1", "order_created", at - timedelta(minutes=40), {"order_id": "O1"})
    evaluator = brand.service.evaluator(clock=lambda: at)
    due = evaluator._with_due_events(at, at - timedelta(hours=1))
    assert [p.id for p in due] == ["unpaid"]
    evaluator.tick(at)
    assert {(r["playbook"], r["member_id"], r["state"]) for r in brand.touches()} == {("unpaid", "M1", "queued")}
