"""The aliyun_sms adapter against its loopback fake: signature, send shape, codes, lost sends, receipts, pushes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from channels.aliyun.signing import signature, signed_params
from channels.aliyun.sms import (
    _CODES,
    PUSH_ACK,
    SHANGHAI,
    AliyunSmsChannel,
    AliyunSmsSettings,
    parse_sms_report,
    parse_sms_up,
)
from channels.base import ChannelContext, OutcomeKind, Touch
from channels.fakes.aliyun_sms import AliyunSmsFake, aliyun_sms_app, sms_up_body
from channels.fakes.server import FakeServer, free_port

KEY_ID, SECRET = "LTAI5tFakeKeyId", "fake-secret-0123456789"
PHONE = "13800138000"
TEMPLATES = {"SMS_4820931": ["name", "discount"]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    app = aliyun_sms_app({KEY_ID: SECRET}, sign_names={"麦德氏"}, templates=TEMPLATES)
    with FakeServer(app) as running:
        yield running


@pytest.fixture
def fake(server: FakeServer) -> AliyunSmsFake:
    state: AliyunSmsFake = server.app.state.sms
    state.reset()
    return state


def channel(server: FakeServer, **overrides: Any) -> AliyunSmsChannel:
    raw = {"adapter": "aliyun_sms", "access_key_id": KEY_ID, "access_key_secret": SECRET, "sign_name": "麦德氏",
           "base_url": server.url, "timeout": 2.0, **overrides}
    clock = raw.pop("clock", None)
    return AliyunSmsChannel("sms", AliyunSmsSettings.model_validate(raw), ChannelContext(clock=clock))


def touch(touch_id: str = "t000000000001", phone: str = PHONE, **params: Any) -> Touch:
    return Touch(touch_id, "lapsed", "m1", "sms", "2024-05-01", address={"phone": phone},
                 message={"template_code": "SMS_4820931", "params": params or {"name": "王芳", "discount": "8折"}})


def test_signature__documented_describe_regions_example() -> None:
    """The V2 worked example from Aliyun's signature page gives the published signature."""
    params = {"AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML",
              "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
              "SignatureVersion": "1.0", "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26"}
    assert signature("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_send__arrives_with_documented_shape(server: FakeServer, fake: AliyunSmsFake) -> None:
    """A send is one signed SendSms with the phone, sign, template, JSON string params and OutId = touch id."""
    [outcome] = asyncio.run(channel(server).send([touch()]))
    assert outcome.kind == OutcomeKind.sent and outcome.vendor_id and outcome.vendor_id.endswith("^0")
    [req] = fake.requests
    assert req["Action"] == "SendSms" and req["Version"] == "2017-05-25"
    assert (req["PhoneNumbers"], req["SignName"], req["TemplateCode"]) == (PHONE, "麦德氏", "SMS_4820931")
    assert json.loads(req["TemplateParam"]) == {"name": "王芳", "discount": "8折"}
    assert req["OutId"] == "t000000000001"
    assert fake.sends[0].out_id == "t000000000001"


def test_send__wrong_secret_is_channel_fatal(server: FakeServer, fake: AliyunSmsFake) -> None:
    """The fake recomputes the signature: a wrong secret gets SignatureDoesNotMatch, which pauses the channel."""
    [outcome] = asyncio.run(channel(server, access_key_secret="wrong").send([touch()]))
    assert (outcome.kind, outcome.code) == (OutcomeKind.channel_fatal, "SignatureDoesNotMatch")
    assert fake.sends == []


def test_fake__rejects_reused_nonce_and_stale_timestamp(server: FakeServer, fake: AliyunSmsFake) -> None:
    """A reused SignatureNonce and a Timestamp 20 minutes off are refused as the gateway does."""
    query = {"PhoneNumber": PHONE, "SendDate": "20240501", "PageSize": "10", "CurrentPage": "1"}
    form = signed_params("QuerySendDetails", "2017-05-25", query, KEY_ID, SECRET, nonce="n-fixed-1")
    assert httpx.post(server.url + "/", data=form).json()["Code"] == "OK"
    again = httpx.post(server.url + "/", data=form)
    assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")
    stale = signed_params("QuerySendDetails", "2017-05-25", query, KEY_ID, SECRET,
                          now=datetime.now(UTC) - timedelta(minutes=20))
    assert httpx.post(server.url + "/", data=stale).json()["Code"] == "InvalidTimeStamp.Expired"


def test_send__clock_off_is_channel_fatal(server: FakeServer, fake: AliyunSmsFake) -> None:
    """A host clock 20 minutes off gets InvalidTimeStamp.Expired: the channel pauses, nothing is sent."""
    skewed = channel(server, clock=lambda: datetime.now(UTC) + timedelta(minutes=20))
    [outcome] = asyncio.run(skewed.send([touch()]))
    assert (outcome.kind, outcome.code) == (OutcomeKind.channel_fatal, "InvalidTimeStamp.Expired")


def _status_of(code: str) -> int:
    if code.startswith(("isv.", "isp.")):
        return 200
    return {"InternalError": 500, "ServiceUnavailable": 503, "InvalidAccessKeyId.NotFound": 404}.get(code, 400)


@pytest.mark.parametrize(("code", "kind"), sorted(_CODES.items()))
def test_send__every_documented_code_is_classified(server: FakeServer, fake: AliyunSmsFake, code: str,
                                                    kind: OutcomeKind) -> None:
    """Each documented code, answered by the fake with its HTTP status, gives its table outcome."""
    fake.fail_next(code, status=_status_of(code))
    [outcome] = asyncio.run(channel(server).send([touch()]))
    assert (outcome.kind, outcome.code) == (kind, code)


@pytest.mark.parametrize(("code", "status", "kind"), [
    ("isv.SOMETHING_NEW", 200, OutcomeKind.failed),
    ("isp.SOMETHING_NEW", 200, OutcomeKind.unknown),
    ("BadGateway", 502, OutcomeKind.unknown),
    ("Forbidden.Something", 403, OutcomeKind.failed),
])
def test_send__unlisted_codes(server: FakeServer, fake: AliyunSmsFake, code: str, status: int,
                              kind: OutcomeKind) -> None:
    """An unlisted code is unknown when it may hide an accepted send (5xx, isp.), else failed."""
    fake.fail_next(code, status=status)
    [outcome] = asyncio.run(channel(server).send([touch()]))
    assert outcome.kind == kind


def test_send__invalid_number_is_failed_member(server: FakeServer, fake: AliyunSmsFake) -> None:
    """The fake refuses a malformed number with isv.MOBILE_NUMBER_ILLEGAL: the member's address is dead."""
    [outcome] = asyncio.run(channel(server).send([touch(phone="12345")]))
    assert (outcome.kind, outcome.code) == (OutcomeKind.failed_member, "isv.MOBILE_NUMBER_ILLEGAL")


def test_send__too_long_or_missing_params_fail_without_a_request(server: FakeServer, fake: AliyunSmsFake) -> None:
    """Parameter limits are checked before sending: nothing reaches the vendor."""
    sms = channel(server, max_param_length=5, templates=TEMPLATES)
    long_one, missing = touch("t1", name="王芳王芳王芳", discount="8折"), touch("t2", name="王芳")
    outcomes = {o.touch_id: o for o in asyncio.run(sms.send([long_one, missing]))}
    assert outcomes["t1"].kind == OutcomeKind.failed and "name" in (outcomes["t1"].message or "")
    assert outcomes["t2"].kind == OutcomeKind.failed and "discount" in (outcomes["t2"].message or "")
    assert fake.requests == []


def test_send__connection_refused_is_retry(server: FakeServer) -> None:
    """Nothing listening: the request never left, so the touch may be sent again."""
    [outcome] = asyncio.run(channel(server, base_url=f"http://127.0.0.1:{free_port()}").send([touch()]))
    assert outcome.kind == OutcomeKind.retry


def test_send__dropped_after_accept_is_unknown_then_lookup_finds_it(server: FakeServer, fake: AliyunSmsFake) -> None:
    """Accepted then no answer: unknown, never resent; lookup finds the OutId and settles it as sent."""
    fake.drop_next()
    sms = channel(server, timeout=0.3)
    [outcome] = asyncio.run(sms.send([touch()]))
    assert outcome.kind == OutcomeKind.unknown
    [settled] = asyncio.run(sms.lookup([touch()]))
    assert settled.kind == OutcomeKind.sent and settled.vendor_id == fake.sends[0].biz_id
    assert len(fake.sends) == 1 and len(fake.requests) == 1


def test_send__slow_vendor_is_unknown(server: FakeServer, fake: AliyunSmsFake) -> None:
    """A timeout after the request was written is unknown, not failed."""
    fake.delay_s = 0.5
    [outcome] = asyncio.run(channel(server, timeout=0.2).send([touch()]))
    assert outcome.kind == OutcomeKind.unknown
    deadline = time.monotonic() + 3
    while not fake.requests and time.monotonic() < deadline:  # let the slow request land in this test
        time.sleep(0.02)
    assert len(fake.sends) == 1


def test_send__rate_limited_touches_are_retry(server: FakeServer, fake: AliyunSmsFake) -> None:
    """Above the fake's per-second limit the gateway throttles: those touches are retry, the rest sent."""
    fake.max_per_second = 2
    outcomes = asyncio.run(channel(server).send([touch(f"t{i}") for i in range(4)]))
    kinds = sorted(o.kind for o in outcomes)
    assert kinds == [OutcomeKind.retry, OutcomeKind.retry, OutcomeKind.sent, OutcomeKind.sent]
    assert {o.code for o in outcomes if o.kind == OutcomeKind.retry} == {"Throttling.User"}


def test_lookup__never_sent_is_not_sent(server: FakeServer, fake: AliyunSmsFake) -> None:
    """A definite QuerySendDetails answer without the OutId means the vendor has no such message."""
    asyncio.run(channel(server).send([touch("other")]))
    [outcome] = asyncio.run(channel(server).lookup([touch("t-never")]))
    assert outcome.kind == OutcomeKind.not_sent


def test_lookup__query_error_is_unknown(server: FakeServer, fake: AliyunSmsFake) -> None:
    """No definite answer (the query itself was refused) never reads as not_sent."""
    [outcome] = asyncio.run(channel(server, access_key_secret="wrong").lookup([touch()]))
    assert outcome.kind == OutcomeKind.unknown


def test_pull__delivered_and_undelivered_receipts(server: FakeServer, fake: AliyunSmsFake) -> None:
    """SendStatus 3 is delivered, 2 undelivered with its ErrCode; 1 (waiting) gives no receipt yet."""
    sms = channel(server)
    touches = [touch("t-ok"), touch("t-bad"), touch("t-wait")]
    asyncio.run(sms.send(touches))
    fake.settle("t-ok", 3)
    fake.settle("t-bad", 2, "MK:0001")
    inbound = asyncio.run(sms.pull(touches, datetime.now(UTC) - timedelta(hours=1)))
    got = {r.touch_id: r for r in inbound.receipts}
    assert set(got) == {"t-ok", "t-bad"}
    assert got["t-ok"].delivered and got["t-ok"].status == "DELIVERED"
    assert not got["t-bad"].delivered and got["t-bad"].status == "MK:0001"
    assert inbound.replies == []


def test_pull__asks_only_for_the_day_each_touch_was_sent(server: FakeServer, fake: AliyunSmsFake) -> None:
    """Three days of lookback, 40 touches to 40 phones sent today: 40 QuerySendDetails, all for today."""
    sms = channel(server, query_concurrency=4)
    now = datetime.now(UTC)
    touches = [replace(touch(f"t-{n:02d}", phone=f"1380013{n:04d}"), claimed_at=now) for n in range(40)]
    asyncio.run(sms.send(touches))
    for t in touches:
        fake.settle(t.touch_id, 3)
    inbound = asyncio.run(sms.pull(touches, now - timedelta(days=3)))
    assert {r.touch_id for r in inbound.receipts} == {t.touch_id for t in touches}
    today = now.astimezone(SHANGHAI).strftime("%Y%m%d")
    assert sorted((q["PhoneNumber"], q["SendDate"]) for q in fake.queries) == sorted(
        (t.address["phone"], today) for t in touches)


def test_lookup__a_send_begun_before_midnight_is_looked_for_on_both_days(
        server: FakeServer, fake: AliyunSmsFake) -> None:
    """Begun at 23:55 Shanghai two days ago: Aliyun may file it under that day or the next; no other day is asked."""
    day = datetime.now(SHANGHAI).date() - timedelta(days=2)
    claimed = datetime(day.year, day.month, day.day, 23, 55, tzinfo=SHANGHAI)
    [outcome] = asyncio.run(channel(server).lookup([replace(touch("t-midnight"), claimed_at=claimed)]))
    assert outcome.kind == OutcomeKind.not_sent
    assert sorted(q["SendDate"] for q in fake.queries) == [
        f"{d:%Y%m%d}" for d in (day, day + timedelta(days=1))]


def test_push__sms_report_and_sms_up_parse(server: FakeServer, fake: AliyunSmsFake) -> None:
    """The fake's SmsReport and SmsUp bodies parse into receipts (by out_id) and replies."""
    asyncio.run(channel(server).send([touch("t-ok"), touch("t-bad")]))
    fake.settle("t-ok", 3)
    fake.settle("t-bad", 2, "MK:0001")
    receipts = {r.touch_id: r for r in parse_sms_report(fake.report_body())}
    assert receipts["t-ok"].delivered and not receipts["t-bad"].delivered
    [sent_ok] = [sms for sms in fake.sends if sms.out_id == "t-ok"]  # the two were sent concurrently
    assert receipts["t-ok"].vendor_id == sent_ok.biz_id and receipts["t-ok"].at is not None
    [reply] = parse_sms_up(sms_up_body(PHONE, " 退订 "))
    assert (reply.phone, reply.text.strip()) == (PHONE, "退订") and reply.at is not None
    assert PUSH_ACK["code"] == 0
    with pytest.raises(ValueError):
        parse_sms_up(b'"not a list"')


def test_logs__never_carry_the_phone_or_secret(server: FakeServer, fake: AliyunSmsFake) -> None:
    """Send, lookup and pull log events without the number or the key secret."""
    sms = channel(server)
    with capture_logs() as logs:
        asyncio.run(sms.send([touch(), touch("t2", phone="12345")]))
        asyncio.run(channel(server, access_key_secret="wrong").lookup([touch()]))
    assert any(e["event"] == "aliyun_sms.send" for e in logs)
    text = repr(logs)
    assert PHONE not in text and SECRET not in text and "12345" not in text
