"""Vendor pushes through the callback server: vendor formats in, vendor acknowledgements out, once in effect."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from scenario import add_member
from sqlalchemy import Engine, insert, select

from channels.fakes.aliyun_sms import SentSms, sms_report_body, sms_up_body
from channels.fakes.server import FakeServer
from channels.fakes.wechat_template import WechatFake
from channels.wechat.template import WechatTemplateSettings
from engine.run.callbacks import build_app
from engine.run.receipts import ReceiptBook
from engine.store.schema import suppressions, touches

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def _sent(db: Engine, touch_id: str, channel: str, vendor_id: str) -> None:
    with db.begin() as conn:
        add_member(conn, f"M-{touch_id}", phone="13812345678")
        conn.execute(insert(touches).values(
            touch_id=touch_id, playbook="p", member_id=f"M-{touch_id}", occurrence="o", state="sent",
            channel=channel, decided_at=NOW, touch_at=NOW, sent_at=NOW, vendor_id=vendor_id))


@contextmanager
def _served(app: object) -> Iterator[httpx.Client]:
    """The callback app on a loopback port, as the vendors reach it."""
    with FakeServer(app) as server, httpx.Client(base_url=server.url) as client:
        yield client


def _delivery(db: Engine, touch_id: str) -> tuple[str | None, str | None]:
    with db.connect() as conn:
        row = conn.execute(select(touches.c.delivery, touches.c.delivery_status)
                           .where(touches.c.touch_id == touch_id)).one()
    return row.delivery, row.delivery_status


def test_callbacks__aliyun_sms_report_pushed_three_times_is_applied_once(db: Engine) -> None:
    """An SmsReport pushed three times answers Aliyun's acknowledgement each time and records one delivery."""
    _sent(db, "TALIYUN0000001", "sms", "biz-1")
    body = sms_report_body([SentSms("13812345678", "麦德氏", "SMS_1", {}, "TALIYUN0000001", "biz-1", "20261122",
                                    NOW, status=3, err_code="DELIVERED")])
    with _served(build_app(ReceiptBook(db))) as client:
        for _ in range(3):
            response = client.post("/callbacks/aliyun/sms-report", content=body)
            assert response.status_code == 200
            assert response.json()["code"] == 0
    assert _delivery(db, "TALIYUN0000001") == ("delivered", "DELIVERED")


def test_callbacks__aliyun_sms_up_unsubscribe_suppresses_the_number(db: Engine) -> None:
    """An SmsUp reply 退订 adds an SMS suppression for that number before any other send to it."""
    with _served(build_app(ReceiptBook(db))) as client:
        response = client.post("/callbacks/aliyun/sms-up", content=sms_up_body("13812345678", " 退订 "))
    assert response.status_code == 200
    with db.connect() as conn:
        rows = conn.execute(select(suppressions.c.phone, suppressions.c.channel, suppressions.c.source)).all()
    assert [tuple(r) for r in rows] == [("13812345678", "sms", "reply")]


def test_callbacks__malformed_push_is_refused_and_changes_nothing(db: Engine) -> None:
    """A body that is not the vendor's format gets a 400 and no row changes."""
    _sent(db, "TALIYUN0000002", "sms", "biz-2")
    with _served(build_app(ReceiptBook(db))) as client:
        assert client.post("/callbacks/aliyun/sms-report", content=b"{not json").status_code == 400
    assert _delivery(db, "TALIYUN0000002") == (None, None)


def test_callbacks__wechat_push_needs_the_account_signature(db: Engine) -> None:
    """TEMPLATESENDJOBFINISH signed with the account token is applied; a wrong signature is refused."""
    _sent(db, "TWECHAT0000001", "template", "4242")
    fake = WechatFake()
    query, body = fake.push(4242, "failed:user block")
    account = WechatTemplateSettings(adapter="wechat_template", app_id="wx-fake", app_secret="s",
                                     token=fake.push_token)
    with _served(build_app(ReceiptBook(db), [account])) as client:
        forged = client.post("/callbacks/wechat", params={**query, "signature": "0" * 40}, content=body)
        assert forged.status_code == 403
        assert _delivery(db, "TWECHAT0000001") == (None, None)
        response = client.post("/callbacks/wechat", params=query, content=body)
        assert (response.status_code, response.text) == (200, "success")
        assert _delivery(db, "TWECHAT0000001")[0] == "undelivered"
        assert client.get("/callbacks/wechat", params={**query, "echostr": "hello"}).text == "hello"
