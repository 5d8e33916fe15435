"""Dispatch outcomes, played by the stub adapter: retried, failed, dead addresses, unknown, paused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scenario import AT, add_member
from sqlalchemy import select
from structlog.testing import capture_logs

from channels.stub import StubChannel
from engine.cli import main
from engine.run.service import Service
from engine.store.connect import open_engine
from engine.store.schema import channel_pauses, suppressions, touches

PLAYBOOK = """\
id: hello
name: 测试
trigger: {schedule: "0 10 * * *"}
audience:
  all:
    - reachable: sms
channels:
  - sms: {template_code: SMS_1, params: {name: "{{ member.nickname }}"}}
"""


_services: list[Service] = []


@pytest.fixture(autouse=True)
def _dispose_services() -> Iterator[None]:
    yield
    while _services:
        _services.pop().engine.dispose()


def _service(tmp_path: Path, db_url: str, stub: str) -> Service:
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "hello.yaml").write_text(PLAYBOOK, encoding="utf-8")
    config = tmp_path / "siyu.yaml"
    config.write_text(f"""\
database: {{url: "{db_url}"}}
playbooks: {tmp_path / 'playbooks'}
channels:
  sms: {{adapter: stub, {stub}}}
policies: {{frequency: [], quiet_hours: {{}}}}
dispatch: {{max_attempts: 3, retry_wait: 0s, lease: 4s}}
""", encoding="utf-8")
    service = Service.load(config)
    _services.append(service)
    return service


def _members(db_url: str, *ids: str) -> None:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        for member_id in ids:
            add_member(conn, member_id, phone="13812345678", nickname="小林")
    engine.dispose()


def _states(service: Service) -> dict[str, str]:
    with service.engine.connect() as conn:
        return {row.member_id: row.state for row in conn.execute(select(touches.c.member_id, touches.c.state))}


def _tick(service: Service) -> dict[str, str]:
    service.evaluator(clock=lambda: AT).tick(AT)
    asyncio.run(service.dispatcher(clock=lambda: AT).drain())
    with service.engine.connect() as conn:
        return {row.member_id: row.state for row in conn.execute(select(touches.c.member_id, touches.c.state))}


def test_dispatch__retry_then_sent_is_one_touch(tmp_path: Path, db_url: str) -> None:
    """A throttled touch is retried with backoff and sent once: two not-accepted attempts, then accepted."""
    _members(db_url, "M1", "M2")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [retry, retry, sent]}')
    assert _tick(service) == {"M1": "sent", "M2": "sent"}
    sent_ids = [t.member_id for batch in StubChannel.calls["sms"] for t in batch]
    assert sent_ids.count("M1") == 3 and sent_ids.count("M2") == 1


def test_dispatch__one_log_line_per_touch_outcome_and_one_per_retry(tmp_path: Path, db_url: str) -> None:
    """Each touch's outcome is one `touch.*` line, with the member but no phone; a retry of a slice is
    one line with how many touches were not accepted and the vendor's codes."""
    _members(db_url, "M1", "M2")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [retry, sent]}')
    with capture_logs() as logs:
        assert _tick(service) == {"M1": "sent", "M2": "sent"}
    touch_lines = [e for e in logs if e["event"].startswith("touch.")]
    assert sorted((e["event"], e["member_id"]) for e in touch_lines) == [("touch.sent", "M1"), ("touch.sent", "M2")]
    assert [(e["attempt"], e["touches"], e["codes"]) for e in logs if e["event"] == "dispatch.retry"] == [
        (1, 1, {"STUB_RETRY": 1})]
    assert "13812345678" not in repr(logs)


def test_dispatch__retries_are_bounded_then_failed(tmp_path: Path, db_url: str) -> None:
    """A touch never accepted within max_attempts ends `failed`, after exactly max_attempts calls."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [retry]}')
    assert _tick(service) == {"M1": "failed"}
    assert sum(len(batch) for batch in StubChannel.calls["sms"]) == 3


def test_dispatch__dead_address_fails_and_is_suppressed(tmp_path: Path, db_url: str) -> None:
    """An invalid number fails the touch and records an SMS suppression for that phone."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [failed_member]}')
    assert _tick(service) == {"M1": "failed"}
    with service.engine.connect() as conn:
        rows = conn.execute(select(suppressions.c.phone, suppressions.c.channel, suppressions.c.source)).all()
    assert [tuple(r) for r in rows] == [("13812345678", "sms", "vendor")]


def _drain_at(service: Service, at: datetime) -> dict[str, str]:
    asyncio.run(service.dispatcher(clock=lambda: at).drain())
    with service.engine.connect() as conn:
        return {row.member_id: row.state for row in conn.execute(select(touches.c.member_id, touches.c.state))}


def test_dispatch__unknown_outcome_waits_for_lookup_and_is_never_resent(tmp_path: Path, db_url: str) -> None:
    """A send whose outcome is unknown stays `sending` until its lease runs out; then the vendor's
    query API (which says nothing definite) leaves it `unknown`, and no later tick sends it again."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [unknown]}, lookup: unknown')
    assert _tick(service) == {"M1": "sending"}
    assert _drain_at(service, AT + timedelta(seconds=3)) == {"M1": "sending"}  # lease 4s: not yet asked
    assert _drain_at(service, AT + timedelta(seconds=5)) == {"M1": "unknown"}
    assert _drain_at(service, AT + timedelta(seconds=60)) == {"M1": "unknown"}
    assert sum(len(batch) for batch in StubChannel.calls["sms"]) == 1
    with service.engine.connect() as conn:
        row = conn.execute(select(touches.c.error_code)).one()
    assert row.error_code == "STUB_UNKNOWN"


def test_dispatch__unknown_outcome_that_the_vendor_lists_is_sent(tmp_path: Path, db_url: str) -> None:
    """The answer was lost but the vendor's query API lists the message: `sent`, with no second send."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [unknown]}, lookup: sent')
    assert _tick(service) == {"M1": "sending"}
    assert _drain_at(service, AT + timedelta(seconds=5)) == {"M1": "sent"}
    assert sum(len(batch) for batch in StubChannel.calls["sms"]) == 1


def test_dispatch__unknown_outcome_the_vendor_never_received_is_sent_again_once(tmp_path: Path,
                                                                                 db_url: str) -> None:
    """The vendor provably has no such message (`not_sent`): the row goes back to the queue and is sent."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [unknown, sent]}, lookup: not_sent')
    assert _tick(service) == {"M1": "sending"}
    assert _drain_at(service, AT + timedelta(seconds=5)) == {"M1": "sent"}
    assert sum(len(batch) for batch in StubChannel.calls["sms"]) == 2


def test_dispatch__channel_fatal_pauses_and_loses_nothing(tmp_path: Path, db_url: str) -> None:
    """No balance: the channel pauses (for every dispatcher), the touches wait, and after `pause_for`
    one probe send resumes it."""
    _members(db_url, "M1", "M2")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [channel_fatal, sent], M2: [channel_fatal, sent]}')
    service.evaluator(clock=lambda: AT).tick(AT)
    dispatcher = service.dispatcher(clock=lambda: AT)
    asyncio.run(dispatcher.drain())
    assert "sms" in dispatcher.paused
    assert _states(service) == {"M1": "queued", "M2": "queued"}
    soon = AT + timedelta(minutes=5)
    asyncio.run(service.dispatcher(clock=lambda: soon).drain())
    assert _states(service) == {"M1": "queued", "M2": "queued"}, "still paused: nothing is claimed"
    later = AT + timedelta(minutes=11)
    probe = service.dispatcher(clock=lambda: later)
    asyncio.run(probe.drain())
    assert _states(service) == {"M1": "sent", "M2": "sent"}
    assert probe.paused == {}
    with service.engine.connect() as conn:
        assert conn.execute(select(channel_pauses)).all() == []


def test_dispatch__channel_resume_command_lifts_a_pause(tmp_path: Path, db_url: str) -> None:
    """`siyu channel resume sms` ends a pause at once: the next dispatch sends."""
    _members(db_url, "M1")
    service = _service(tmp_path, db_url, 'outcomes: {M1: [channel_fatal, sent]}')
    service.evaluator(clock=lambda: AT).tick(AT)
    asyncio.run(service.dispatcher(clock=lambda: AT).drain())
    assert main(["channel", "resume", "sms", "--config", str(tmp_path / "siyu.yaml")]) == 0
    asyncio.run(service.dispatcher(clock=lambda: AT).drain())
    assert _states(service) == {"M1": "sent"}


def test_dispatch__permanent_error_fails_at_once(tmp_path: Path, db_url: str) -> None:
    """A non-retryable ChannelError fails the batch without a retry."""
    _members(db_url, "M1", "M2")
    service = _service(tmp_path, db_url, 'raise_error: permanent')
    assert _tick(service) == {"M1": "failed", "M2": "failed"}
    assert len(StubChannel.calls["sms"]) == 1


def test_tick_command__loads_the_config_once_and_prints_one_round(tmp_path: Path, db_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu tick --at` reads its config once, then decides, sends and pulls receipts in one round and
    prints what each step did."""
    import engine.config
    import engine.logs
    import engine.run.service

    _members(db_url, "M1", "M2")
    _service(tmp_path, db_url, 'outcomes: {M2: [failed]}')
    loads: list[Path] = []
    real = engine.config.load_config

    def counted(path: Path, **options: Any) -> Any:
        loads.append(path)
        return real(path, **options)

    monkeypatch.setattr(engine.config, "load_config", counted)
    monkeypatch.setattr(engine.run.service, "load_config", counted)
    monkeypatch.setattr(engine.logs, "configure", lambda *args: None)  # keep the tests' logging as it is
    assert main(["tick", "--config", str(tmp_path / "siyu.yaml"), "--at", "2026-11-22 10:00"]) == 0
    assert loads == [tmp_path / "siyu.yaml"]
    out = capsys.readouterr().out.splitlines()
    assert out[out.index("siyu tick as of 2026-11-22T10:00:00+08:00"):] == [
        "siyu tick as of 2026-11-22T10:00:00+08:00",
        "  decided send              2",
        "  dispatched failed         1",
        "  dispatched sent           1",
    ]
