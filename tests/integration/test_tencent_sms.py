"""The Tencent SMS adapter against its loopback fake: TC3 signing, SendSms, codes, lookup, pulls, pushes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from channels.base import Outcome, OutcomeKind, Touch
from channels.fakes.server import FakeServer
from channels.fakes.tencent_sms import FakeTencentSms
from channels.tencent import signing as tencent_signing
from channels.tencent import sms as ts
from channels.tencent.sms import TencentSmsChannel, TencentSmsSettings

PHONE = "13812345678"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeTencentSms, str]]:
    fake = FakeTencentSms()
    with FakeServer(fake.app) as server:
        yield fake, server.url


@pytest.fixture
def fake(served: tuple[FakeTencentSms, str]) -> FakeTencentSms:
    served[0].reset()
    return served[0]


def channel(served: tuple[FakeTencentSms, str], **overrides: Any) -> TencentSmsChannel:
    fake, url = served
    settings: dict[str, Any] = {
        "adapter": "tencent_sms", "secret_id": fake.secret_id, "secret_key": fake.secret_key,
        "sdk_app_id": fake.sdk_app_id, "sign_name": "麦德氏", "base_url": url, "timeout": 2.0,
        "templates": {"SMS_4820931": {"id": "1234567", "params": ["name", "discount"]}}}
    settings.update(overrides)
    return TencentSmsChannel("sms", TencentSmsSettings(**settings))


def touch(touch_id: str, phone: str = PHONE, **params: str) -> Touch:
    return Touch(touch_id=touch_id, playbook="p", member_id=f"m-{touch_id}", channel="sms", occurrence="o",
                 message={"template_code": "SMS_4820931", "params": params or {"name": "李雷", "discount": "8折"}},
                 address={"phone": phone})


def send(ch: TencentSmsChannel, *touches: Touch) -> dict[str, Outcome]:
    return {o.touch_id: o for o in asyncio.run(ch.send(touches))}


def test_signature__matches_tencents_worked_example() -> None:
    """The published DescribeInstances example (Signature v3 doc) gives signature 72e494ea…."""
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    headers = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"}
    canonical = tencent_signing.canonical_request(headers, ["content-type", "host"], payload)
    assert canonical.endswith("35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064")
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031")
    auth = tencent_signing.authorization("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
                            timestamp=1551113065, service="cvm", headers=headers, payload=payload)
    assert auth == ("TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
                    "SignedHeaders=content-type;host, "
                    "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168")


def test_send__arrives_with_the_documented_shape(fake: FakeTencentSms, served: Any) -> None:
    """One touch: +86 number, app id, sign, mapped template id, ordered params, SessionContext = touch id."""
    out = send(channel(served), touch("t1", name="韩梅梅", discount="9折"))
    assert out["t1"].kind == OutcomeKind.sent and out["t1"].vendor_id == fake.sends[0].serial_no
    call = fake.received[0]
    assert call["action"] == "SendSms"
    assert call["headers"]["x-tc-version"] == "2021-01-11" and call["headers"]["x-tc-region"] == "ap-guangzhou"
    assert call["body"] == {"PhoneNumberSet": ["+8613812345678"], "SmsSdkAppId": fake.sdk_app_id,
                            "SignName": "麦德氏", "TemplateId": "1234567", "TemplateParamSet": ["韩梅梅", "9折"],
                            "SessionContext": "t1"}


def test_send__identical_params_share_one_call(fake: FakeTencentSms, served: Any) -> None:
    """Three touches with the same params go in one SendSms; a different param set gets its own call."""
    same = [touch(f"t{i}", phone=f"1381234567{i}") for i in range(3)]
    other = touch("t9", phone="13900000000", name="王", discount="7折")
    out = send(channel(served), *same, other)
    assert all(o.kind == OutcomeKind.sent for o in out.values())
    assert len(fake.send_calls) == 2
    batched = next(c for c in fake.send_calls if len(c["PhoneNumberSet"]) == 3)
    assert batched["SessionContext"] == "t0,t1,t2"


def test_send__same_number_twice_goes_in_separate_calls(fake: FakeTencentSms, served: Any) -> None:
    """Two touches to one number never share a call, so each maps to its own status."""
    out = send(channel(served), touch("a1"), touch("a2"))
    assert len(fake.send_calls) == 2 and {o.kind for o in out.values()} == {OutcomeKind.sent}


def test_send__wrong_secret_is_channel_fatal(fake: FakeTencentSms, served: Any) -> None:
    """A wrong SecretKey gets AuthFailure.SignatureFailure from the fake: pause the channel."""
    out = send(channel(served, secret_key="not-the-key"), touch("t1"))
    assert (out["t1"].kind, out["t1"].code) == (OutcomeKind.channel_fatal, "AuthFailure.SignatureFailure")
    assert fake.sends == []


def test_send__skewed_clock_is_rejected(fake: FakeTencentSms, served: Any) -> None:
    """A timestamp more than 5 minutes off gets AuthFailure.SignatureExpire."""
    fake.clock_offset_s = 600
    out = send(channel(served), touch("t1"))
    assert out["t1"].code == "AuthFailure.SignatureExpire"


@pytest.mark.parametrize(("code", "kind"), sorted((c, k) for c, k in ts._CODES.items() if c != "Ok"))
def test_codes__request_level_code_gives_its_outcome(fake: FakeTencentSms, served: Any, code: str,
                                                     kind: OutcomeKind) -> None:
    """Every documented code answered for the whole request maps to its table entry."""
    fake.fail_next(code)
    out = send(channel(served), touch("t1"))
    assert (out["t1"].kind, out["t1"].code) == (kind, code)


@pytest.mark.parametrize(("code", "kind"), sorted(ts._CODES.items()))
def test_codes__per_number_code_gives_its_outcome(fake: FakeTencentSms, served: Any, code: str,
                                                  kind: OutcomeKind) -> None:
    """Every documented code in SendStatusSet[i].Code maps to its table entry for that touch only."""
    fake.number_codes["+8613812345678"] = code
    out = send(channel(served), touch("t1"), touch("t2", phone="13900000001"))
    assert out["t1"].kind == kind
    assert out["t2"].kind == OutcomeKind.sent


def test_codes__unknown_subcodes_fall_back_on_their_family() -> None:
    """Undocumented sub-codes follow their family; an unknown family is `failed`, never resent."""
    assert ts.classify("RequestLimitExceeded.Whatever") == OutcomeKind.retry
    assert ts.classify("InternalError.Whatever") == OutcomeKind.unknown
    assert ts.classify("AuthFailure.Whatever") == OutcomeKind.channel_fatal
    assert ts.classify("Nonsense") == OutcomeKind.failed


def test_send__invalid_number_is_failed_member(fake: FakeTencentSms, served: Any) -> None:
    """A number the vendor calls incorrect, or one that is no mobile at all, fails the member."""
    fake.number_codes["+8613812345678"] = "InvalidParameterValue.IncorrectPhoneNumber"
    out = send(channel(served), touch("t1"), touch("t2", phone="12345"))
    assert out["t1"].kind == out["t2"].kind == OutcomeKind.failed_member
    assert [c["PhoneNumberSet"] for c in fake.send_calls] == [["+8613812345678"]]


def test_send__missing_template_mapping_fails_without_a_request(fake: FakeTencentSms, served: Any) -> None:
    """A template_code with no Tencent mapping, or a missing param, fails locally: nothing is sent."""
    unmapped = Touch("t1", "p", "m", "sms", "o", {"template_code": "SMS_NOPE", "params": {}}, {"phone": PHONE})
    out = send(channel(served), unmapped, touch("t2", name="李雷"))
    assert out["t1"].kind == OutcomeKind.failed and "SMS_NOPE" in (out["t1"].message or "")
    assert out["t2"].kind == OutcomeKind.failed and "discount" in (out["t2"].message or "")
    assert fake.received == []


def test_send__connect_refused_is_retry() -> None:
    """Nothing listening: the request never left, so it may be sent again."""
    settings = TencentSmsSettings(adapter="tencent_sms", secret_id="x", secret_key="y", sdk_app_id="1",
                                  sign_name="s", base_url="http://127.0.0.1:9", timeout=1.0,
                                  templates={"SMS_4820931": {"id": "1", "params": ["name", "discount"]}})
    out = send(TencentSmsChannel("sms", settings), touch("t1"))
    assert out["t1"].kind == OutcomeKind.retry


def test_send__dropped_after_accept_is_unknown_then_lookup_settles_it(fake: FakeTencentSms, served: Any) -> None:
    """The fake accepts and drops the connection: unknown, no second send; lookup finds it sent."""
    fake.drop_next = 1
    ch = channel(served)
    out = send(ch, touch("t1"))
    assert out["t1"].kind == OutcomeKind.unknown
    assert len(fake.sends) == 1
    found = asyncio.run(ch.lookup([touch("t1"), touch("t2", phone="13900000002")]))
    assert [(o.kind, o.vendor_id) for o in found] == [(OutcomeKind.sent, fake.sends[0].serial_no),
                                                     (OutcomeKind.not_sent, None)]
    assert len(fake.send_calls) == 1


def test_send__slow_vendor_is_unknown(fake: FakeTencentSms, served: Any) -> None:
    """A read timeout after the request was written is unknown, never retry."""
    fake.delay_s = 1.5
    out = send(channel(served, timeout=0.5), touch("t1"))
    assert out["t1"].kind == OutcomeKind.unknown


def test_lookup__without_session_context_is_unknown(fake: FakeTencentSms, served: Any) -> None:
    """If the vendor does not report SessionContext, a listing proves nothing: unknown."""
    fake.session_context_in_status = False
    ch = channel(served, lookup_by_session_context=False)
    send(ch, touch("t1"))
    assert asyncio.run(ch.lookup([touch("t1")]))[0].kind == OutcomeKind.unknown


def test_pull__receipts_and_an_unsubscribe_reply(fake: FakeTencentSms, served: Any) -> None:
    """Pulled status becomes receipts keyed by touch id and SerialNo; a 退订 reply comes back as a Reply."""
    ch = channel(served)
    send(ch, touch("t1"), touch("t2", phone="13900000003"))
    fake.sends[1].report_status, fake.sends[1].description = "FAIL", "MK:0012"
    fake.add_reply("+8613812345678", "退订")
    since = ts.datetime.fromtimestamp(time.time() - 60, ts.UTC)
    inbound = asyncio.run(ch.pull([touch("t1"), touch("t2", phone="13900000003")], since))
    receipts = {r.touch_id: r for r in inbound.receipts}
    assert receipts["t1"].delivered and receipts["t1"].vendor_id == fake.sends[0].serial_no
    assert not receipts["t2"].delivered and receipts["t2"].status == "MK:0012"
    assert [(r.phone, r.text) for r in inbound.replies] == [(PHONE, "退订")]


def test_pull__reply_queue(fake: FakeTencentSms, served: Any) -> None:
    """With reply_source=queue, replies come from PullSmsReplyStatus once each."""
    ch = channel(served, reply_source="queue")
    fake.add_reply("+8613900000004", " TD ")
    since = ts.datetime.fromtimestamp(time.time() - 60, ts.UTC)
    assert [r.phone for r in asyncio.run(ch.pull([], since)).replies] == ["13900000004"]
    assert asyncio.run(ch.pull([], since)).replies == []


def test_push__parsers_read_the_fakes_bodies(fake: FakeTencentSms, served: Any) -> None:
    """The status and reply callback bodies parse into receipts and replies; the ack is result 0."""
    send(channel(served), touch("t1"))
    [receipt] = ts.parse_status_callback(fake.status_callback_body())
    assert (receipt.touch_id, receipt.vendor_id, receipt.delivered, receipt.status) == (
        "t1", fake.sends[0].serial_no, True, "DELIVRD")
    assert receipt.at is not None and abs(receipt.at.timestamp() - fake.sends[0].at) < 1
    fake.add_reply("+8613812345678", "退订", at=1700000000)
    [reply] = ts.parse_reply_callback(fake.reply_callback_body(fake.replies[0]))
    assert (reply.phone, reply.text, int(reply.at.timestamp()) if reply.at else None) == (PHONE, "退订", 1700000000)
    assert ts.CALLBACK_ACK == {"result": 0, "errmsg": "OK"}


def test_logs__never_show_a_phone_or_secret(fake: FakeTencentSms, served: Any) -> None:
    """Sending and failing log events without the number or the secret."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        send(channel(served), touch("t1"))
        fake.fail_next("RequestLimitExceeded")
        send(channel(served), touch("t2"))
    text = repr(logs)
    assert logs and PHONE not in text and fake.secret_key not in text
