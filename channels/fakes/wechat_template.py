"""A fake WeChat Official Account API: `stable_token` and `message/template/send`, plus the finish push.

It follows `../shared/vendors.md` §2: `stable_token` in normal mode returns the same token
while it is valid (one valid token at a time); a wrong appid/secret gets 40013/40125; a
template send checks the token (an expired one gets 42001, an unknown one 40001), the body
(touser follows, template exists, keyword values ≤ 20 characters without line breaks, else
47003), and dedups by (touser, client_msg_id) for 10 minutes, answering the original msgid.
It keeps what it received, makes signed `TEMPLATESENDJOBFINISH` pushes, and can be told to
fail: `expire_token()`, `fail_next` (any errcode), `slow_s`, `drop_next` (accept, then drop
the connection before answering).

`make_app(fake)` (or `fake.app`) is the ASGI app; serve it with `channels.fakes.server.FakeServer`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from channels.wechat.crypto import MessageCrypto

TOKEN_TTL_S = 7200
DEDUP_S = 600
SEND_PATH = "/cgi-bin/message/template/send"


@dataclass
class WechatFake:
    """The state of one fake account; tests read and steer it directly."""

    app_id: str = "wx0123456789abcdef"
    app_secret: str = "s3cret-app-secret-0123456789"
    push_token: str = "push-token"  #: the account's server token: signs the pushes
    encoding_aes_key: str | None = None  #: set: pushes are encrypted (安全模式, safe mode); None: plain
    account: str = "gh_0123456789ab"
    followers: set[str] | None = None  #: openids that follow (None: anyone starting with "o")
    blocked: set[str] = field(default_factory=set)  #: openids on the account's blacklist
    templates: set[str] | None = None  #: known template ids (None: any)
    max_keyword_length: int = 20
    url: str = ""  #: where it is served (set by whoever serves it)
    skew_s: float = 0.0  #: added to the clock: lets a test step past the dedup window or token expiry
    fail_next: list[int] = field(default_factory=list)  #: errcodes answered by the next template sends
    slow_s: float = 0.0  #: sleep before answering a template send
    drop_next: int = 0  #: accept this many template sends, then drop the connection instead of answering
    token_calls: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)  #: every template-send body, duplicates too
    messages: list[dict[str, Any]] = field(default_factory=list)  #: messages accepted (each once), with msgid
    _token: str | None = None
    _token_expires: float = 0.0
    _old_tokens: set[str] = field(default_factory=set)
    _dedup: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    _next_msgid: int = 2_000_000_000_000_000_000

    def now(self) -> float:
        return time.time() + self.skew_s

    @property
    def app(self) -> ASGIApp:
        return make_app(self)

    # -- steering ---------------------------------------------------------------------------------------
    def expire_token(self) -> None:
        """The current token expires now: business calls get 42001, `stable_token` issues a new one."""
        self._token_expires = self.now()

    # -- tokens -----------------------------------------------------------------------------------------
    def stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        self.token_calls += 1
        if body.get("grant_type") != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if body.get("appid") != self.app_id:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if body.get("secret") != self.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        now = self.now()
        if self._token is None or now >= self._token_expires or body.get("force_refresh"):
            if self._token is not None:
                self._old_tokens.add(self._token)
            self._token = "TOKEN_" + secrets.token_hex(24)
            self._token_expires = now + TOKEN_TTL_S
        return {"access_token": self._token, "expires_in": int(self._token_expires - now)}

    def _token_error(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return {"errcode": 41001, "errmsg": "access_token missing"}
        if token == self._token and self.now() < self._token_expires:
            return None
        if token == self._token or token in self._old_tokens:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}

    # -- template send ----------------------------------------------------------------------------------
    def template_send(self, token: str | None, raw: bytes) -> dict[str, Any]:
        """The vendor's answer to one template send (and its effects on the fake's state)."""
        if self.fail_next:
            code = self.fail_next.pop(0)
            return {"errcode": code, "errmsg": f"injected {code}"}
        error = self._token_error(token)
        if error is not None:
            return error
        try:
            body = json.loads(raw)
        except ValueError:
            return {"errcode": 47001, "errmsg": "data format error"}
        if not isinstance(body, dict):
            return {"errcode": 47001, "errmsg": "data format error"}
        self.received.append(body)
        error = self._body_error(body)
        if error is not None:
            return error
        now = self.now()
        key = (body["touser"], str(body.get("client_msg_id") or ""))
        if key[1] and key in self._dedup and now - self._dedup[key][1] < DEDUP_S:
            return {"errcode": 0, "errmsg": "ok", "msgid": self._dedup[key][0]}
        self._next_msgid += 1
        msgid = self._next_msgid
        if key[1]:
            self._dedup[key] = (msgid, now)
        self.messages.append({**body, "msgid": msgid})
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _body_error(self, body: dict[str, Any]) -> dict[str, Any] | None:
        touser = body.get("touser")
        if not isinstance(touser, str) or not touser.startswith("o"):
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if touser in self.blocked:
            return {"errcode": 43019, "errmsg": "user in black list"}
        if self.followers is not None and touser not in self.followers:
            return {"errcode": 43004, "errmsg": "require subscribe"}
        template_id = body.get("template_id")
        if not template_id or (self.templates is not None and template_id not in self.templates):
            return {"errcode": 40037, "errmsg": "invalid template_id"}
        data = body.get("data")
        if not isinstance(data, dict) or not data:
            return {"errcode": 47003, "errmsg": "argument invalid! data invalid"}
        for key, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, str) or len(value) > self.max_keyword_length or "\n" in value:
                return {"errcode": 47003, "errmsg": f"argument invalid! data.{key}.value invalid"}
        return None

    # -- pushes -----------------------------------------------------------------------------------------
    def push(self, msgid: int | str, status: str = "success", openid: str = "o_member") -> tuple[dict[str, str], bytes]:
        """A signed `TEMPLATESENDJOBFINISH` push: (query parameters, XML body), encrypted when the
        account has an `encoding_aes_key` (safe mode: `encrypt_type=aes`, `msg_signature` over the
        ciphertext, the body `<xml><ToUserName/><Encrypt/></xml>`)."""
        timestamp, nonce = str(int(self.now())), secrets.token_hex(5)
        signature = hashlib.sha1("".join(sorted([self.push_token, timestamp, nonce])).encode()).hexdigest()
        query = {"signature": signature, "timestamp": timestamp, "nonce": nonce, "openid": openid}
        xml = (f"<xml><ToUserName><![CDATA[{self.account}]]></ToUserName>"
               f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{timestamp}</CreateTime>"
               f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
               f"<MsgID>{msgid}</MsgID><Status><![CDATA[{status}]]></Status></xml>")
        if self.encoding_aes_key is None:
            return query, xml.encode()
        crypto = MessageCrypto(self.push_token, self.encoding_aes_key, self.app_id)
        encrypted = crypto.encrypt(xml.encode())
        query |= {"encrypt_type": "aes", "msg_signature": crypto.signature(timestamp, nonce, encrypted)}
        return query, (f"<xml><ToUserName><![CDATA[{self.account}]]></ToUserName>"
                       f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()

    def pushes(self, status: str = "success") -> list[tuple[dict[str, str], bytes]]:
        """One push per accepted message."""
        return [self.push(m["msgid"], status, m["touser"]) for m in self.messages]


def make_app(fake: WechatFake) -> ASGIApp:
    """The ASGI app of `fake`: Starlette routes, with a raw path for accept-then-drop."""

    async def stable_token(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
        return JSONResponse(fake.stable_token(body if isinstance(body, dict) else {}))

    async def template_send(request: Request) -> JSONResponse:
        answer = fake.template_send(request.query_params.get("access_token"), await request.body())
        if fake.slow_s:
            await asyncio.sleep(fake.slow_s)
        return JSONResponse(answer)

    routes = Starlette(routes=[Route("/cgi-bin/stable_token", stable_token, methods=["POST"]),
                               Route(SEND_PATH, template_send, methods=["POST"])])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == SEND_PATH and fake.drop_next > 0:
            fake.drop_next -= 1
            await _accept_then_drop(fake, scope, receive, send)
            return
        await routes(scope, receive, send)

    return app


async def _accept_then_drop(fake: WechatFake, scope: Scope, receive: Receive, send: Send) -> None:
    """Process the send, then start an answer and break the connection before its body arrives."""
    raw = b""
    while True:
        event = await receive()
        raw += event.get("body", b"")
        if not event.get("more_body"):
            break
    query = dict(pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair)
    fake.template_send(query.get("access_token"), raw)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]})
    await send({"type": "http.response.body", "body": b'{"errc', "more_body": True})
    raise ConnectionAbortedError("fake: dropped after accepting")
