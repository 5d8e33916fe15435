"""Vendor pushes through the callback server (issue 14): only an authenticated push changes anything,
and only where it fits the touch it names; vendor acknowledgements out, once in effect."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from scenario import add_member
from sqlalchemy import Engine, create_engine, func, insert, select

from channels.aliyun.sms import AliyunSmsSettings
from channels.aliyun.voice import AliyunVoiceSettings
from channels.base import ChannelSettings
from channels.fakes.aliyun_sms import SentSms, sms_report_body, sms_up_body
from channels.fakes.server import FakeServer
from channels.fakes.wechat_template import WechatFake
from channels.tencent.sms import TencentSmsSettings
from channels.wechat.template import WechatTemplateSettings
from engine import ledger
from engine.clock import zone
from engine.run.callbacks import PushTally, build_app
from engine.run.receipts import ReceiptBook
from engine.store.schema import callback_counts, events, suppressions, touches

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
SECRET = "s3cret-path-0123456789abcdefghijkl"
OLD_SECRET = "old-secret-path-0123456789abcdefgh"
PHONE = "13812345678"


def aliyun_sms(**extra: Any) -> AliyunSmsSettings:
    return AliyunSmsSettings(adapter="aliyun_sms", access_key_id="k", access_key_secret="s", sign_name="麦德氏",
                             **{"callback_secret": SECRET, **extra})


def aliyun_voice(**extra: Any) -> AliyunVoiceSettings:
    return AliyunVoiceSettings(adapter="aliyun_voice", access_key_id="k", access_key_secret="s",
                               scenarios={"recall": {"tts_code": "TTS_1"}}, **{"callback_secret": SECRET, **extra})


def tencent_sms(**extra: Any) -> TencentSmsSettings:
    return TencentSmsSettings(adapter="tencent_sms", secret_id="id", secret_key="key", sdk_app_id="1400000000",
                              sign_name="麦德氏", **extra)


def _sent(db: Engine, touch_id: str, channel: str, vendor_id: str, phone: str = PHONE,
          provider: str | None = None, openid: str | None = None) -> str:
    with db.begin() as conn:
        add_member(conn, f"M-{touch_id}", phone=phone, oa_openid=openid)
        conn.execute(insert(touches).values(
            touch_id=touch_id, playbook="p", member_id=f"M-{touch_id}", occurrence="o", state="sent",
            channel=channel, decided_at=NOW, touch_at=NOW, sent_at=NOW, vendor_id=vendor_id, provider=provider))
    return touch_id


@contextmanager
def served(db: Engine, channels: dict[str, ChannelSettings], tally: PushTally | None = None
           ) -> Iterator[httpx.Client]:
    """The callback app for `channels` on a loopback port, as the vendors reach it."""
    app = build_app(ReceiptBook(db), channels, tally or PushTally(zone("Asia/Shanghai"), lambda: NOW))
    with FakeServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _delivery(db: Engine, touch_id: str) -> tuple[str | None, str | None]:
    with db.connect() as conn:
        row = conn.execute(select(touches.c.delivery, touches.c.delivery_status)
                           .where(touches.c.touch_id == touch_id)).one()
    return row.delivery, row.delivery_status


def _suppressed(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [(r.phone, r.channel) for r in conn.execute(select(suppressions.c.phone, suppressions.c.channel))]


def _report(touch_id: str, phone: str = PHONE, delivered: bool = True) -> bytes:
    return sms_report_body([SentSms(phone, "麦德氏", "SMS_1", {}, touch_id, f"biz-{touch_id}", "20261122", NOW,
                                    status=3 if delivered else 4, err_code="DELIVERED" if delivered else "MK:0001")])


def _voice_report(touch_id: str, callee: str = PHONE) -> bytes:
    return json.dumps([{"call_id": f"call-{touch_id}", "out_id": touch_id, "callee": callee, "caller": "0571",
                        "status_code": "200000", "start_time": "2026-11-22 10:00:05", "end_time": "2026-11-22 10:01:00",
                        "duration": 55, "hangup_direction": "用户", "status_msg": "attacker"}]).encode()


# --------------------------------------------------------------------------- secret paths

def test_forged_unsubscribe__bare_route_and_wrong_secret_are_404_and_change_nothing(db: Engine) -> None:
    """The review's forged 退订 (`curl -X POST …/callbacks/aliyun/sms-up -d '[{"phone_number": …}]'`)
    on the bare route or with a wrong secret answers 404 like any unknown path; nothing is suppressed."""
    body = sms_up_body("13800005555", "退订")
    with served(db, {"sms": aliyun_sms()}) as client:
        assert client.post("/callbacks/aliyun/sms-up", content=body).status_code == 404
        assert client.post("/callbacks/aliyun/sms-up/" + "x" * 34, content=body).status_code == 404
        assert client.post("/callbacks/aliyun/sms-up/" + SECRET[:-1], content=body).status_code == 404
    assert _suppressed(db) == []


def test_unsubscribe__on_the_secret_route_suppresses_the_number(db: Engine) -> None:
    """The same reply on the right secret route gets Aliyun's acknowledgement and suppresses the number,
    normalised, whether or not any member has it (an authenticated 退订 always suppresses)."""
    with served(db, {"sms": aliyun_sms()}) as client:
        response = client.post(f"/callbacks/aliyun/sms-up/{SECRET}", content=sms_up_body("+86 138-0000-5555", " 退订 "))
    assert (response.status_code, response.json()) == (200, {"code": 0, "msg": "接收成功"})
    assert _suppressed(db) == [("13800005555", "sms")]


def test_rotation__both_secrets_of_a_list_open_the_route(db: Engine) -> None:
    """`callback_secret: [new, old]` while the vendor console moves to the new URL: both paths work."""
    with served(db, {"sms": aliyun_sms(callback_secret=[SECRET, OLD_SECRET])}) as client:
        for secret in (SECRET, OLD_SECRET):
            assert client.post(f"/callbacks/aliyun/sms-up/{secret}",
                               content=sms_up_body(PHONE, "TD")).status_code == 200
    assert _suppressed(db) == [(PHONE, "sms")]


def test_routes__of_adapters_not_configured_or_without_secret_or_push_off_are_404(db: Engine) -> None:
    """Tencent is not configured, Aliyun voice has no secret, the fallback is `push: off`: none of their
    routes exists; the configured Aliyun SMS route does."""
    channels: dict[str, ChannelSettings] = {
        "sms": aliyun_sms(fallback=tencent_sms(callback_secret=SECRET, push=False)),
        "ai_call": aliyun_voice(callback_secret=None)}
    with served(db, channels) as client:
        for route in ("tencent/sms-status", "tencent/sms-reply", "aliyun/voice-report"):
            assert client.post(f"/callbacks/{route}/{SECRET}", content=b"[]").status_code == 404
        assert client.post(f"/callbacks/aliyun/sms-report/{SECRET}", content=b"[]").status_code == 200


def test_report_pushed_three_times__is_applied_once(db: Engine) -> None:
    """An SmsReport pushed three times answers Aliyun's acknowledgement each time and records one delivery."""
    _sent(db, "TALIYUN0000001", "sms", "biz-TALIYUN0000001")
    with served(db, {"sms": aliyun_sms()}) as client:
        for _ in range(3):
            response = client.post(f"/callbacks/aliyun/sms-report/{SECRET}", content=_report("TALIYUN0000001"))
            assert (response.status_code, response.json()["code"]) == (200, 0)
    assert _delivery(db, "TALIYUN0000001") == ("delivered", "DELIVERED")


# --------------------------------------------------------------------------- consistency

def test_receipt__whose_phone_is_not_the_members_is_counted_and_not_applied(db: Engine) -> None:
    """A receipt naming a touch (ids can be computed) but another number: acknowledged, counted
    `inconsistent`, the delivery untouched; the member's own number in any spelling applies."""
    _sent(db, "TALIYUN0000002", "sms", "biz-TALIYUN0000002")
    tally = PushTally(zone("Asia/Shanghai"), lambda: NOW)
    with served(db, {"sms": aliyun_sms()}, tally) as client:
        forged = client.post(f"/callbacks/aliyun/sms-report/{SECRET}",
                             content=_report("TALIYUN0000002", phone="13900001111", delivered=False))
        assert forged.status_code == 200
        assert _delivery(db, "TALIYUN0000002") == (None, None)
        real = client.post(f"/callbacks/aliyun/sms-report/{SECRET}",
                           content=_report("TALIYUN0000002", phone="+8613812345678"))
        assert real.status_code == 200
    assert _delivery(db, "TALIYUN0000002") == ("delivered", "DELIVERED")
    rows, _ = tally.drain()
    assert {r["outcome"]: r["count"] for r in rows} == {"inconsistent": 1, "applied": 1}


def test_receipt__for_a_touch_of_another_channel_or_provider_is_not_applied(db: Engine) -> None:
    """An Aliyun SmsReport aimed at a WeChat template touch, or at an SMS touch its Tencent fallback
    sent, changes neither."""
    _sent(db, "TWECHAT0000001", "template", "4242")
    _sent(db, "TTENCENT000001", "sms", "sid-1", provider="tencent_sms")
    channels: dict[str, ChannelSettings] = {"sms": aliyun_sms(fallback=tencent_sms(push=False))}
    with served(db, channels) as client:
        for touch_id in ("TWECHAT0000001", "TTENCENT000001"):
            assert client.post(f"/callbacks/aliyun/sms-report/{SECRET}",
                               content=_report(touch_id, delivered=False)).status_code == 200
    assert _delivery(db, "TWECHAT0000001") == (None, None)
    assert _delivery(db, "TTENCENT000001") == (None, None)


def test_voice_report__aimed_at_an_sms_touch_creates_no_call_result_event(db: Engine) -> None:
    """The review's 30 forged VoiceReports at SMS and WeChat touches created `ai_call_result` events
    with attacker-chosen attributes; now they land nowhere. One at the ai_call touch applies."""
    _sent(db, "TSMS0000000001", "sms", "biz-1")
    _sent(db, "TCALL000000001", "ai_call", "call-TCALL000000001")
    channels: dict[str, ChannelSettings] = {"sms": aliyun_sms(), "ai_call": aliyun_voice()}
    with served(db, channels) as client:
        for touch_id in ("TSMS0000000001", "TCALL000000001"):
            assert client.post(f"/callbacks/aliyun/voice-report/{SECRET}",
                               content=_voice_report(touch_id)).status_code == 200
    with db.connect() as conn:
        found = conn.execute(select(events.c.member_id).where(events.c.type == "ai_call_result")).scalars().all()
    assert found == ["M-TCALL000000001"]
    assert _delivery(db, "TSMS0000000001") == (None, None)


# --------------------------------------------------------------------------- malformed and limits

MALFORMED = {
    "deep JSON": b"[" * 100_000 + b"]" * 100_000,
    "out_id a list": json.dumps([{"out_id": ["T1"], "phone_number": PHONE, "success": True}]).encode(),
    "out_id a dict": json.dumps([{"out_id": {"a": 1}, "phone_number": PHONE, "success": True}]).encode(),
    "out_id over 2**63": json.dumps([{"out_id": 2 ** 64, "phone_number": PHONE, "success": True}]).encode(),
    "phone_number over-long": json.dumps([{"out_id": "T1", "phone_number": "1" * 5000}]).encode(),
    "not JSON": b"{not json",
    "not UTF-8": b"\xff\xfe[]",
    "a number": b"12",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_push__is_400_with_a_reason_never_500(db: Engine, name: str) -> None:
    """Each malformed body the review sent (deep JSON, `out_id` as a list, a dict or an integer over
    2⁶³, an over-long number) answers 400 with a one-line reason and changes nothing."""
    _sent(db, "T1", "sms", "biz-T1")
    with served(db, {"sms": aliyun_sms()}) as client:
        for route in ("aliyun/sms-report",) if name.startswith("out_id") else ("aliyun/sms-report", "aliyun/sms-up"):
            response = client.post(f"/callbacks/{route}/{SECRET}", content=MALFORMED[name])
            assert response.status_code == 400, (route, response.text)
            assert response.json()["msg"].startswith("malformed: ") and "\n" not in response.json()["msg"]
    assert _delivery(db, "T1") == (None, None)
    assert _suppressed(db) == []


def test_tencent_reply__with_time_1e20_is_read_without_its_time(db: Engine) -> None:
    """`time: 1e20` (no calendar holds it) was a 500: the reply is still an authenticated 退订."""
    body = json.dumps({"mobile": PHONE, "nationcode": "86", "text": "退订", "time": 1e20, "sign": "麦德氏"}).encode()
    with served(db, {"sms": tencent_sms(callback_secret=SECRET)}) as client:
        assert client.post(f"/callbacks/tencent/sms-reply/{SECRET}", content=body).status_code == 200
    assert _suppressed(db) == [(PHONE, "sms")]


def test_body_over_one_megabyte__is_413(db: Engine) -> None:
    """A 2 MB body on a vendor route is refused with 413 before it is parsed."""
    with served(db, {"sms": aliyun_sms()}) as client:
        response = client.post(f"/callbacks/aliyun/sms-up/{SECRET}", content=b"[" + b" " * 2_000_000 + b"]")
    assert response.status_code == 413
    assert _suppressed(db) == []


def test_source_allowlist__refuses_other_addresses(db: Engine) -> None:
    """`callback_allow`: a push from outside the vendor's networks is 403; from inside it applies."""
    body = sms_up_body(PHONE, "退订")
    tally = PushTally(zone("Asia/Shanghai"), lambda: NOW)
    for allow, status in ((["106.11.0.0/16"], 403), (["127.0.0.0/8", "::1"], 200)):
        app = build_app(ReceiptBook(db), {"sms": aliyun_sms(callback_allow=allow)}, tally)
        with FakeServer(app) as server:
            assert httpx.post(f"{server.url}/callbacks/aliyun/sms-up/{SECRET}", content=body).status_code == status
        assert _suppressed(db) == ([] if status == 403 else [(PHONE, "sms")])
    rows, reasons = tally.drain()
    assert {r["outcome"]: r["count"] for r in rows} == {"refused": 1, "applied": 1}
    assert reasons == {"aliyun/sms-up": "source address not allowed"}


def test_database_unavailable__is_503_so_the_vendor_pushes_again(tmp_path: Any) -> None:
    """With the database gone the push is answered 503 (Aliyun and Tencent push again), not 500."""
    gone = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", pool_pre_ping=False)
    with served(gone, {"sms": aliyun_sms()}) as client:
        response = client.post(f"/callbacks/aliyun/sms-up/{SECRET}", content=sms_up_body(PHONE, "退订"))
    assert response.status_code == 503


# --------------------------------------------------------------------------- counts

def test_counts__are_added_to_callback_counts_per_day_route_and_outcome(db: Engine) -> None:
    """Pushes are counted in memory and added to `callback_counts` by a flush (the daemon's minute):
    two daemons' flushes add up; the last accepted push per route is kept."""
    _sent(db, "TALIYUN0000003", "sms", "biz-TALIYUN0000003")
    tally = PushTally(zone("Asia/Shanghai"), lambda: NOW)
    with served(db, {"sms": aliyun_sms()}, tally) as client:
        client.post(f"/callbacks/aliyun/sms-report/{SECRET}", content=_report("TALIYUN0000003"))
        client.post(f"/callbacks/aliyun/sms-report/{SECRET}", content=_report("TNOSUCHTOUCH01"))
        client.post("/callbacks/aliyun/sms-up/" + "w" * 40, content=b"[]")
        client.post(f"/callbacks/aliyun/sms-up/{SECRET}", content=b"nope")
    tally.flush(db)
    tally.add("aliyun/sms-report", "applied", 2)  # another minute (or another daemon)
    tally.flush(db)
    with db.connect() as conn:
        counts = ledger.push_counts(conn, "2026-11-22")
        last = ledger.last_accepted_pushes(conn)
        assert conn.execute(select(func.count()).select_from(callback_counts)).scalar_one() == 4
    assert counts == {"aliyun/sms-report": {"applied": 3, "unmatched": 1},
                      "aliyun/sms-up": {"refused": 1, "malformed": 1}}
    assert last == {"aliyun/sms-report": NOW}


def test_counts__a_flush_with_nothing_pushed_writes_nothing(db: Engine) -> None:
    tally = PushTally(zone("Asia/Shanghai"), lambda: NOW)
    tally.flush(db)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(callback_counts)).scalar_one() == 0


# --------------------------------------------------------------------------- WeChat

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def wechat(**extra: Any) -> WechatTemplateSettings:
    return WechatTemplateSettings(adapter="wechat_template", app_id="wx0fakelocal00000", app_secret="s",
                                  **{"token": "push-token", "encoding_aes_key": AES_KEY, **extra})


def _plain_signed(token: str, timestamp: str, nonce: str) -> dict[str, str]:
    return {"signature": hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest(),
            "timestamp": timestamp, "nonce": nonce}


def test_wechat_safe_mode__encrypted_push_applies_to_the_members_touch(db: Engine) -> None:
    """Safe mode (the default): the fake encrypts as WeChat does; the push decrypts, its openid is the
    member's, and the delivery is recorded. The console's GET address check is answered."""
    _sent(db, "TWECHAT0000002", "template", "4242", openid="o_member")
    fake = WechatFake(app_id="wx0fakelocal00000", encoding_aes_key=AES_KEY)
    query, body = fake.push(4242, "failed:user block", "o_member")
    assert b"TEMPLATESENDJOBFINISH" not in body  # encrypted
    with served(db, {"template": wechat()}) as client:
        assert (client.post("/callbacks/wechat", params=query, content=body).text) == "success"
        check = _plain_signed("push-token", str(int(time.time())), "echo-nonce")
        assert client.get("/callbacks/wechat", params={**check, "echostr": "hello"}).text == "hello"
    assert _delivery(db, "TWECHAT0000002")[0] == "undelivered"


def test_wechat__replayed_2020_signature_with_a_forged_body_is_403(db: Engine) -> None:
    """The review replayed a signature from 2020 with a forged TEMPLATESENDJOBFINISH and flipped 20 of
    20 touches. Now: outside ±300 s is 403 in plain mode too, and safe mode refuses a plain push."""
    _sent(db, "TWECHAT0000003", "template", "4243", openid="o_member")
    fake = WechatFake(app_id="wx0fakelocal00000")  # plain pushes
    _, forged = fake.push(4243, "failed:system failed", "o_member")
    replayed = _plain_signed("push-token", "1577836800", "n2020")
    for settings in (wechat(push_mode="plain"), wechat()):
        with served(db, {"template": settings}) as client:
            assert client.post("/callbacks/wechat", params=replayed, content=forged).status_code == 403
    with served(db, {"template": wechat()}) as client:  # safe mode: a fresh plain signature is not enough
        fresh = _plain_signed("push-token", str(int(time.time())), "n-fresh")
        assert client.post("/callbacks/wechat", params=fresh, content=forged).status_code == 403
    assert _delivery(db, "TWECHAT0000003") == (None, None)


def test_wechat__a_nonce_seen_before_or_a_tampered_ciphertext_is_403(db: Engine) -> None:
    """The same signed push twice: the second is a replay (403). A ciphertext changed in transit fails
    its msg_signature (403). A non-ASCII signature is 403, not a traceback."""
    _sent(db, "TWECHAT0000004", "template", "4244", openid="o_member")
    fake = WechatFake(app_id="wx0fakelocal00000", encoding_aes_key=AES_KEY)
    query, body = fake.push(4244, "success", "o_member")
    with served(db, {"template": wechat()}) as client:
        tampered = body.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[AAAA")
        assert client.post("/callbacks/wechat", params=query, content=tampered).status_code == 403
        assert client.post("/callbacks/wechat", params={**query, "msg_signature": "签名" * 20},
                           content=body).status_code == 403
        assert client.post("/callbacks/wechat", params=query, content=body).status_code == 200
        assert client.post("/callbacks/wechat", params=query, content=body).status_code == 403
    assert _delivery(db, "TWECHAT0000004")[0] == "delivered"


def test_wechat__a_push_for_another_members_openid_is_not_applied(db: Engine) -> None:
    """An authentic push whose openid is not the touch's member's (a msgid reused, or a mix-up) is
    acknowledged and counted, not applied."""
    _sent(db, "TWECHAT0000005", "template", "4245", openid="o_member")
    fake = WechatFake(app_id="wx0fakelocal00000", encoding_aes_key=AES_KEY)
    query, body = fake.push(4245, "failed:user block", "o_someone_else")
    with served(db, {"template": wechat()}) as client:
        assert client.post("/callbacks/wechat", params=query, content=body).text == "success"
    assert _delivery(db, "TWECHAT0000005") == (None, None)


def test_wechat__without_aes_key_in_safe_mode_no_route_is_served(db: Engine) -> None:
    """`push_mode: safe` without `encoding_aes_key`: the route is not served (404) and the reason is
    what the daemon logs as callbacks.push_disabled."""
    settings = wechat(encoding_aes_key=None)
    assert settings.push_off_reason() == "push_mode safe needs encoding_aes_key"
    with served(db, {"template": settings}) as client:
        assert client.post("/callbacks/wechat", content=b"<xml/>").status_code == 404


def test_status__shows_todays_counts_the_last_accepted_push_and_warns_of_lost_replies(db: Engine) -> None:
    """`siyu status` shows per route today's counts and the last accepted push, and warns when an Aliyun
    SMS adapter serves no push route (its 退订 replies would be lost: SmsUp has no pull)."""
    from engine.config import Settings
    from engine.run.status import render, report

    tally = PushTally(zone("Asia/Shanghai"), lambda: NOW)
    tally.add("aliyun/sms-up", "applied", 3)
    tally.add("aliyun/sms-up", "refused", 2)
    tally.flush(db)
    served_settings = Settings.model_validate({"channels": {"sms": {
        "adapter": "aliyun_sms", "access_key_id": "k", "access_key_secret": "s", "sign_name": "x",
        "callback_secret": SECRET}}})
    pushes = report(db, served_settings, [], NOW)["pushes"]
    assert pushes["routes"]["aliyun/sms-up"]["today"]["applied"] == 3
    assert pushes["routes"]["aliyun/sms-up"]["today"]["refused"] == 2
    assert pushes["routes"]["aliyun/sms-up"]["last_accepted"] == "2026-11-22T10:00:00+08:00"
    assert pushes["routes"]["aliyun/sms-report"]["last_accepted"] is None
    assert pushes["warnings"] == []

    unserved = Settings.model_validate({"channels": {"sms": {
        "adapter": "aliyun_sms", "access_key_id": "k", "access_key_secret": "s", "sign_name": "x"}}})
    status = report(db, unserved, [], NOW)
    assert status["pushes"]["warnings"] == [
        ("channel sms (aliyun_sms) serves no push route (no callback_secret): its 退订 replies are lost "
         "(Aliyun has no pull for SmsUp)")]
    out = io.StringIO()
    render(status, out)
    assert "vendor pushes today" in out.getvalue() and "warning: channel sms (aliyun_sms)" in out.getvalue()
