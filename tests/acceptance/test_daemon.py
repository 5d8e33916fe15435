"""`siyu run` as systemd runs it: notifications, SIGTERM, SIGHUP, refusing a broken config, masked logs.

Each test starts the daemon as a real subprocess in tmp_path (daemon_harness.py) with every
channel on the slow `log` sink and scenarios due now: unpaid `order_created` events inserted
with occurred_at = now for an event playbook with no delay, picked up by the poller
(`poll_interval: 1s`). Every wait has a timeout, and the `daemons` fixture kills whatever
is left running.

The unit file `packaging/siyu.service` is checked here too: its directives, and
`systemd-analyze verify` when it is installed.
"""

from __future__ import annotations

import configparser
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from daemon_harness import (
    BROKEN_PLAYBOOK,
    EVENT_PLAYBOOK,
    PHONE,
    ROOT,
    SIGNUP_PLAYBOOK,
    Daemon,
    Daemons,
    NotifySocket,
    ledger,
    phone_of,
    seed_events,
    seed_members,
    seed_unpaid_orders,
    sink_lines,
    siyu,
    state_counts,
    wait_for,
    write_setup,
)
from sqlalchemy import update

from engine.clock import parse_duration
from engine.store.connect import open_engine, write_transaction
from engine.store.schema import members

UNIT = ROOT / "packaging" / "siyu.service"
LOCATED = re.compile(r"(?P<file>[\w./-]+\.ya?ml):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)")


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def sent_ids(db_url: str, playbook: str | None = None) -> set[str]:
    return {r["touch_id"] for r in ledger(db_url) if r["state"] == "sent" and playbook in (None, r["playbook"])}


def wait_sent(db_url: str, count: int, timeout: float, playbook: str | None = None) -> None:
    wait_for(lambda: len(sent_ids(db_url, playbook)) >= count, timeout,
             f"{count} sent touches{f' of {playbook}' if playbook else ''}")


def stop(daemon: Daemon, timeout: float = 20) -> int:
    daemon.signal(signal.SIGTERM)
    return daemon.wait(timeout)


def assert_no_phone(group: Daemons) -> None:
    leaks = [line for line in group.log_lines() if PHONE.search(line)]
    assert not leaks, f"full phone numbers in the daemon's output: {leaks[:3]}"


def assert_sink_matches_ledger(tmp_path: Path, db_url: str) -> None:
    """Each touch in the sink once, and the sink's touches are exactly the ledger's `sent` rows."""
    ids = [line["touch_id"] for line in sink_lines(tmp_path / "touches.jsonl")]
    assert len(ids) == len(set(ids)), "a touch was written twice"
    assert set(ids) == sent_ids(db_url)


# --------------------------------------------------------------------------- systemd notifications


def test_run__notifies_ready_watchdog_status_and_stopping(
        tmp_path: Path, sqlite_url: str, daemons: Daemons, notify: NotifySocket) -> None:
    """Under a NOTIFY_SOCKET with WATCHDOG_USEC=2 s: READY=1 once, WATCHDOG=1 every second, STATUS= lines,
    and STOPPING=1 on SIGTERM before a clean exit 0."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK})
    seed_unpaid_orders(sqlite_url, seed_members(sqlite_url, 5))
    daemon = daemons.start(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    notify.wait_for("READY=1", timeout=30)
    notify.wait_for("WATCHDOG=1", timeout=5, count=3)  # pings at half of WATCHDOG_USEC: about 1 s apart
    wait_sent(sqlite_url, 5, timeout=15)
    assert stop(daemon) == 0
    notify.wait_for("STOPPING=1", timeout=5)
    messages = notify.drain()
    assert messages.count("READY=1") == 1
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    assert messages.index("READY=1") < messages.index("WATCHDOG=1")
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert statuses and all(len(s) > len("STATUS=") for s in statuses), statuses
    assert [r["event"] for r in daemon.records()][-2:] == ["daemon.stopping", "daemon.stopped"]


def test_run__watchdog_keeps_pinging_during_the_shutdown_grace(
        tmp_path: Path, sqlite_url: str, daemons: Daemons, notify: NotifySocket) -> None:
    """While SIGTERM waits out an in-flight send, WATCHDOG=1 keeps arriving (STYLE.md §16), and the send finishes.

    `systemctl stop` disarms systemd's watchdog, but a SIGTERM from elsewhere (kill, a container runtime)
    leaves the unit `running` with WatchdogSec=30 armed while dispatch.grace (30 s) runs: without pings,
    systemd aborts the daemon in the middle of its grace."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK}, latency_ms=4000, grace="8s", lease="30s")
    seed_unpaid_orders(sqlite_url, seed_members(sqlite_url, 1))
    daemon = daemons.start(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    notify.wait_for("READY=1", timeout=30)
    wait_for(lambda: state_counts(sqlite_url).get("sending"), 15, "the touch to be in flight")
    stopped_at = time.monotonic()
    assert stop(daemon) == 0
    assert time.monotonic() - stopped_at < 8 + 2
    messages = notify.drain()
    after_stopping = messages[messages.index("STOPPING=1"):]
    assert state_counts(sqlite_url) == {"sent": 1}, "the in-flight send was not let finish"
    assert after_stopping.count("WATCHDOG=1") >= 2, (
        f"no watchdog pings while waiting ~3.5 s for the in-flight send: {after_stopping}")


# --------------------------------------------------------------------------- SIGTERM


def test_run__sigterm_stops_claiming_and_exits_0_within_the_grace(
        tmp_path: Path, db_url: str, daemons: Daemons) -> None:
    """SIGTERM in the middle of a long queue: in-flight batches finish and are recorded, nothing more is
    claimed, the daemon exits 0 well within dispatch.grace, and no row is left `sending`."""
    write_setup(tmp_path, db_url, {"nudge.yaml": EVENT_PLAYBOOK}, latency_ms=500, channel_batch=5, concurrency=2,
                grace="5s")
    seed_unpaid_orders(db_url, seed_members(db_url, 300))
    daemon = daemons.start()
    daemon.wait_ready()
    wait_for(lambda: sink_lines(tmp_path / "touches.jsonl"), 20, "the first touch in the sink")
    stopped_at = time.monotonic()
    assert stop(daemon, timeout=30) == 0
    elapsed = time.monotonic() - stopped_at
    assert elapsed < 5, f"took {elapsed:.1f}s to stop with a 5s grace"
    counts = state_counts(db_url)
    assert "sending" not in counts, counts
    assert counts.get("queued", 0) > 0, f"it kept claiming after SIGTERM: {counts}"
    assert_sink_matches_ledger(tmp_path, db_url)
    events = [r["event"] for r in daemon.records()]
    assert events[-1] == "daemon.stopped" and "daemon.stopping" in events
    assert "Traceback" not in daemon.stderr.read_text()


def test_run__sigterm_with_a_send_longer_than_the_grace_exits_0_and_the_touch_is_reconciled(
        tmp_path: Path, sqlite_url: str, daemons: Daemons) -> None:
    """A send still in flight when the grace runs out is abandoned: exit 0 within the grace, the row stays
    `sending` under its lease, and after the lease a `siyu tick` settles it through lookup and sends it once."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK}, latency_ms=10_000, grace="2s", lease="3s")
    seed_unpaid_orders(sqlite_url, seed_members(sqlite_url, 1))
    daemon = daemons.start()
    daemon.wait_ready()
    wait_for(lambda: state_counts(sqlite_url).get("sending"), 15, "the touch to be in flight")
    stopped_at = time.monotonic()
    assert stop(daemon) == 0
    assert time.monotonic() - stopped_at < 2 + 1.5
    assert state_counts(sqlite_url) == {"sending": 1}
    assert sink_lines(tmp_path / "touches.jsonl") == []
    time.sleep(3.2)  # the lease runs out
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace(
        "latency_ms: 10000", "latency_ms: 0"), encoding="utf-8")
    result = siyu("tick", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert state_counts(sqlite_url) == {"sent": 1}
    assert_sink_matches_ledger(tmp_path, sqlite_url)
    assert len(sink_lines(tmp_path / "touches.jsonl")) == 1


# --------------------------------------------------------------------------- SIGHUP


def test_run__sighup_with_broken_files_keeps_the_old_set(tmp_path: Path, db_url: str, daemons: Daemons) -> None:
    """SIGHUP after a broken playbook, then after a broken config: each problem is logged as reload.rejected
    with file:line, the daemon keeps running the old playbooks, and still sends for them."""
    config = write_setup(tmp_path, db_url, {"nudge.yaml": EVENT_PLAYBOOK})
    first = seed_members(db_url, 5)
    seed_unpaid_orders(db_url, first, prefix="A")
    daemon = daemons.start()
    daemon.wait_ready()
    wait_sent(db_url, 5, timeout=20)

    (tmp_path / "playbooks" / "broken.yaml").write_text(BROKEN_PLAYBOOK, encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("reload.kept_old_set"), 15, "reload.kept_old_set")
    problems = [r["problem"] for r in daemon.events("reload.rejected")]
    located = {(Path(m["file"]).name, int(m["line"])) for p in problems if (m := LOCATED.search(p))}
    assert {("broken.yaml", 4), ("broken.yaml", 8)} <= located, problems
    assert daemon.events("reload.kept_old_set")[-1]["playbooks"] == 1

    (tmp_path / "playbooks" / "broken.yaml").unlink()
    config.write_text(config.read_text() + "pol_interval: 1s\n", encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.events("reload.kept_old_set")) == 2, 15, "a second reload.kept_old_set")
    problems = [r["problem"] for r in daemon.events("reload.rejected")]
    line = len(config.read_text().splitlines())
    assert any(p.startswith(f"{config}:{line}:1: unknown key 'pol_interval'") for p in problems), problems
    assert not daemon.events("reload.done")

    seed_unpaid_orders(db_url, seed_members(db_url, 5, start=100), prefix="B")
    wait_sent(db_url, 10, timeout=20, playbook="order-nudge")
    assert daemon.proc.poll() is None
    assert stop(daemon) == 0
    assert_sink_matches_ledger(tmp_path, db_url)
    assert_no_phone(daemons)


def test_run__sighup_with_a_valid_new_playbook_adds_it(tmp_path: Path, db_url: str, daemons: Daemons) -> None:
    """SIGHUP after adding a valid playbook swaps in the new set: its events are touched, the old ones too."""
    write_setup(tmp_path, db_url, {"nudge.yaml": EVENT_PLAYBOOK})
    member_ids = seed_members(db_url, 6)
    daemon = daemons.start()
    daemon.wait_ready()
    (tmp_path / "playbooks" / "signup.yaml").write_text(SIGNUP_PLAYBOOK, encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("reload.done"), 15, "reload.done")
    assert daemon.events("reload.done")[-1]["playbooks"] == 2
    assert not daemon.events("reload.rejected")
    seed_events(db_url, member_ids, "signed_up", prefix="S")
    seed_unpaid_orders(db_url, member_ids[:3], prefix="A")
    wait_sent(db_url, 6, timeout=20, playbook="signup-welcome")
    wait_sent(db_url, 3, timeout=20, playbook="order-nudge")
    assert stop(daemon) == 0
    assert_sink_matches_ledger(tmp_path, db_url)


# --------------------------------------------------------------------------- a broken config at start-up


MISSING_ENV = "SIYU_TEST_SURELY_UNSET_TOKEN"


@pytest.mark.parametrize(("breakage", "where", "message"), [
    ("unknown key", "config.yaml:13:1", "unknown key 'pol_interval' (did you mean 'poll_interval'?)"),
    ("missing env", "config.yaml:1:", f"environment variable {MISSING_ENV} is not set"),
    ("broken playbook", "broken.yaml:4:1", "unknown key 'audiance'"),
], ids=["unknown-key", "missing-env", "broken-playbook"])
def test_run__refuses_to_start_on_a_broken_config(tmp_path: Path, sqlite_url: str, breakage: str, where: str,
                                                  message: str) -> None:
    """An unknown key, a missing ${ENV} or an invalid playbook: `siyu run` exits non-zero at once with
    file:line and no traceback, and never reports ready."""
    config = write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK})
    if breakage == "unknown key":
        config.write_text(config.read_text() + "pol_interval: 1s\n", encoding="utf-8")
    elif breakage == "missing env":
        config.write_text(config.read_text().replace("sqlite:///", f"${{{MISSING_ENV}}}sqlite:///"),
                          encoding="utf-8")
    else:
        (tmp_path / "playbooks" / "broken.yaml").write_text(BROKEN_PLAYBOOK, encoding="utf-8")
    result = siyu("run", "--config", "config.yaml", cwd=tmp_path, timeout=60)
    assert result.returncode not in (0, None)
    assert "Traceback" not in result.stderr + result.stdout
    assert "daemon.ready" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if where in line]
    assert any(message in line for line in lines), result.stderr


# --------------------------------------------------------------------------- logs


def test_run__logs_name_every_touch_and_never_a_full_phone_number(
        tmp_path: Path, sqlite_url: str, daemons: Daemons) -> None:
    """Messages carry members' phones (their nicknames are phone numbers here, and a rejected playbook has
    one as a key), yet no line the daemon writes holds a full 11-digit number; each touch.sent line names the
    touch id, playbook, member id, channel and state."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK})
    member_ids = seed_members(sqlite_url, 5)
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        for n, member_id in enumerate(member_ids):
            conn.execute(update(members).where(members.c.member_id == member_id).values(nickname=phone_of(n)))
    engine.dispose()
    seed_unpaid_orders(sqlite_url, member_ids)
    daemon = daemons.start()
    daemon.wait_ready()
    wait_sent(sqlite_url, 5, timeout=20)
    (tmp_path / "playbooks" / "broken.yaml").write_text(
        BROKEN_PLAYBOOK.replace("channels:", f"{phone_of(3)}: oops\nchannels:"), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("reload.kept_old_set"), 15, "reload.kept_old_set")
    assert stop(daemon) == 0

    sink = (tmp_path / "touches.jsonl").read_text(encoding="utf-8")
    assert phone_of(0) in sink, "the scenario should put phones in the messages"
    assert_no_phone(daemons)
    assert any("138****0003" in r["problem"] for r in daemon.events("reload.rejected"))
    sent = daemon.events("touch.sent")
    assert len(sent) == 5
    for record in sent:
        assert {"touch_id", "playbook", "member_id", "channel", "state"} <= set(record), record
        assert record["state"] == "sent" and record["playbook"] == "order-nudge" and record["channel"] == "sms"
    assert {r["touch_id"] for r in sent} == sent_ids(sqlite_url)


@pytest.mark.parametrize("written", ["13812345678", "+8613812345678"])
def test_run__a_rejected_reload_never_logs_a_full_phone_number(
        tmp_path: Path, sqlite_url: str, daemons: Daemons, written: str) -> None:
    """A phone number quoted back by a rejected playbook is masked in the reload.rejected line, also in E.164
    form (+8613812345678: phones are stored as imported, and CRM exports often write them so)."""
    write_setup(tmp_path, sqlite_url, {"nudge.yaml": EVENT_PLAYBOOK})
    daemon = daemons.start()
    daemon.wait_ready()
    (tmp_path / "playbooks" / "broken.yaml").write_text(
        BROKEN_PLAYBOOK.replace("channels:", f'"{written}": oops\nchannels:'), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("reload.kept_old_set"), 15, "reload.kept_old_set")
    assert stop(daemon) == 0
    (quoted,) = [r["problem"] for r in daemon.events("reload.rejected") if "broken.yaml:7:1" in r["problem"]]
    assert written[-11:] not in quoted, f"logged in full: {quoted[:60]}"
    assert "138****5678" in quoted
    assert_no_phone(daemons)


# --------------------------------------------------------------------------- packaging/siyu.service


def unit_directives() -> dict[str, dict[str, list[str]]]:
    """section → key → every value given (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def test_service_unit__is_a_hardened_notify_service() -> None:
    """The unit is Type=notify with a watchdog, restarts on failure, runs as siyu with the documented paths,
    reloads with SIGHUP, stops with SIGTERM with a timeout longer than the dispatch grace, and is hardened."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    service = unit_directives()["Service"]
    one = {key: values[-1] for key, values in service.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "siyu", "Group": "siyu", "WorkingDirectory": "/var/lib/siyu",
        "ExecStart": "/opt/siyu/.venv/bin/siyu run --config /etc/siyu/config.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID", "KillSignal": "SIGTERM", "EnvironmentFile": "-/etc/siyu/env",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/siyu",
        "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "LockPersonality": "yes",
    }
    assert {key: one.get(key) for key in expected} == expected
    assert parser.get("Install", "WantedBy") == "multi-user.target"
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    grace = parse_duration(example["dispatch"]["grace"]).total_seconds()
    stop_timeout = float(one["TimeoutStopSec"].removesuffix("s"))
    assert stop_timeout > grace + 5, f"TimeoutStopSec={stop_timeout} leaves no margin over dispatch.grace={grace}"
    assert float(one["WatchdogSec"]) >= 2 * 10, "the daemon pings at most every 10 s"
    comments = [line for line in UNIT.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert len(comments) >= 10, "the unit explains its choices in comments"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_service_unit__passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning (ExecStart points at a stub,
    as /opt/siyu is not installed here)."""
    stub = tmp_path / "siyu"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    unit = tmp_path / "siyu.service"
    text = UNIT.read_text(encoding="utf-8")
    assert "/opt/siyu/.venv/bin/siyu " in text
    unit.write_text(text.replace("/opt/siyu/.venv/bin/siyu ", f"{stub} "), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    mine = [line for line in output.splitlines() if "siyu.service" in line]
    assert result.returncode == 0 and not mine, output


# --------------------------------------------------------------------------- callbacks at shutdown


def test_run__sigterm_with_a_receipt_push_in_flight_answers_it_and_exits_cleanly(
        tmp_path: Path, sqlite_url: str, daemons: Daemons) -> None:
    """A vendor's receipt push still being written when SIGTERM arrives (here: waiting for the SQLite
    write lock) is finished, recorded and acknowledged before the daemon exits 0, with no traceback."""
    import threading
    from datetime import UTC, datetime

    import httpx
    from sqlalchemy import insert, select

    from channels.fakes.aliyun_sms import SentSms, sms_report_body
    from engine.store.schema import touches

    secret = "daemon-test-callback-secret-000000000"
    write_setup(tmp_path, sqlite_url, {}, sms=(
        '{adapter: aliyun_sms, access_key_id: k, access_key_secret: s, sign_name: 麦德氏, '
        f'base_url: "http://127.0.0.1:9", callback_secret: {secret}}}'))
    seed_members(sqlite_url, 1)
    sent_at = datetime.now(UTC)
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(insert(touches).values(
            touch_id="TPUSH000000001", playbook="p", member_id="M00000", occurrence="o", state="sent",
            channel="sms", decided_at=sent_at, touch_at=sent_at, sent_at=sent_at, vendor_id="biz-1"))
    body = sms_report_body([SentSms(phone_of(0), "麦德氏", "SMS_1", {}, "TPUSH000000001", "biz-1",
                                    sent_at.strftime("%Y%m%d"), sent_at, status=3, err_code="DELIVERED")])
    daemon = daemons.start()
    daemon.wait_ready()
    [listening] = wait_for(lambda: daemon.events("callbacks.listening"), 30, "callbacks.listening")
    [address] = listening["bound"]

    answers: list[httpx.Response] = []
    with write_transaction(engine):  # the push's write waits for this lock
        push = threading.Thread(target=lambda: answers.append(
            httpx.post(f"http://{address}/callbacks/aliyun/sms-report/{secret}", content=body, timeout=30)))
        push.start()
        time.sleep(0.5)  # the request is in the handler, waiting for the lock
        daemon.signal(signal.SIGTERM)
        time.sleep(1.0)
    push.join(30)
    assert daemon.wait(30) == 0
    [answer] = answers
    assert answer.status_code == 200 and answer.json()["code"] == 0
    with engine.connect() as conn:
        assert conn.execute(select(touches.c.delivery).where(touches.c.touch_id == "TPUSH000000001")
                            ).scalar_one() == "delivered"
    engine.dispose()
    stderr = daemon.stderr.read_text(encoding="utf-8")
    assert "Traceback" not in stderr and "Exception in ASGI application" not in stderr, stderr
    assert [r["event"] for r in daemon.records()][-1] == "daemon.stopped"
