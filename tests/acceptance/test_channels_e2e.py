"""End to end: `siyu tick` with all four channels on their fake vendors, then `siyu run` for the
receipts (pulled and pushed), then `siyu status`; and no log line of any of it shows a phone
number, token, secret or signature unmasked.

The fakes are the ones `siyu fakes` serves (channels/fakes/local.py), on free loopback ports; the
config is theirs (`LocalVendors.channels()`), the one config.example.yaml carries commented.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml
from daemon_harness import Daemons, siyu, wait_for
from sqlalchemy import insert, select

from channels.fakes.local import CREDENTIALS, LocalVendors
from channels.fakes.server import free_port
from engine.store.connect import open_engine
from engine.store.schema import events, member_tags, members, touches

SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONES = {"S1": "13812345671", "W1": "13812345672", "T1": "13812345673", "C1": "13812345674"}
MEMBERS: list[dict[str, Any]] = [
    {"member_id": "S1", "nickname": "小林", "phone": PHONES["S1"], "tag": "e2e_sms"},
    {"member_id": "W1", "nickname": "王芳", "phone": PHONES["W1"], "wecom_external_userid": "wmEXTw1",
     "wecom_staff_userid": "zhangsan", "tag": "e2e_wecom"},
    {"member_id": "T1", "nickname": "韩梅梅", "phone": PHONES["T1"], "oa_openid": "o_member_t1",
     "oa_subscribed": True, "tag": "e2e_template"},
    {"member_id": "C1", "nickname": "李雷", "phone": PHONES["C1"], "tag": "e2e_call"},
]
STEPS = {
    "sms": 'sms: {template_code: SMS_4820931, params: {name: "{{ member.nickname }}", discount: "8折"}}',
    "wecom": 'wecom: {text: "{{ member.nickname }}，奶粉快喝完了吧～满199减40券已备好"}',
    "template": 'template: {template_id: "tK9w_points_expiring_v1", data: {thing1: "{{ member.nickname }}的积分即将到期", '
                'time2: "3天内"}}',
    "ai_call": 'ai_call: {scenario: lapsed_recall, variables: {name: "{{ member.nickname }}"}}',
}
TAGS = {"sms": "e2e_sms", "wecom": "e2e_wecom", "template": "e2e_template", "ai_call": "e2e_call"}
COSTS = {"sms": "0.045", "ai_call": "0.3", "wecom": "0", "template": "0"}


@pytest.fixture
def vendors() -> Iterator[LocalVendors]:
    with LocalVendors(port=0, callbacks=None) as running:  # pushes wait until the daemon listens
        yield running


def _brand(tmp_path: Path, db_url: str, vendors: LocalVendors, listen: str, ai_call: str) -> Path:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        for m in MEMBERS:
            row = {k: v for k, v in m.items() if k != "tag"}
            conn.execute(insert(members).values(**row))
            conn.execute(insert(member_tags).values(member_id=m["member_id"], tag=m["tag"]))
    engine.dispose()
    books = tmp_path / "playbooks"
    books.mkdir()
    for channel, step in STEPS.items():
        (books / f"e2e-{channel.replace('_', '-')}.yaml").write_text(
            f"id: e2e-{channel.replace('_', '-')}\nname: 端到端 {channel}\ntrigger: {{schedule: \"0 10 * * *\"}}\n"
            f"audience:\n  all:\n    - tag: {TAGS[channel]}\n    - reachable: {channel}\n"
            f"channels:\n  - {step}\n", encoding="utf-8")
    config = {"allow_literal_secrets": True,  # the fakes' own credentials, as `siyu fakes --write-config` writes
              "database": {"url": db_url}, "playbooks": str(books), "channels": vendors.channels(),
              "policies": {"frequency": [], "quiet_hours": {}}, "http": {"listen": listen},
              "log": {"format": "json", "level": "debug"}, "poll_interval": "1s"}
    config["channels"]["wecom"]["cost"] = 0
    if ai_call == "aliyun_voice":
        config["channels"]["ai_call"] = {
            "adapter": "aliyun_voice", "base_url": vendors.url("aliyun_voice"), "cost": 0.3,
            "access_key_id": CREDENTIALS["aliyun_key_id"], "access_key_secret": CREDENTIALS["aliyun_key_secret"],
            "scenarios": {"lapsed_recall": {"tts_code": "TTS_2000001", "called_show_number": "057100000000"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _secrets(vendors: LocalVendors) -> dict[str, str]:
    """Everything that must never appear in a log line, named for the failure message."""
    found = {f"phone {p}": p for p in PHONES.values()}
    found.update({f"credential {k}": v for k, v in CREDENTIALS.items()
                  if any(word in k for word in ("secret", "token", "aes_key"))})
    found.update({f"wecom token {i}": t for i, t in enumerate(vendors.wecom.tokens)})
    wechat_tokens = {vendors.wechat._token, *vendors.wechat._old_tokens} - {None}
    found.update({f"wechat token {i}": str(t) for i, t in enumerate(wechat_tokens)})
    signatures = [r["Signature"] for r in (*vendors.aliyun_sms.requests, *vendors.bot.requests,
                                           *vendors.voice.requests) if "Signature" in r]
    found.update({f"aliyun signature {i}": s for i, s in enumerate(signatures)})
    return found


@pytest.mark.parametrize("ai_call", ["aliyun_outbound_bot", "aliyun_voice"])
def test_tick_run_status__every_channel_on_its_fake(tmp_path: Path, db_url: str, vendors: LocalVendors,
                                                    ai_call: str) -> None:
    """Each of the four touches is sent once, to the right fake, with its rendered payload; receipts
    arrive (SMS by pull and push, WeCom and the robot by pull, WeChat by push, each push once
    in effect however often it comes); `siyu status` shows every channel
    sent 1, delivered 1, with its spend; the call outcome is a member event; no secret is logged."""
    listen = f"127.0.0.1:{free_port()}"
    config = _brand(tmp_path, db_url, vendors, listen, ai_call)
    at = datetime.now(SHANGHAI).replace(hour=10, minute=0, second=0, microsecond=0)
    tick = siyu("tick", "--config", str(config), "--at", at.isoformat(), cwd=tmp_path)
    assert tick.returncode == 0, tick.stderr
    logs = [tick.stdout, tick.stderr]

    engine = open_engine(db_url)
    with engine.connect() as conn:
        ledger = {r.member_id: r for r in conn.execute(select(touches))}
    assert {m: (r.channel, r.state) for m, r in ledger.items()} == {
        "S1": ("sms", "sent"), "W1": ("wecom", "sent"), "T1": ("template", "sent"), "C1": ("ai_call", "sent")}

    # every touch once, to the right fake, rendered
    [sms] = vendors.aliyun_sms.sends
    assert (sms.phone, sms.template_code, sms.params, sms.out_id) == (
        PHONES["S1"], "SMS_4820931", {"name": "小林", "discount": "8折"}, ledger["S1"].touch_id)
    assert vendors.tencent_sms.sends == []  # the fallback is not needed
    [task] = vendors.wecom.received
    assert task["chat_type"] == "single" and task["sender"] == "zhangsan" and task["external_userid"] == ["wmEXTw1"]
    assert task["text"]["content"] == "王芳，奶粉快喝完了吧～满199减40券已备好"
    [message] = vendors.wechat.messages
    assert message["touser"] == "o_member_t1" and message["template_id"] == "tK9w_points_expiring_v1"
    assert message["client_msg_id"] == ledger["T1"].touch_id
    assert message["data"]["thing1"]["value"] == "韩梅梅的积分即将到期"
    if ai_call == "aliyun_outbound_bot":
        [job] = vendors.bot.jobs
        assert job["CalledNumber"] == PHONES["C1"] and job["Contact"]["ReferenceId"] == ledger["C1"].touch_id
    else:
        [call] = vendors.voice.calls.values()
        assert (call["callee"], call["out_id"]) == (PHONES["C1"], ledger["C1"].touch_id)
        assert call["params"]["TtsCode"] == "TTS_2000001"

    # the world answers: carriers deliver, the guide confirms the task, the robot calls
    vendors.settle(datetime.now(SHANGHAI) + timedelta(minutes=1))
    daemons = Daemons(tmp_path, config)
    daemon = daemons.start()
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.events("callbacks.listening"), 30, "callbacks.listening")
        vendors.callbacks = f"http://{listen}"  # now the fakes push what the vendors push
        pushed = vendors.settle(datetime.now(SHANGHAI) + timedelta(minutes=2))
        assert (pushed["sms_reported"], pushed["template_pushed"]) == (1, 1)
        for _ in range(3):  # WeChat pushes again (a fresh nonce each time): the second and third change nothing
            for query, body in vendors.wechat.pushes():
                answer = httpx.post(f"http://{listen}/callbacks/wechat", params=query, content=body, timeout=5)
                assert answer.status_code == 200 and answer.text == "success"
        replayed = httpx.post(f"http://{listen}/callbacks/wechat", params=query, content=body, timeout=5)
        assert replayed.status_code == 403  # the same signed push twice is a replay

        def delivered() -> bool:
            with engine.connect() as conn:
                return all(r.delivery == "delivered" for r in conn.execute(select(touches.c.delivery)))
        wait_for(delivered, 30, "every touch delivered")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        daemons.kill_all()
    logs += [daemon.stdout.read_text(encoding="utf-8"), daemon.stderr.read_text(encoding="utf-8")]

    with engine.connect() as conn:
        calls = conn.execute(select(events.c.member_id, events.c.type, events.c.attributes)
                             .where(events.c.type == "ai_call_result")).all()
        result = conn.execute(select(touches.c.vendor_result).where(touches.c.member_id == "C1")).scalar_one()
    engine.dispose()
    assert [(c.member_id, c.attributes["answered"]) for c in calls] == [("C1", True)]
    if ai_call == "aliyun_outbound_bot":
        assert calls[0].attributes["intent"] == "interested"
    assert result["answered"] is True

    status = siyu("status", "--config", str(config), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    logs += [status.stdout, status.stderr]
    channels = json.loads(status.stdout)["channels"]
    assert {name: (c["sent_today"], c["delivered_today"], c["spend_today"]) for name, c in channels.items()} == {
        name: (1, 1, COSTS[name]) for name in ("sms", "wecom", "template", "ai_call")}

    # no secret in any log line (and the logs are not empty: the grep is not vacuous)
    text = "\n".join(logs)
    assert text.count('"touch.sent"') == 4 and '"receipts.pulled"' in text and '"callback.applied"' in text
    assert '"aliyun/sms-report"' in text and "/callbacks/aliyun" not in text  # the route's name, never its path
    leaks = {name for name, secret in _secrets(vendors).items() if secret and secret in text}
    assert not leaks, f"unmasked in the logs: {sorted(leaks)}"
