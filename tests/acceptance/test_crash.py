"""At most once, the hard way: `kill -9` loops, two daemons on one PostgreSQL database, slow sends.

The daemon runs as a real subprocess (daemon_harness.py) against a slow `log` sink
(`latency_ms` before each batch), so most kills land between `mark_sending` and the outcome
write. Afterwards the sink file and the ledger must agree: no touch written twice, every
row settled (`sent`, `failed`, `unknown`, `holdout`, `suppressed`), every `sent` row in the
file and every line of the file a `sent` (or `unknown`) row. Kill moments come from a seeded
random generator, so a failure replays with the same schedule.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon_harness import (
    EVENT_PLAYBOOK,
    PHONE,
    SCHEDULED_PLAYBOOK,
    SETTLED,
    Daemon,
    Daemons,
    ledger,
    run_rows,
    seed_members,
    seed_unpaid_orders,
    sink_lines,
    siyu,
    state_counts,
    wait_for,
    write_setup,
)
from testdb import new_database_url

SEED = 20261122
LIVES = 20
EVENTS = 300
TAGGED = 10  # members the minutely playbook touches at every occurrence
UNSETTLED = ("queued", "deferred", "sending")


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """A fresh migrated PostgreSQL database (several daemons need PostgreSQL)."""
    yield from new_database_url("postgresql", tmp_path)


def settled(db_url: str, events: int) -> bool:
    """Every event decided by the order nudge, and no row waiting to be sent or reconciled."""
    rows = ledger(db_url)
    return (sum(r["playbook"] == "order-nudge" for r in rows) >= events
            and not any(r["state"] in UNSETTLED for r in rows))


def in_flight(db_url: str, daemon: Daemon) -> int:
    """Rows the (dead) daemon had marked `sending` and not recorded: its kill interrupted a send."""
    return sum(1 for r in ledger(db_url) if r["state"] == "sending" and f":{daemon.pid}:" in (r["lease_owner"] or ""))


def assert_at_most_once(tmp_path: Path, db_url: str) -> list[dict[str, object]]:
    """The sink and the ledger agree, and nothing was written twice; returns the sink's lines."""
    lines = sink_lines(tmp_path / "touches.jsonl")
    twice = [k for k, n in Counter(line["touch_id"] for line in lines).items() if n > 1]
    assert not twice, f"{len(twice)} touches written more than once, e.g. {twice[:3]}"
    keys = Counter((line["playbook"], line["member_id"], line["occurrence"]) for line in lines)
    assert max(keys.values(), default=1) == 1, "a member got the same occurrence twice"
    rows = ledger(db_url)
    states = Counter(r["state"] for r in rows)
    assert set(states) <= set(SETTLED), f"rows left unsettled: {states}"
    sent = {r["touch_id"] for r in rows if r["state"] == "sent"}
    maybe = {r["touch_id"] for r in rows if r["state"] == "unknown"}
    written = {line["touch_id"] for line in lines}
    assert sent <= written, f"{len(sent - written)} `sent` rows are not in the sink"
    assert written <= sent | maybe, f"{len(written - sent - maybe)} lines of the sink are not sent/unknown rows"
    return lines


def assert_runs_once_and_finished(db_url: str, tagged: int) -> list[datetime]:
    """One finished `runs` row per scheduled occurrence, each occurrence deciding every tagged member once."""
    runs = run_rows(db_url)
    keys = Counter((r["playbook"], r["scheduled_for"]) for r in runs)
    assert max(keys.values(), default=1) == 1
    assert all(r["finished_at"] is not None for r in runs), [r for r in runs if r["finished_at"] is None]
    minutes = sorted(r["scheduled_for"] for r in runs if r["playbook"] == "minutely-hello")
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes)), minutes
    per_occurrence = Counter(r["occurrence"] for r in ledger(db_url) if r["playbook"] == "minutely-hello")
    expected = {m.astimezone(UTC).isoformat(): tagged for m in minutes}
    assert dict(per_occurrence) == expected
    return minutes


def assert_each_event_once(db_url: str, event_ids: list[str]) -> None:
    decided = Counter(r["occurrence"] for r in ledger(db_url) if r["playbook"] == "order-nudge")
    assert set(decided) == set(event_ids), f"{len(set(event_ids) - set(decided))} events never decided"
    assert max(decided.values()) == 1


# --------------------------------------------------------------------------- kill -9, twenty times


@pytest.mark.timeout(240)
def test_run__kill_9_twenty_times_never_sends_a_touch_twice(tmp_path: Path, db_url: str, daemons: Daemons) -> None:
    """SIGKILL at seeded random moments (start-up, deciding, mid-send), 20 times, restarting each time; a final
    daemon settles the expired leases through lookup and sends the rest: each touch is written at most once,
    every row ends settled, and the sink holds exactly the `sent` rows."""
    rng = random.Random(SEED)
    write_setup(tmp_path, db_url, {"nudge.yaml": EVENT_PLAYBOOK, "minutely.yaml": SCHEDULED_PLAYBOOK},
                latency_ms=50, batch_size=20, channel_batch=1, concurrency=1, lease="3s", misfire_grace="10m")
    member_ids = seed_members(db_url, EVENTS, tagged=TAGGED)
    event_ids = seed_unpaid_orders(db_url, member_ids)
    sink = tmp_path / "touches.jsonl"
    began = time.monotonic()
    interrupted = 0
    for _ in range(LIVES):
        daemon = daemons.start()
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.3, 1.2))  # most likely still starting up or deciding
        else:
            daemon.wait_ready()
            time.sleep(rng.uniform(0.05, 0.8))
        assert daemon.proc.poll() is None, f"the daemon died by itself: {daemon.stderr.read_text()}"
        daemon.kill()
        assert daemon.proc.returncode == -signal.SIGKILL
        interrupted += in_flight(db_url, daemon) > 0
    during_kills = len(sink_lines(sink))
    killing_s = time.monotonic() - began

    final = daemons.start()
    final.wait_ready()
    wait_for(lambda: settled(db_url, EVENTS), 60, "every row settled by the final daemon", every=0.5)
    final.signal(signal.SIGTERM)
    assert final.wait(15) == 0
    tick = siyu("tick", "--config", "config.yaml", cwd=tmp_path)
    assert tick.returncode == 0, tick.stderr
    total_s = time.monotonic() - began

    lines = assert_at_most_once(tmp_path, db_url)
    assert_each_event_once(db_url, event_ids)
    assert_runs_once_and_finished(db_url, TAGGED)
    counts = state_counts(db_url)
    assert counts.get("sent", 0) == len(lines) >= EVENTS + TAGGED
    status = siyu("status", "--config", "config.yaml", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["ledger"] == counts
    assert not [line for line in daemons.log_lines() if PHONE.search(line)]
    reconciled = Counter(r["state"] for d in daemons.started for r in d.events("touch.reconciled"))
    print(f"\n{db_url.split(':')[0]}: {LIVES} kills in {killing_s:.1f}s, {interrupted} mid-send; "
          f"{during_kills} of {len(lines)} touches sent before the final daemon; rows reconciled by lookup: {dict(reconciled)}; "
          f"{total_s:.1f}s in all; {dict(counts)}")
    assert interrupted >= LIVES // 4, f"only {interrupted} of {LIVES} kills landed mid-send"
    assert 0 < during_kills < len(lines), "the kills should interrupt the work, not miss it"
    assert reconciled["queued"] > 0, "no interrupted send was put back by an authoritative not_sent"


# --------------------------------------------------------------------------- two daemons, one database


@pytest.mark.postgresql
@pytest.mark.timeout(240)
def test_run__two_daemons_on_one_postgresql_database_touch_everyone_exactly_once(
        tmp_path: Path, pg_url: str, daemons: Daemons) -> None:
    """Two daemons with the same playbooks on one PostgreSQL database, events arriving while both poll, and a
    minute boundary both schedulers fire at: every decided send is written once, every event decided once,
    each scheduled occurrence has exactly one `runs` row, and both daemons did part of the sending."""
    write_setup(tmp_path, pg_url, {"nudge.yaml": EVENT_PLAYBOOK, "minutely.yaml": SCHEDULED_PLAYBOOK},
                latency_ms=50, batch_size=20, channel_batch=5, concurrency=2, lease="3s", misfire_grace="3m")
    member_ids = seed_members(pg_url, 200, tagged=TAGGED)
    event_ids = seed_unpaid_orders(pg_url, member_ids, prefix="A")
    began = datetime.now(UTC)
    first, second = daemons.start(), daemons.start()
    first.wait_ready()
    second.wait_ready()
    event_ids += seed_unpaid_orders(pg_url, member_ids[:100], prefix="B")
    next_minute = began.replace(second=0, microsecond=0) + timedelta(minutes=1)
    wait_for(lambda: any(r["scheduled_for"] == next_minute and r["finished_at"] for r in run_rows(pg_url)),
             90, f"the {next_minute:%H:%M} run", every=0.5)
    wait_for(lambda: settled(pg_url, len(event_ids)), 60, "every row settled", every=0.5)
    for daemon in (first, second):
        daemon.signal(signal.SIGTERM)
    assert (first.wait(15), second.wait(15)) == (0, 0)
    # A minute boundary may fall on the SIGTERM: a run cut short there is completed, as after any stop.
    tick = siyu("tick", "--config", "config.yaml", cwd=tmp_path)
    assert tick.returncode == 0, tick.stderr

    lines = assert_at_most_once(tmp_path, pg_url)
    assert_each_event_once(pg_url, event_ids)
    minutes = assert_runs_once_and_finished(pg_url, TAGGED)
    assert next_minute in minutes and len(minutes) >= 4
    rows = ledger(pg_url)
    assert Counter(r["state"] for r in rows) == {"sent": len(lines)}
    owners = Counter(r["lease_owner"].split(":")[1] for r in rows)
    assert owners[str(first.pid)] and owners[str(second.pid)], f"one daemon did all the sending: {owners}"
    both_fired = [d for d in (first, second) if any(r.get("event") == "schedule.fired" for r in d.records())]
    assert len(both_fired) == 2, "both schedulers should have fired at the minute boundary"
    print(f"\ntwo daemons: {len(lines)} touches, sent by pid {dict(owners)}; runs at "
          f"{', '.join(f'{m:%H:%M}' for m in minutes)}")


# --------------------------------------------------------------------------- leases of live senders


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("setting", "touches"), [
    ({"latency_ms": 4500}, 3),
    ({"latency_ms": 0, "rate_per_second": 2}, 12),
], ids=["vendor-slower-than-lease", "rate-limit-queue-longer-than-lease"])
def test_run__a_send_outlasting_its_lease_is_not_sent_twice(
        tmp_path: Path, sqlite_url: str, daemons: Daemons, setting: dict[str, int], touches: int) -> None:
    """One daemon whose claimed rows stay `sending` longer than `dispatch.lease` (a slow vendor, or a batch
    waiting behind the channel's rate limit) must not send them twice: its own reconciler must not take a
    live send for an abandoned one (the holder extends its leases while it lives)."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK}, lease="3s", grace="8s", **setting)
    seed_unpaid_orders(sqlite_url, seed_members(sqlite_url, touches))
    daemon = daemons.start()
    daemon.wait_ready()
    wait_for(lambda: state_counts(sqlite_url).get("sent", 0) >= touches, 40, f"{touches} sent touches", every=0.5)
    time.sleep(2)  # let any second send of a requeued row land
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    lines = sink_lines(tmp_path / "touches.jsonl")
    twice = {k: n for k, n in Counter(line["touch_id"] for line in lines).items() if n > 1}
    reconciled = [(r["touch_id"], r["state"]) for r in daemon.events("touch.reconciled")]
    assert not twice, (f"{len(twice)} of {touches} touches written twice by one live daemon; its reconciler took "
                       f"over its own in-flight rows: {reconciled[:5]}")
