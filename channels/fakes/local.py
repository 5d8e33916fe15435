"""Every fake vendor at once, on fixed loopback ports: what `siyu fakes` serves for a local trial.

`LocalVendors(port=9100)` serves Aliyun SMS (port+1), Tencent SMS (+2), WeCom (+3), the WeChat
official account (+4), the Aliyun outbound robot (+5) and Aliyun voice notifications (+6), each
with its own fake credentials (`CREDENTIALS`: not secrets, they open nothing but these fakes).
`settle()` plays the world behind the vendors: carriers deliver the SMS, staff members confirm
their WeCom tasks, the robot finishes its calls, and the receipts Aliyun and WeChat push are
pushed to Siyu's callbacks: Aliyun's to the `callback_secret` path, WeChat's encrypted with
`encoding_aes_key` (safe mode). Tencent's fallback is configured `push: off` (its receipts and
replies are pulled), as README recommends. `channels()` is the `channels:` config block
that points Siyu at them; config.example.yaml carries it, commented (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import httpx

from .aliyun_outbound_bot import BotFake
from .aliyun_sms import AliyunSmsFake, SentSms, aliyun_sms_app, sms_report_body
from .aliyun_voice import VoiceFake
from .server import FakeServer
from .tencent_sms import FakeTencentSms
from .wechat_template import WechatFake
from .wecom import WecomFake

CREDENTIALS: dict[str, str] = {
    "aliyun_key_id": "LTAI5tFakeLocalKey",
    "aliyun_key_secret": "fake-local-aliyun-secret",
    "tencent_secret_id": "AKIDfakeLocal000000000000000000000000",
    "tencent_secret_key": "fake-local-tencent-secret-key000",
    "tencent_sdk_app_id": "1400000000",
    "wecom_corp_id": "ww_fake_corp",
    "wecom_secret": "fake-local-contact-secret",
    "wechat_app_id": "wx0fakelocal00000",
    "wechat_app_secret": "fake-local-wechat-app-secret",
    "wechat_token": "fake-local-push-token",
    "wechat_aes_key": "fakeLocalEncodingAesKey000000000000000000ab",
    "callback_secret": "fake-local-callback-secret-0000000000000",
}
SIGN_NAME = "麦德氏"
TENCENT_TEMPLATES: dict[str, tuple[str, list[str]]] = {
    # the bundled playbooks' template_code → (Tencent template id, parameter order)
    "SMS_4820931": ("2000931", ["name", "discount"]),
    "SMS_4820940": ("2000940", ["name", "order"]),
    "SMS_4820952": ("2000952", ["name"]),
    "SMS_4820960": ("2000960", ["points"]),
    "SMS_4820975": ("2000975", ["name", "discount"]),
    "SMS_4820988": ("2000988", ["name", "link"]),
}
SMS_REPORT_BATCH = 100
"""SmsReport receipts per push (Aliyun batches them)."""
OFFSETS = {"aliyun_sms": 1, "tencent_sms": 2, "wecom": 3, "wechat": 4, "aliyun_outbound_bot": 5, "aliyun_voice": 6}


@dataclass
class LocalVendors:
    """The six fakes, their servers and the world behind them."""

    port: int = 9100
    host: str = "127.0.0.1"
    deliver_after: timedelta = timedelta(seconds=2)
    callbacks: str | None = "http://127.0.0.1:8080"  #: where Siyu serves push callbacks (`http.listen`)
    callback_secret: str = CREDENTIALS["callback_secret"]  #: in the paths Aliyun pushes to (`siyu fakes` makes one)
    encoding_aes_key: str = CREDENTIALS["wechat_aes_key"]  #: WeChat's pushes are encrypted with it (safe mode)
    servers: dict[str, FakeServer] = field(default_factory=dict)
    _template_seen: dict[str, datetime] = field(default_factory=dict)
    _template_pushed: set[str] = field(default_factory=set)
    _sms_unreported: list[SentSms] = field(default_factory=list)

    def __post_init__(self) -> None:
        c = CREDENTIALS
        sms_app = aliyun_sms_app({c["aliyun_key_id"]: c["aliyun_key_secret"]}, sign_names={SIGN_NAME})
        self.aliyun_sms: AliyunSmsFake = sms_app.state.sms
        self.tencent_sms = FakeTencentSms(secret_id=c["tencent_secret_id"], secret_key=c["tencent_secret_key"],
                                          sdk_app_id=c["tencent_sdk_app_id"], sign_names=(SIGN_NAME,),
                                          templates={tid: len(params) for tid, params in TENCENT_TEMPLATES.values()})
        self.wecom = WecomFake(c["wecom_corp_id"], c["wecom_secret"])
        self.wechat = WechatFake(app_id=c["wechat_app_id"], app_secret=c["wechat_app_secret"],
                                 push_token=c["wechat_token"], encoding_aes_key=self.encoding_aes_key)
        self.bot = BotFake(secrets={c["aliyun_key_id"]: c["aliyun_key_secret"]}, instance_id="inst-fake",
                           job_groups={"jg-lapsed"})
        self.voice = VoiceFake(secrets={c["aliyun_key_id"]: c["aliyun_key_secret"]})
        apps = {"aliyun_sms": sms_app, "tencent_sms": self.tencent_sms.app, "wecom": self.wecom.app,
                "wechat": self.wechat.app, "aliyun_outbound_bot": self.bot.app(), "aliyun_voice": self.voice.app()}
        for name, app in apps.items():
            self.servers[name] = FakeServer(app, port=self.port + OFFSETS[name] if self.port else None)
        self.wechat.url = self.url("wechat")

    def url(self, name: str) -> str:
        return self.servers[name].url

    def start(self) -> Self:
        for server in self.servers.values():
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            if server.thread.ident is not None:  # started (a taken port ends the thread early)
                server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the world behind the vendors -----------------------------------------------------------
    def settle(self, now: datetime | None = None) -> dict[str, int]:
        """Deliver what was sent at least `deliver_after` ago and push the receipts the vendors push;
        counts of what happened."""
        now = now or datetime.now(UTC)
        due = now - self.deliver_after
        delivered = 0
        for sms in self.aliyun_sms.sends:
            if sms.status == 1 and sms.sent_at <= due:
                sms.status, sms.err_code = 3, "DELIVERED"
                self._sms_unreported.append(sms)
                delivered += 1
        confirmed = 0
        for msgid, task in list(self.wecom.tasks.items()):
            if task.member_status == 0 and task.create_time <= due.timestamp():
                self.wecom.confirm(msgid, task.sender)
                confirmed += 1
        called = sum(job["Status"] == "Scheduling" for job in self.bot.jobs)
        if called:
            self.bot.finish()
        return {"sms_delivered": delivered, "wecom_confirmed": confirmed, "calls_finished": called,
                "sms_reported": self._push_sms_reports(), "template_pushed": self._push_templates(now, due)}

    def _push_sms_reports(self) -> int:
        """Aliyun pushes SmsReport receipts in batches to the configured receipt URL (Siyu also pulls
        QuerySendDetails, which finds whatever a push missed)."""
        pushed = 0
        while self._sms_unreported:
            batch = self._sms_unreported[:SMS_REPORT_BATCH]
            if not self._push(f"/callbacks/aliyun/sms-report/{self.callback_secret}", sms_report_body(batch)):
                break
            del self._sms_unreported[:len(batch)]
            pushed += len(batch)
        return pushed

    def _push_templates(self, now: datetime, due: datetime) -> int:
        """WeChat has no receipt pull: push TEMPLATESENDJOBFINISH to Siyu's callbacks, as WeChat does."""
        pushed = 0
        for message in self.wechat.messages:
            msgid = str(message["msgid"])
            if msgid in self._template_pushed or self._template_seen.setdefault(msgid, now) > due:
                continue
            query, body = self.wechat.push(msgid, "success", message["touser"])
            if not self._push("/callbacks/wechat", body, query):
                break
            self._template_pushed.add(msgid)
            pushed += 1
        return pushed

    def _push(self, path: str, body: bytes, query: dict[str, str] | None = None) -> bool:
        """POST one push to Siyu's callbacks: True once acknowledged. A push Siyu does not acknowledge
        (not running yet, or stopping) is tried again on the next settle, as the vendors retry."""
        if not self.callbacks:
            return False
        try:
            answer = httpx.post(f"{self.callbacks}{path}", params=query, content=body, timeout=10)
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    # -- the config that points Siyu at them ------------------------------------------------------
    def channels(self) -> dict[str, Any]:
        """The `channels:` block for these fakes."""
        c = CREDENTIALS
        return {
            "sms": {"adapter": "aliyun_sms", "base_url": self.url("aliyun_sms"), "access_key_id": c["aliyun_key_id"],
                    "access_key_secret": c["aliyun_key_secret"], "sign_name": SIGN_NAME, "cost": 0.045,
                    "callback_secret": self.callback_secret,
                    "fallback": {"adapter": "tencent_sms", "base_url": self.url("tencent_sms"), "push": False,
                                 "secret_id": c["tencent_secret_id"], "secret_key": c["tencent_secret_key"],
                                 "sdk_app_id": c["tencent_sdk_app_id"], "sign_name": SIGN_NAME,
                                 "templates": {code: {"id": tid, "params": params}
                                               for code, (tid, params) in TENCENT_TEMPLATES.items()}}},
            "wecom": {"adapter": "wecom", "base_url": self.url("wecom"), "corp_id": c["wecom_corp_id"],
                      "secret": c["wecom_secret"]},
            "template": {"adapter": "wechat_template", "base_url": self.url("wechat"), "app_id": c["wechat_app_id"],
                         "app_secret": c["wechat_app_secret"], "token": c["wechat_token"],
                         "encoding_aes_key": self.encoding_aes_key},
            "ai_call": {"adapter": "aliyun_outbound_bot", "base_url": self.url("aliyun_outbound_bot"),
                        "access_key_id": c["aliyun_key_id"], "access_key_secret": c["aliyun_key_secret"],
                        "instance_id": "inst-fake", "cost": 0.3,
                        "scenarios": {"lapsed_recall": {"job_group_id": "jg-lapsed", "script_id": "sc-lapsed"}}},
        }
