"""The `wechat_template` adapter against its loopback fake: request shape, limits, tokens, codes, lookup, push."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from channels.base import Channel, ChannelContext, OutcomeKind, Touch
from channels.fakes.server import FakeServer, free_port
from channels.fakes.wechat_template import WechatFake
from channels.wechat.crypto import plain_signature
from channels.wechat.template import (
    _CODES,
    ACKNOWLEDGEMENT,
    WechatTemplateChannel,
    WechatTemplateSettings,
    parse_event,
)
from engine.ledger.token_store import LedgerTokenStore
from engine.store.connect import open_engine

OPENID = "oFOLLOWER_0123456789abcdef"
TEMPLATE = "TPL_points_expiry"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeServer, list[Any]]]:
    """One loopback server for the module; each test plugs a fresh fake into it."""
    current: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await current[0](scope, receive, send)

    with FakeServer(app) as running:
        yield running, current


@pytest.fixture
def fake(server: tuple[FakeServer, list[Any]]) -> WechatFake:
    running, current = server
    state = WechatFake(followers={OPENID, "oSECOND_0123456789abcdef"}, templates={TEMPLATE}, url=running.url)
    current[:] = [state.app]
    return state


def channel(fake: WechatFake, *, store: Any = None, clock: Clock | None = None, **extra: Any) -> WechatTemplateChannel:
    settings = WechatTemplateSettings.model_validate(
        {"adapter": "wechat_template", "app_id": fake.app_id, "app_secret": fake.app_secret,
         "base_url": fake.url, "timeout": 2.0, "token": fake.push_token, **extra})
    tokens = None if store is None else LedgerTokenStore(store)
    return WechatTemplateChannel("template", settings, ChannelContext(store=tokens, clock=clock))


def touch(n: int = 1, openid: str = OPENID, **data: str) -> Touch:
    return Touch(touch_id=f"t{n:04d}", playbook="points", member_id=f"m{n}", channel="template",
                 occurrence="2024-05-06T02:00:00Z", address={"oa_openid": openid},
                 message={"template_id": TEMPLATE, "url": "https://shop.example/points",
                          "data": data or {"thing1": "积分即将过期", "time2": "2024-05-31"}})


def send(adapter: WechatTemplateChannel, *touches: Touch) -> list[Any]:
    return asyncio.run(adapter.send(touches))


def test_send__documented_shape_with_touch_id_as_client_msg_id(fake: WechatFake) -> None:
    """One send is a template/send with touser, template_id, url, {key: {value}} data and client_msg_id = touch id."""
    adapter = channel(fake)
    assert isinstance(adapter, Channel)
    [outcome] = send(adapter, touch(1))
    assert outcome.kind == OutcomeKind.sent
    [body] = fake.received
    assert body == {"touser": OPENID, "template_id": TEMPLATE, "url": "https://shop.example/points",
                    "client_msg_id": "t0001",
                    "data": {"thing1": {"value": "积分即将过期"}, "time2": {"value": "2024-05-31"}}}
    assert outcome.vendor_id == str(fake.messages[0]["msgid"])
    assert fake.token_calls == 1


def test_send__keyword_of_21_characters_fails_without_a_request(fake: WechatFake) -> None:
    """A keyword value over the 2023 limit of 20 characters fails before anything is sent."""
    outcomes = send(channel(fake), touch(1, thing1="一" * 21), touch(2, thing1="一" * 20))
    assert [o.kind for o in outcomes] == [OutcomeKind.failed, OutcomeKind.sent]
    assert outcomes[0].code == "LIMIT" and "21 characters" in (outcomes[0].message or "")
    assert [b["client_msg_id"] for b in fake.received] == ["t0002"]


def test_send__token_expired_mid_run_refreshes_once(fake: WechatFake) -> None:
    """An expired token (42001) is refreshed once for the whole batch and each send retried once."""
    adapter = channel(fake)
    assert [o.kind for o in send(adapter, touch(1))] == [OutcomeKind.sent]
    fake.expire_token()
    outcomes = send(adapter, touch(2), touch(3), touch(4, openid="oSECOND_0123456789abcdef"))
    assert {o.kind for o in outcomes} == {OutcomeKind.sent}
    assert fake.token_calls == 2
    assert len(fake.messages) == 4


@pytest.mark.parametrize("code", [40001, 40014, 42001])
def test_send__token_codes_refresh_and_retry_once(fake: WechatFake, code: int) -> None:
    """Each token-expired code makes one refresh and one retry; a second token error is a retry, not a loop."""
    adapter = channel(fake)
    fake.fail_next = [code]
    assert [o.kind for o in send(adapter, touch(1))] == [OutcomeKind.sent]
    fake.fail_next = [code, code]
    [outcome] = send(adapter, touch(2))
    assert (outcome.kind, outcome.code) == (OutcomeKind.retry, str(code))
    assert len(fake.messages) == 1


def test_token__two_adapters_on_one_database_share_one_token(fake: WechatFake, db_url: str) -> None:
    """Two replicas on one database ask stable_token once between them."""
    engine = open_engine(db_url)
    try:
        first, second = channel(fake, store=engine), channel(fake, store=engine)

        async def both() -> list[Any]:
            return list(await asyncio.gather(first.send([touch(1)]), second.send([touch(2)])))

        results = asyncio.run(both())
        assert [o.kind for batch in results for o in batch] == [OutcomeKind.sent, OutcomeKind.sent]
        assert fake.token_calls == 1
        assert asyncio.run(first.tokens.get()) == asyncio.run(second.tokens.get())
    finally:
        engine.dispose()


@pytest.mark.parametrize(("code", "kind"), sorted(_CODES.items()))
def test_send__each_vendor_code_maps_to_its_outcome(fake: WechatFake, code: int, kind: OutcomeKind) -> None:
    """Every code of the adapter's table, answered by the fake, gives its outcome kind."""
    fake.fail_next = [code]
    [outcome] = send(channel(fake), touch(1))
    assert (outcome.kind, outcome.code) == (kind, str(code))


def test_send__unlisted_code_is_unknown(fake: WechatFake) -> None:
    """A code the table does not know may have sent: unknown, never retried blindly."""
    fake.fail_next = [99999]
    assert send(channel(fake), touch(1))[0].kind == OutcomeKind.unknown


def test_send__unfollowed_member_fails_for_the_member(fake: WechatFake) -> None:
    """A member who unfollowed the account (43004 from the fake's own check) is failed_member."""
    [outcome] = send(channel(fake), touch(1, openid="oGONE_0123456789abcdef"))
    assert (outcome.kind, outcome.code) == (OutcomeKind.failed_member, "43004")


def test_send__wrong_secret_is_fatal_for_the_channel(fake: WechatFake) -> None:
    """A wrong app secret (40125 from stable_token) pauses the channel; nothing is sent."""
    outcomes = send(channel(fake, app_secret="another-secret-entirely"), touch(1), touch(2))
    assert [(o.kind, o.code) for o in outcomes] == [(OutcomeKind.channel_fatal, "40125")] * 2
    assert fake.received == []


def test_send__connection_refused_is_retry() -> None:
    """Nothing listening: the request never left, so the touch may be sent again."""
    adapter = channel(WechatFake(), base_url=f"http://127.0.0.1:{free_port()}")
    assert send(adapter, touch(1))[0].kind == OutcomeKind.retry


def test_send__slow_answer_is_unknown(fake: WechatFake) -> None:
    """A timeout after the request was written is unknown, not failed, not retried."""
    fake.slow_s = 1.0
    [outcome] = send(channel(fake, timeout=0.3), touch(1))
    assert outcome.kind == OutcomeKind.unknown
    assert len(fake.messages) == 1


def test_lookup__dropped_after_accept_resends_inside_the_dedup_window(fake: WechatFake) -> None:
    """Connection dropped after the fake accepted: unknown; lookup within 10 minutes resends with the same
    client_msg_id and WeChat's dedup answers the original msgid, so the member gets one message."""
    clock = Clock()
    adapter = channel(fake, clock=clock)
    fake.drop_next = 1
    [outcome] = send(adapter, touch(1))
    assert outcome.kind == OutcomeKind.unknown
    clock.at += timedelta(minutes=9)
    [found] = asyncio.run(adapter.lookup([touch(1)]))
    assert found.kind == OutcomeKind.sent
    assert [b["client_msg_id"] for b in fake.received] == ["t0001", "t0001"]
    assert len(fake.messages) == 1
    assert found.vendor_id == str(fake.messages[0]["msgid"])


def test_lookup__outside_the_window_or_of_unknown_age_stays_unknown(fake: WechatFake) -> None:
    """Past the dedup window (or with no known send time) nothing is resent: the row is for the operator."""
    clock = Clock()
    adapter = channel(fake, clock=clock)
    fake.drop_next = 1
    send(adapter, touch(1))
    clock.at += timedelta(minutes=10)
    outcomes = asyncio.run(adapter.lookup([touch(1), touch(2)]))
    assert [o.kind for o in outcomes] == [OutcomeKind.unknown, OutcomeKind.unknown]
    assert len(fake.received) == 1
    [given] = asyncio.run(adapter.lookup([touch(2)], sent_at={"t0002": clock.at - timedelta(minutes=1)}))
    assert given.kind == OutcomeKind.sent


def test_push__signature_checked_and_events_parsed(fake: WechatFake) -> None:
    """The finish push is verified with the account token and parsed by MsgID and Status prefix."""
    send(channel(fake), touch(1))
    msgid = fake.messages[0]["msgid"]
    params, ok = fake.push(msgid, "success")
    assert plain_signature(fake.push_token, params["timestamp"], params["nonce"]) == params["signature"]
    assert plain_signature("wrong-token", params["timestamp"], params["nonce"]) != params["signature"]
    [receipt] = parse_event(ok)
    assert (receipt.vendor_id, receipt.delivered, receipt.status) == (str(msgid), True, "success")
    assert receipt.at is not None
    _, blocked = fake.push(msgid, "failed:user block")
    _, system = fake.push(msgid, "failed: system failed")
    assert [(r.delivered, r.status) for r in parse_event(blocked) + parse_event(system)] == [
        (False, "failed:user block"), (False, "failed: system failed")]
    assert parse_event(b"<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>") == []
    assert parse_event(b"not xml") == []
    assert parse_event(b'<?xml version="1.0" encoding="no-such"?><xml/>') == []
    assert ACKNOWLEDGEMENT == "success"


def test_logs__no_token_secret_or_full_openid(fake: WechatFake) -> None:
    """Log lines carry neither the token, the app secret nor a full openid."""
    adapter = channel(fake)
    with capture_logs() as logs:
        send(adapter, touch(1))
        expired = asyncio.run(adapter.tokens.get())
        fake.expire_token()
        send(adapter, touch(2))
    text = repr(logs)
    assert {"wechat.token.fetched", "wechat.token.expired", "wechat.template.send"} <= {e["event"] for e in logs}
    assert fake.app_secret not in text and OPENID not in text
    assert expired not in text and asyncio.run(adapter.tokens.get()) not in text


def test_fake__stable_token_is_stable_and_checks_credentials(fake: WechatFake) -> None:
    """The fake returns the same token while valid, a new one after expiry, and 40013/40125 for bad credentials."""
    url = f"{fake.url}/cgi-bin/stable_token"
    good = {"grant_type": "client_credential", "appid": fake.app_id, "secret": fake.app_secret}
    first = httpx.post(url, json=good).json()["access_token"]
    assert httpx.post(url, json=good).json()["access_token"] == first
    fake.expire_token()
    assert httpx.post(url, json=good).json()["access_token"] != first
    assert httpx.post(url, json={**good, "appid": "wxnope"}).json()["errcode"] == 40013
    assert httpx.post(url, json={**good, "secret": "nope"}).json()["errcode"] == 40125
