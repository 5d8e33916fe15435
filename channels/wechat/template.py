"""The `wechat_template` adapter: WeChat Official Account template messages, and their delivery push.

Facts from `../shared/vendors.md` §2 (WeChat OA). A token comes from `POST /cgi-bin/stable_token`
in normal mode (repeated calls return the same token, so replicas never invalidate each
other's) through the store-shared `TokenCache`. Each touch is one
`POST /cgi-bin/message/template/send` carrying the touch id as `client_msg_id`: WeChat sends
only one message per openid and `client_msg_id` within 10 minutes, which is the one resend
the at-most-once rule allows (`lookup`, inside `dedup_window`). There is no query API, so an
older unknown send stays unknown. Keyword values are checked against the 2023 content rules
(≤ 20 characters, no line breaks) before anything is sent.

Delivery results arrive as `TEMPLATESENDJOBFINISH` pushes to the callback route (`push_routes`),
answered with `ACKNOWLEDGEMENT`. In `push_mode: safe` (the default) they are AES-encrypted with
the account's `encoding_aes_key` and signed over the encrypted body (`msg_signature`); `compat`
carries both forms (the encrypted one is read); `plain` is signed over token, timestamp and
nonce only — not the body — and is served only when set explicitly (the daemon warns at
start). In every mode the timestamp must be within ±300 s and the nonce new
(channels/wechat/crypto.py: one codec and replay guard, shared with WeCom's callbacks).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field, field_validator

from channels.base import (
    NOT_CONNECTED,
    ChannelContext,
    ChannelError,
    HttpClients,
    Inbound,
    MessageCheck,
    Outcome,
    OutcomeKind,
    Receipt,
    Touch,
    not_connected,
)
from channels.push import PushRefused, PushRoute, PushSettings
from channels.wechat.crypto import (
    AES_KEY_SHAPE,
    DEFAULT_PUSH_MODE,
    AccountKeys,
    PushMode,
    ReplayGuard,
    open_push,
    verify_echo,
)
from channels.wechat.token import TokenCache
from engine.grammar.policies import Duration

log = structlog.get_logger("siyu")

K = OutcomeKind
_CODES: dict[int, OutcomeKind] = {
    # vendors.md §2.5 (template send error codes), §2.1 (token calls) and §6 (retry policy).
    -1: K.retry,  # system busy: rejected before sending, back off
    40003: K.failed_member,  # invalid openid (not this account's user)
    43004: K.failed_member,  # require subscribe: the member unfollowed
    43019: K.failed_member,  # the member is on the account's blacklist
    43101: K.failed_member,  # the member refuses messages from the account
    47001: K.failed,  # body is not valid JSON / wrong format
    47003: K.failed,  # template argument invalid (the field is named in errmsg)
    40037: K.failed,  # invalid template_id: a playbook's config error, not the channel's (§6 says halt;
    #                    one wrong template must not stop the playbooks whose templates work)
    40013: K.channel_fatal,  # invalid appid
    40125: K.channel_fatal,  # invalid appsecret
    40164: K.channel_fatal,  # caller IP not in the account's whitelist
    48001: K.channel_fatal,  # API unauthorized for this account
    45009: K.channel_fatal,  # daily quota reached: §6 "do not retry now"; pause, probe after `pause_for`
}
"""errcode → outcome. Codes not listed (and HTTP errors) are `unknown`: the vendor may have sent."""

_TOKEN_CODES = frozenset({40001, 40014, 42001})
"""Token invalid / not latest / expired (§2.1): refresh once and retry once."""

ACKNOWLEDGEMENT = "success"
"""The body that acknowledges a push (an empty body works as well, §2.6)."""

EVENT = "TEMPLATESENDJOBFINISH"


DEFAULT_KEYWORD_LENGTH = 20
"""2023 content rules: a keyword value (`thing` and the other types) is at most 20 characters."""


def check_message(message: Mapping[str, Any], address: Mapping[str, Any], *,
                  max_keyword_length: int = DEFAULT_KEYWORD_LENGTH) -> str | None:
    """The rule of WeChat's 2023 template rules that `message` breaks, or None (`ChecksMessages`):
    a template id, keyword data, each value at most `max_keyword_length` characters, on one line."""
    if not message.get("template_id"):
        return "no template_id in the message"
    data = message.get("data")
    if not isinstance(data, dict) or not data:
        return "no keyword data in the message"
    for key, raw in data.items():
        value = raw.get("value") if isinstance(raw, dict) else raw
        if not isinstance(value, str | int | float):
            return f"data.{key}: no value"
        text = str(value)
        if len(text) > max_keyword_length:
            return f"data.{key}: {len(text)} characters, at most {max_keyword_length} allowed"
        if "\n" in text or "\r" in text:
            return f"data.{key}: line breaks are not allowed"
    return None


class WechatTemplateSettings(PushSettings):
    adapter: Literal["wechat_template"]
    app_id: str
    app_secret: str
    base_url: str | None = "https://api.weixin.qq.com"
    token: str | None = None
    """The account's server token (服务器配置 → 令牌): signs `TEMPLATESENDJOBFINISH` pushes."""
    encoding_aes_key: str | None = None
    """服务器配置 → EncodingAESKey (43 characters): decrypts the pushes in safe and compat mode."""
    push_mode: PushMode = DEFAULT_PUSH_MODE
    """服务器配置 → 消息加解密方式: 安全模式 (safe), 兼容模式 (compat) or 明文模式 (plain: the body is not
    signed; only when set explicitly, with a warning at start)."""

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, value: str | None) -> str | None:
        if value is not None and not AES_KEY_SHAPE.fullmatch(value):
            raise ValueError("an EncodingAESKey is 43 characters of A-Z a-z 0-9 (as the console shows it)")
        return value

    def push_off_reason(self) -> str | None:
        if reason := super().push_off_reason():
            return reason
        if not self.token:
            return "no token"
        if self.push_mode != "plain" and not self.encoding_aes_key:
            return f"push_mode {self.push_mode} needs encoding_aes_key"
        return None

    def push_warning(self) -> str | None:
        if self.push_off_reason() is None and self.push_mode == "plain":
            return "push_mode plain: WeChat's signature does not cover the body; set encoding_aes_key and push_mode safe"
        return None
    max_keyword_length: int = Field(DEFAULT_KEYWORD_LENGTH, ge=1)
    """2023 content rules: each keyword value is at most this many characters."""
    dedup_window: Duration = timedelta(minutes=10)
    """How long WeChat dedups by `client_msg_id` (UNCONFIRMED beyond "10 minutes"): `lookup` resends within it."""


def mask(value: str) -> str:
    """An openid or token as it may appear in a log line."""
    return "****" if len(value) <= 8 else f"{value[:4]}****{value[-2:]}"


class WechatTemplateChannel:
    """Sends WeChat OA template messages; `lookup` resends inside the `client_msg_id` dedup window."""

    Settings = WechatTemplateSettings

    def __init__(self, name: str, settings: WechatTemplateSettings, context: ChannelContext | None = None) -> None:
        context = context or ChannelContext()
        self.name = name
        self.settings = settings
        self.clock: Callable[[], datetime] = context.now
        self.base_url = (settings.base_url or "https://api.weixin.qq.com").rstrip("/")
        self.http = HttpClients.verified(timeout=settings.timeout)
        self.tokens = TokenCache(context.store, f"wechat:{settings.app_id}", self._fetch_token, clock=self.clock)
        self.first_attempt: dict[str, datetime] = {}  #: touch id → when its first send left this process
        self.check = self.message_check(settings)

    @classmethod
    def push_routes(cls, configured: Sequence[WechatTemplateSettings]) -> list[PushRoute]:
        """TEMPLATESENDJOBFINISH pushes and WeChat's address check (GET with `echostr`): one route for
        every account that allows pushes, each push opened with the keys of the account that signed it
        (safe and compat: encrypted; plain: only accounts set to plain); none when no account does."""
        serving = [s for s in configured if s.push_off_reason() is None]
        if not serving:
            return []
        encrypted = [AccountKeys(s.token or "", s.encoding_aes_key, s.app_id) for s in serving
                     if s.push_mode != "plain"]
        plain = [AccountKeys(s.token or "", None, s.app_id) for s in serving if s.push_mode == "plain"]
        guard = ReplayGuard()

        def open_(query: Mapping[str, str], body: bytes) -> bytes:
            if query.get("encrypt_type") == "aes" and encrypted:
                return open_push(query, body, keys=encrypted, mode="safe", guard=guard)
            if plain:
                return open_push(query, body, keys=plain, mode="plain", guard=guard)
            raise PushRefused("not encrypted (push_mode safe)")

        def echo(query: Mapping[str, str]) -> str:
            return verify_echo(query, keys=[*encrypted, *plain])

        allow = tuple(dict.fromkeys(n for s in serving for n in s.callback_allow)) if all(
            s.callback_allow for s in serving) else ()
        return [PushRoute("wechat", "template", lambda body: Inbound(receipts=parse_event(body)), ACKNOWLEDGEMENT,
                          open=open_, echo=echo, methods=("GET", "POST"), allow=allow,
                          forget=lambda query: guard.release(query.get("timestamp", ""), query.get("nonce", "")))]

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- token ----------------------------------------------------------------------------------------
    async def _fetch_token(self) -> tuple[str, int]:
        body = {"grant_type": "client_credential", "appid": self.settings.app_id,
                "secret": self.settings.app_secret, "force_refresh": False}
        try:
            async with self.http.client() as client:
                response = await client.post(f"{self.base_url}/cgi-bin/stable_token", json=body)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ChannelError(f"stable_token: {type(exc).__name__}", retryable=True, code="TOKEN") from exc
        if not isinstance(answer, dict) or not answer.get("access_token"):
            code = int(answer.get("errcode", -1)) if isinstance(answer, dict) else -1
            message = str(answer.get("errmsg", "")) if isinstance(answer, dict) else "no token"
            raise ChannelError(f"stable_token: {message}", code=str(code),
                               retryable=_CODES.get(code) != K.channel_fatal)
        log.info("wechat.token.fetched", channel=self.name, expires_in=answer.get("expires_in"))
        return str(answer["access_token"]), int(answer.get("expires_in", 7200))

    async def _token(self) -> str | Outcome:
        """A token, or the outcome every touch of the batch gets when there is none."""
        try:
            return await self.tokens.get()
        except ChannelError as exc:
            kind = K.retry if exc.retryable else K.channel_fatal
            return Outcome("", kind, code=exc.code, message=str(exc))
        except TimeoutError as exc:  # another replica's refresh did not finish: nothing was sent
            return Outcome("", K.retry, code="TOKEN", message=str(exc))

    # -- send -----------------------------------------------------------------------------------------
    @classmethod
    def message_check(cls, settings: WechatTemplateSettings | None) -> MessageCheck:
        """The 2023 template rules (`check_message`) at this account's keyword limit (`ChecksMessages`)."""
        limit = DEFAULT_KEYWORD_LENGTH if settings is None else settings.max_keyword_length
        return partial(check_message, max_keyword_length=limit)

    def _problem(self, touch: Touch) -> str | None:
        """Why the vendor would reject or mangle this touch, checked before sending."""
        if not touch.address.get("oa_openid"):
            return "no oa_openid in the address"
        return self.check(touch.message, touch.address)

    @staticmethod
    def _body(touch: Touch) -> dict[str, Any]:
        data = {key: {"value": str(raw.get("value") if isinstance(raw, dict) else raw)}
                for key, raw in touch.message["data"].items()}
        body: dict[str, Any] = {"touser": touch.address["oa_openid"], "template_id": touch.message["template_id"],
                                "client_msg_id": touch.touch_id, "data": data}
        if touch.message.get("url"):
            body["url"] = touch.message["url"]
        if touch.message.get("miniprogram"):
            body["miniprogram"] = touch.message["miniprogram"]
        return body

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        ready = []
        for touch in touches:
            problem = self._problem(touch)
            if problem is None:
                ready.append(touch)
            else:
                outcomes[touch.touch_id] = Outcome(touch.touch_id, K.failed, code="LIMIT", message=problem)
        if ready:
            token = await self._token()
            if isinstance(token, Outcome):
                outcomes.update({t.touch_id: _for(t, token) for t in ready})
            else:
                now = self.clock()
                for touch in ready:
                    self.first_attempt.setdefault(touch.touch_id, now)
                gate = asyncio.Semaphore(self.settings.concurrency)
                async with self.http.client() as client:
                    results = await asyncio.gather(*(self._post(client, gate, token, t) for t in ready))
                outcomes.update({o.touch_id: o for o in results})
        return [outcomes[t.touch_id] for t in touches]

    async def _post(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, token: str, touch: Touch) -> Outcome:
        body = self._body(touch)
        async with gate:
            for attempt in (1, 2):
                try:
                    response = await client.post(f"{self.base_url}/cgi-bin/message/template/send",
                                                 params={"access_token": token}, json=body)
                except NOT_CONNECTED as exc:
                    return not_connected(touch.touch_id, exc)
                except httpx.TransportError as exc:  # the request may have left: never resend blindly
                    return Outcome(touch.touch_id, K.unknown, code=type(exc).__name__, message=str(exc) or None)
                outcome = self._outcome(touch, response)
                if outcome.code is not None and outcome.code.isdigit() and int(outcome.code) in _TOKEN_CODES \
                        and attempt == 1:
                    fresh = await self._refresh(token)
                    if isinstance(fresh, Outcome):
                        return _for(touch, fresh)
                    token = fresh
                    continue
                self._log(touch, outcome)
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refresh(self, bad: str) -> str | Outcome:
        log.info("wechat.token.expired", channel=self.name, token=mask(bad))
        try:
            return await self.tokens.refresh_after(bad)
        except ChannelError as exc:
            return Outcome("", K.retry if exc.retryable else K.channel_fatal, code=exc.code, message=str(exc))
        except TimeoutError as exc:
            return Outcome("", K.retry, code="TOKEN", message=str(exc))

    def _outcome(self, touch: Touch, response: httpx.Response) -> Outcome:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            return Outcome(touch.touch_id, K.unknown, code=f"HTTP{response.status_code}",
                           message="no errcode in the answer")
        code = int(answer.get("errcode", 0))
        message = str(answer.get("errmsg", ""))
        if code == 0:
            return Outcome(touch.touch_id, K.sent, vendor_id=str(answer.get("msgid")))
        if code in _TOKEN_CODES:  # a second token error: the message was surely not accepted
            return Outcome(touch.touch_id, K.retry, code=str(code), message=message)
        return Outcome(touch.touch_id, _CODES.get(code, K.unknown), code=str(code), message=message)

    def _log(self, touch: Touch, outcome: Outcome) -> None:
        log.info("wechat.template.send", channel=self.name, touch_id=touch.touch_id, kind=str(outcome.kind),
                 code=outcome.code, openid=mask(str(touch.address.get("oa_openid", ""))))

    # -- lookup ---------------------------------------------------------------------------------------
    async def lookup(self, touches: Sequence[Touch], *, sent_at: Mapping[str, datetime] | None = None) -> list[Outcome]:
        """Resend with the same `client_msg_id` while WeChat still dedups it (the one resend allowed).

        `sent_at` (touch id → when its first send started) comes from the engine; without it, only
        sends made by this process are known. Anything older, or of unknown age, stays `unknown`.
        """
        known = {**self.first_attempt, **{t.touch_id: t.claimed_at for t in touches if t.claimed_at},
                 **(sent_at or {})}
        now = self.clock()
        inside = [t for t in touches if t.touch_id in known and now - known[t.touch_id] < self.settings.dedup_window]
        outcomes = {t.touch_id: Outcome(t.touch_id, K.unknown, code="NO_QUERY_API",
                                        message="outside the client_msg_id dedup window; WeChat has no query API")
                    for t in touches}
        if inside:
            for outcome in await self.send(inside):
                if outcome.kind == K.sent:
                    outcomes[outcome.touch_id] = outcome
                else:
                    outcomes[outcome.touch_id] = Outcome(outcome.touch_id, K.unknown, code=outcome.code,
                                                         message=f"resend within the dedup window: {outcome.message}")
        return [outcomes[t.touch_id] for t in touches]


def _for(touch: Touch, shared: Outcome) -> Outcome:
    return Outcome(touch.touch_id, shared.kind, code=shared.code, message=shared.message)


# -- the TEMPLATESENDJOBFINISH push ---------------------------------------------------------------------
def parse_event(xml: bytes) -> list[Receipt]:
    """The receipt a `TEMPLATESENDJOBFINISH` push carries (none for other events or damaged XML)."""
    try:
        root = ET.fromstring(xml)  # expat refuses entity-expansion bombs
    except (ET.ParseError, LookupError, ValueError):  # damaged, or an encoding that does not exist
        return []
    fields = {child.tag: (child.text or "").strip() for child in root}
    if fields.get("MsgType") != "event" or fields.get("Event") != EVENT or not fields.get("MsgID"):
        return []
    status = fields.get("Status", "")
    created = fields.get("CreateTime", "")
    at = datetime.fromtimestamp(int(created), UTC) if created.isdigit() and len(created) <= 10 else None
    return [Receipt(touch_id=None, vendor_id=fields["MsgID"][:64], delivered=status == "success", status=status[:64],
                    at=at, details={"account": fields.get("ToUserName", "")[:64]},
                    address=fields.get("FromUserName") or None)]
