"""Property: whatever body reaches a push route, the answer is never a 500 and nothing escapes as a
traceback (issue 14). Random JSON shaped like each vendor's push, random bytes, and random XML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from testdb import new_database_url

from channels.aliyun.sms import AliyunSmsSettings
from channels.aliyun.voice import AliyunVoiceSettings
from channels.base import ChannelSettings
from channels.fakes.server import FakeServer
from channels.tencent.sms import TencentSmsSettings
from channels.wechat.template import WechatTemplateSettings
from engine.clock import zone
from engine.run.callbacks import PushTally, build_app
from engine.run.receipts import ReceiptBook
from engine.store.connect import open_engine

SECRET = "s3cret-path-0123456789abcdefghijkl"
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
ROUTES = [f"aliyun/sms-report/{SECRET}", f"aliyun/sms-up/{SECRET}", f"aliyun/voice-report/{SECRET}",
          f"tencent/sms-status/{SECRET}", f"tencent/sms-reply/{SECRET}", "wechat"]
FIELDS = ["out_id", "biz_id", "phone_number", "success", "err_code", "report_time", "content", "send_time",
          "call_id", "callee", "status_code", "start_time", "end_time", "duration", "hangup_direction",
          "mobile", "nationcode", "report_status", "errmsg", "sid", "ext", "text", "time", "user_receive_time"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=True), st.text(max_size=80), st.just("13812345678"), st.just("退订"))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                             max_size=3), max_leaves=8)
records = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)
json_bodies = st.one_of(st.lists(records, max_size=4), records, values).map(
    lambda v: json.dumps(v, ensure_ascii=False, allow_nan=True).encode())
xml_bodies = st.builds(lambda tag, text: f"<xml><{tag}>{text}</{tag}></xml>".encode(),
                       st.sampled_from(["Encrypt", "MsgID", "Event", "CreateTime", "x"]), st.text(max_size=60))
bodies = st.one_of(json_bodies, xml_bodies, st.binary(max_size=300))
queries = st.dictionaries(st.sampled_from(["signature", "timestamp", "nonce", "msg_signature", "encrypt_type",
                                           "echostr"]), st.text(max_size=30), max_size=6)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Every push route of every adapter, on one SQLite database (the property is about answers)."""
    url = next(new_database_url("sqlite", Path(tmp_path_factory.mktemp("fuzz"))))
    engine: Engine = open_engine(url)
    common: dict[str, Any] = {"callback_secret": SECRET}
    channels: dict[str, ChannelSettings] = {
        "sms": AliyunSmsSettings(adapter="aliyun_sms", access_key_id="k", access_key_secret="s", sign_name="x",
                                 fallback=TencentSmsSettings(adapter="tencent_sms", secret_id="i", secret_key="k",
                                                             sdk_app_id="1", sign_name="x", **common), **common),
        "ai_call": AliyunVoiceSettings(adapter="aliyun_voice", access_key_id="k", access_key_secret="s",
                                       scenarios={"r": {"tts_code": "TTS_1"}}, **common),
        "template": WechatTemplateSettings(adapter="wechat_template", app_id="wx1", app_secret="s", token="t",
                                           encoding_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                                           push_mode="compat"),
    }
    app = build_app(ReceiptBook(engine), channels, PushTally(zone("Asia/Shanghai"), lambda: NOW))
    with FakeServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as test_client:
        yield test_client
    engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies, query=queries)
def test_any_push_body__is_answered_without_a_500(client: httpx.Client, route: str, body: bytes,
                                                  query: dict[str, str]) -> None:
    response = client.post(f"/callbacks/{route}", params=query, content=body)
    assert response.status_code in (200, 400, 403, 413), (route, body[:80], response.text[:200])
    if response.status_code == 400:
        assert response.json()["msg"].startswith("malformed: ")


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(xml_bodies, st.binary(max_size=300),
                      st.builds(lambda created, msgid: (f"<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH"
                                                        f"</Event><MsgID>{msgid}</MsgID><CreateTime>{created}"
                                                        "</CreateTime></xml>").encode(),
                                st.text(alphabet="0123456789", max_size=30), st.text(max_size=200))))
def test_any_decrypted_wechat_body__parses_to_receipts_or_nothing(body: bytes) -> None:
    """What a WeChat push decrypts to is read by `parse_event`: receipts or none, never an exception."""
    from channels.wechat.template import parse_event

    for receipt in parse_event(body):
        assert len(receipt.vendor_id or "") <= 64
