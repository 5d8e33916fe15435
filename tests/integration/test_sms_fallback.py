"""The SMS `fallback:` provider: Aliyun first, Tencent when Aliyun is down or out of balance, never both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario import AT, add_member
from sqlalchemy import select

from channels import build_channel
from channels.base import ChannelContext, OutcomeKind, Touch
from channels.fakes.aliyun_sms import AliyunSmsFake, aliyun_sms_app
from channels.fakes.server import FakeServer, free_port
from channels.fakes.tencent_sms import FakeTencentSms
from channels.fallback import FallbackChannel
from engine.config import Settings
from engine.ledger.token_store import LedgerTokenStore
from engine.run.receipts import pull_all
from engine.run.service import Service
from engine.store.connect import open_engine
from engine.store.schema import touches

KEY_ID, SECRET = "LTAI5tFakeKeyId", "fake-secret-0123456789"
PHONE = "13800138000"
K = OutcomeKind


@pytest.fixture(scope="module")
def aliyun_server() -> Iterator[FakeServer]:
    app = aliyun_sms_app({KEY_ID: SECRET}, sign_names={"麦德氏"}, templates={"SMS_4820931": ["name", "discount"]})
    with FakeServer(app) as running:
        yield running


@pytest.fixture
def aliyun(aliyun_server: FakeServer) -> AliyunSmsFake:
    state: AliyunSmsFake = aliyun_server.app.state.sms
    state.reset()
    return state


@pytest.fixture(scope="module")
def tencent_server() -> Iterator[tuple[FakeTencentSms, FakeServer]]:
    fake = FakeTencentSms()
    with FakeServer(fake.app) as server:
        yield fake, server


@pytest.fixture
def tencent(tencent_server: tuple[FakeTencentSms, FakeServer]) -> FakeTencentSms:
    tencent_server[0].reset()
    return tencent_server[0]


def sms_settings(aliyun_url: str, tencent_url: str) -> dict[str, Any]:
    fake = FakeTencentSms()
    return {"adapter": "aliyun_sms", "access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": "麦德氏",
            "base_url": aliyun_url, "timeout": 2.0, "pause_for": "10m",
            "fallback": {"adapter": "tencent_sms", "secret_id": fake.secret_id, "secret_key": fake.secret_key,
                         "sdk_app_id": fake.sdk_app_id, "sign_name": "麦德氏", "base_url": tencent_url,
                         "timeout": 2.0, "templates": {"SMS_4820931": {"id": "1234567",
                                                                       "params": ["name", "discount"]}}}}


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)  # the fakes check signature timestamps against real time

    def __call__(self) -> datetime:
        return self.at


def channel(aliyun_url: str, tencent_url: str, clock: Clock | None = None) -> FallbackChannel:
    settings = Settings.model_validate({"channels": {"sms": sms_settings(aliyun_url, tencent_url)}})
    built = build_channel("sms", settings.channels["sms"], ChannelContext(clock=clock))
    assert isinstance(built, FallbackChannel)
    return built


@pytest.fixture
def sms(aliyun_server: FakeServer, tencent_server: tuple[FakeTencentSms, FakeServer]) -> FallbackChannel:
    return channel(aliyun_server.url, tencent_server[1].url, Clock())


def touch(touch_id: str, phone: str = PHONE) -> Touch:
    return Touch(touch_id, "lapsed", f"m-{touch_id}", "sms", "o", address={"phone": phone},
                 message={"template_code": "SMS_4820931", "params": {"name": "王芳", "discount": "8折"}})


def send(sms: FallbackChannel, *batch: Touch) -> dict[str, Any]:
    return {o.touch_id: o for o in asyncio.run(sms.send(batch))}


def test_fallback__healthy_primary_sends_everything(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                                    tencent: FakeTencentSms) -> None:
    """Aliyun works: every touch goes to Aliyun, nothing to Tencent, and each outcome names Aliyun."""
    out = send(sms, touch("t1"), touch("t2", "13900139000"))
    assert {o.kind for o in out.values()} == {K.sent} and {o.provider for o in out.values()} == {"aliyun_sms"}
    assert sorted(s.out_id for s in aliyun.sends) == ["t1", "t2"] and tencent.sends == []


def test_fallback__out_of_balance_goes_to_tencent_and_rests_the_primary(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                                                        tencent: FakeTencentSms) -> None:
    """Aliyun answers isv.AMOUNT_NOT_ENOUGH: the touch goes to Tencent (one send), and for `pause_for`
    Aliyun is not asked again; after it, Aliyun is tried first again."""
    aliyun.fail_next("isv.AMOUNT_NOT_ENOUGH", 5)
    out = send(sms, touch("t1"))
    assert out["t1"].kind == K.sent and out["t1"].provider == "tencent_sms"
    assert [s.session_context for s in tencent.sends] == ["t1"] and aliyun.sends == []
    asked = len(aliyun.failures)
    out = send(sms, touch("t2"))
    assert out["t2"].provider == "tencent_sms" and len(aliyun.failures) == asked  # Aliyun rests
    aliyun.failures.clear()
    assert isinstance(sms.clock, Clock)
    sms.clock.at += timedelta(minutes=11)
    out = send(sms, touch("t3"))
    assert out["t3"].provider == "aliyun_sms" and [s.out_id for s in aliyun.sends] == ["t3"]
    assert [s.session_context for s in tencent.sends] == ["t1", "t2"]


def test_fallback__unreachable_primary_goes_to_tencent(tencent_server: tuple[FakeTencentSms, FakeServer],
                                                        tencent: FakeTencentSms) -> None:
    """Nothing listens where Aliyun should be (the request never left): Tencent sends it."""
    sms = channel(f"http://127.0.0.1:{free_port()}", tencent_server[1].url, Clock())
    out = send(sms, touch("t1"))
    assert out["t1"].kind == K.sent and out["t1"].provider == "tencent_sms"
    assert [s.session_context for s in tencent.sends] == ["t1"]


def test_fallback__lost_answer_is_never_sent_by_the_other(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                                          tencent: FakeTencentSms) -> None:
    """Aliyun accepted and the connection dropped: the outcome is unknown and stays Aliyun's."""
    aliyun.drop_next()
    out = send(sms, touch("t1"))
    assert out["t1"].kind == K.unknown and out["t1"].provider == "aliyun_sms"
    assert tencent.received == [] and [s.out_id for s in aliyun.sends] == ["t1"]


def test_fallback__rate_limit_is_retried_at_the_primary(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                                        tencent: FakeTencentSms) -> None:
    """Throttled by Aliyun: `retry` (the engine backs off and retries there), not a switch of provider."""
    aliyun.fail_next("Throttling.User", status=400)
    out = send(sms, touch("t1"))
    assert out["t1"].kind == K.retry and out["t1"].provider == "aliyun_sms" and tencent.received == []


def test_fallback__both_out_of_balance_is_fatal_for_the_channel(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                                                tencent: FakeTencentSms) -> None:
    """Tencent is out of balance too: the channel-fatal answer reaches the engine, which pauses the channel."""
    aliyun.fail_next("isv.AMOUNT_NOT_ENOUGH")
    tencent.fail_next("FailedOperation.InsufficientBalanceInSmsPackage")
    out = send(sms, touch("t1"))
    assert out["t1"].kind == K.channel_fatal and out["t1"].provider == "tencent_sms"
    assert aliyun.sends == [] and tencent.sends == []


def test_lookup__asks_the_provider_that_sent(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                             tencent: FakeTencentSms) -> None:
    """A touch Tencent sent is looked up at Tencent only; one Aliyun sent, at Aliyun only."""
    aliyun.fail_next("isv.AMOUNT_NOT_ENOUGH")
    send(sms, touch("t1"))
    assert isinstance(sms.clock, Clock)
    sms.clock.at += timedelta(minutes=11)
    send(sms, touch("t2", "13900139000"))
    tencent.received.clear()
    aliyun_calls = len(aliyun.nonces)  # every signed Aliyun request carries a fresh nonce
    found = {o.touch_id: o for o in asyncio.run(sms.lookup([replace(touch("t1"), provider="tencent_sms")]))}
    assert found["t1"].kind == K.sent and len(aliyun.nonces) == aliyun_calls and tencent.received
    tencent.received.clear()
    found = {o.touch_id: o for o in asyncio.run(sms.lookup([replace(touch("t2", "13900139000"),
                                                                    provider="aliyun_sms")]))}
    assert found["t2"].kind == K.sent and tencent.received == [] and len(aliyun.nonces) > aliyun_calls


def test_lookup__provider_not_known_asks_both(sms: FallbackChannel, aliyun: AliyunSmsFake,
                                              tencent: FakeTencentSms) -> None:
    """The sender died mid-send (no provider recorded): `sent` if either lists it, `not_sent` only if neither."""
    aliyun.fail_next("isv.AMOUNT_NOT_ENOUGH")
    send(sms, touch("t1"))
    found = {o.touch_id: o for o in asyncio.run(sms.lookup([touch("t1"), touch("t9", "13700137000")]))}
    assert found["t1"].kind == K.sent and found["t1"].provider == "tencent_sms"
    assert found["t9"].kind == K.not_sent


# -- through the engine: ledger rows remember the provider; receipts come from it ----------------

PLAYBOOK = """\
id: hello
name: 测试
trigger: {schedule: "0 10 * * *"}
audience:
  all:
    - reachable: sms
channels:
  - sms: {template_code: SMS_4820931, params: {name: "{{ member.nickname }}", discount: "8折"}}
"""


def _service(tmp_path: Path, db_url: str, sms: dict[str, Any], schedule: str = "0 10 * * *") -> Service:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        add_member(conn, "M1", phone="13812345678", nickname="小林")
        add_member(conn, "M2", phone="13912345678", nickname="小王")
    engine.dispose()
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "hello.yaml").write_text(PLAYBOOK.replace("0 10 * * *", schedule), encoding="utf-8")
    config = {"database": {"url": db_url}, "playbooks": str(tmp_path / "playbooks"), "channels": {"sms": sms},
              "policies": {"frequency": [], "quiet_hours": {}}, "dispatch": {"retry_wait": "0s"}}
    (tmp_path / "siyu.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return Service.load(tmp_path / "siyu.yaml")


def test_tick__out_of_balance_primary_sends_through_tencent_and_receipts_come_from_it(
        tmp_path: Path, db_url: str, aliyun_server: FakeServer, aliyun: AliyunSmsFake,
        tencent_server: tuple[FakeTencentSms, FakeServer], tencent: FakeTencentSms) -> None:
    """Aliyun has no balance: every touch is sent once, by Tencent; the ledger names Tencent; the
    receipt pull asks Tencent, and the rows become delivered."""
    service = _service(tmp_path, db_url, sms_settings(aliyun_server.url, tencent_server[1].url))
    try:
        aliyun.fail_next("isv.AMOUNT_NOT_ENOUGH", 10)
        tencent.clock = AT.timestamp  # the carrier records the sends at the test's time, not today's
        service.evaluator(clock=lambda: AT).tick(AT)
        asyncio.run(service.dispatcher(clock=lambda: AT).drain())
        with service.engine.connect() as conn:
            rows = {r.member_id: r for r in conn.execute(select(touches))}
        assert {m: (r.state, r.provider) for m, r in rows.items()} == {
            "M1": ("sent", "tencent_sms"), "M2": ("sent", "tencent_sms")}
        assert sorted(s.phone for s in tencent.sends) == ["+8613812345678", "+8613912345678"]
        assert aliyun.sends == []
        for sent in tencent.sends:
            sent.report_status, sent.description = "SUCCESS", "用户接收成功"
        pulled_at = AT + timedelta(minutes=5)  # the pull's look-back window is the vendor's, from this clock
        context = ChannelContext(store=LedgerTokenStore(service.engine), clock=lambda: pulled_at)
        channels = {"sms": build_channel("sms", service.settings.channels["sms"], context)}
        asyncio.run(pull_all(service.engine, channels, pulled_at))
        with service.engine.connect() as conn:
            delivered = {r.member_id: r.delivery for r in conn.execute(select(touches.c.member_id,
                                                                              touches.c.delivery))}
        assert delivered == {"M1": "delivered", "M2": "delivered"}
    finally:
        service.engine.dispose()


def test_tick__marketing_sms_wait_for_the_vendors_window(tmp_path: Path, db_url: str, aliyun_server: FakeServer,
                                                         aliyun: AliyunSmsFake) -> None:
    """With no quiet hours configured at all, a 22:30 SMS still waits for 08:00: the adapter's default
    `send_window` (08:00–22:00) is the vendors' marketing window; nothing reaches the fake before it."""
    sms = {k: v for k, v in sms_settings(aliyun_server.url, "").items() if k != "fallback"}
    service = _service(tmp_path, db_url, sms, schedule="30 22 * * *")
    late = AT.replace(hour=22, minute=30)
    try:
        service.evaluator(clock=lambda: late).tick(late)
        asyncio.run(service.dispatcher(clock=lambda: late).drain())
        with service.engine.connect() as conn:
            rows = conn.execute(select(touches.c.state, touches.c.not_before)).all()
        next_morning = (late + timedelta(days=1)).replace(hour=8, minute=0)
        assert [(r.state, r.not_before) for r in rows] == [("deferred", next_morning)] * 2
        assert aliyun.sends == []
    finally:
        service.engine.dispose()
