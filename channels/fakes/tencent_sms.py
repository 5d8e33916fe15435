"""A fake Tencent Cloud SMS (2021-01-11) on loopback: as strict as the vendor about TC3 signatures.

`FakeTencentSms(...)` holds the state; `.app` is the Starlette app to serve with `FakeServer`.
It verifies the TC3 signature from the headers it actually received (wrong key → HTTP 200 with
`AuthFailure.SignatureFailure`), the 5-minute timestamp window, version, region and body shape;
answers `SendSms` with per-number `SendStatusSet`; keeps every request (`received`) and send
(`sends`); serves `PullSmsSendStatusByPhoneNumber`, `PullSmsReplyStatusByPhoneNumber` and
`PullSmsReplyStatus` from them; builds push bodies. Failures: `fail_next(code, times)` for
request-level errors, `number_codes[phone] = code` per number, `delay_s` (slow), `drop_next`
(accept and record the send, then drop the connection).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from channels.tencent.signing import VERSION, canonical_request, signature, string_to_sign, utc_date

_AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request, "
                   r"SignedHeaders=([a-z0-9\-;]+), Signature=([0-9a-f]{64})$")
_NUMBER = re.compile(r"^\+861[3-9]\d{9}$")


@dataclass
class SentSms:
    serial_no: str
    phone: str
    template_id: str
    params: list[str]
    sign_name: str
    session_context: str
    at: int
    report_status: str = "SUCCESS"
    description: str = "DELIVRD"


@dataclass
class FakeReply:
    phone: str
    text: str
    at: int
    pulled: bool = False


@dataclass
class FakeTencentSms:
    secret_id: str = "AKIDfake0000000000000000000000000000"
    secret_key: str = "fake-secret-key-0000000000000000"
    sdk_app_id: str = "1400000000"
    sign_names: tuple[str, ...] = ("麦德氏",)
    templates: dict[str, int] = field(default_factory=lambda: {"1234567": 2})  #: id → parameter count
    session_context_in_status: bool = True  #: UNCONFIRMED vendor feature (vendors.md §7)
    clock_offset_s: int = 0
    clock: Callable[[], float] = time.time
    """When the carrier records a send or a reply (the world's time; a test at a fixed date sets it). The
    signature check stays on real time, as the signer's timestamp is."""
    received: list[dict[str, Any]] = field(default_factory=list)
    sends: list[SentSms] = field(default_factory=list)
    replies: list[FakeReply] = field(default_factory=list)
    number_codes: dict[str, str] = field(default_factory=dict)  #: E.164 → per-number code
    failures: list[str] = field(default_factory=list)  #: request-level codes for the next calls
    delay_s: float = 0.0
    drop_next: int = 0

    def reset(self) -> None:
        for name in ("received", "sends", "replies", "failures"):
            getattr(self, name).clear()
        self.number_codes.clear()
        self.delay_s, self.drop_next, self.clock_offset_s, self.clock = 0.0, 0, 0, time.time
        self.session_context_in_status = True

    def fail_next(self, code: str, times: int = 1) -> None:
        self.failures.extend([code] * times)

    def add_reply(self, phone: str, text: str, at: int | None = None) -> None:
        self.replies.append(FakeReply(phone, text, at if at is not None else int(self.clock())))

    @property
    def send_calls(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.received if r["action"] == "SendSms"]

    # -- push bodies --------------------------------------------------------------------------
    def status_callback_body(self) -> bytes:
        beijing = timedelta(hours=8)
        return json.dumps([{
            "user_receive_time": (datetime.fromtimestamp(s.at, UTC) + beijing).strftime("%Y-%m-%d %H:%M:%S"),
            "nationcode": "86", "mobile": s.phone.removeprefix("+86"), "report_status": s.report_status,
            "errmsg": s.description, "description": "用户短信送达成功" if s.report_status == "SUCCESS" else "失败",
            "sid": s.serial_no, "ext": s.session_context} for s in self.sends], ensure_ascii=False).encode()

    def reply_callback_body(self, reply: FakeReply) -> bytes:
        return json.dumps({"extend": "", "mobile": reply.phone.removeprefix("+86"), "nationcode": "86",
                           "sign": self.sign_names[0], "text": reply.text, "time": reply.at},
                          ensure_ascii=False).encode()

    # -- HTTP ---------------------------------------------------------------------------------
    @property
    def app(self) -> Any:
        starlette = Starlette(routes=[Route("/", self._endpoint, methods=["POST"])])

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and self.drop_next > 0:
                self.drop_next -= 1
                sent_start = False

                async def send_nothing(message: Any) -> None:
                    nonlocal sent_start
                    if message["type"] == "http.response.start" and not sent_start:
                        sent_start = True
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-length", b"100000")]})

                await starlette(scope, receive, send_nothing)  # handled and recorded, answer never completes
                raise ConnectionAbortedError("fake: dropping the connection after accepting")
            await starlette(scope, receive, send)

        return wrapped

    def _error(self, code: str, message: str = "") -> JSONResponse:
        return JSONResponse({"Response": {"Error": {"Code": code, "Message": message or code},
                                          "RequestId": str(uuid.uuid4())}})

    def _verify(self, request: Request, raw: bytes) -> str | None:
        auth = _AUTH.match(request.headers.get("authorization", ""))
        if auth is None:
            return "AuthFailure.SignatureFailure"
        secret_id, date, service, names, sig = auth.groups()
        if secret_id != self.secret_id:
            return "AuthFailure.SecretIdNotFound"
        try:
            timestamp = int(request.headers.get("x-tc-timestamp", ""))
        except ValueError:
            return "MissingParameter"
        if abs(time.time() + self.clock_offset_s - timestamp) > 300:
            return "AuthFailure.SignatureExpire"
        signed = names.split(";")
        if not {"content-type", "host"} <= set(signed) or signed != sorted(signed):
            return "AuthFailure.SignatureFailure"
        if date != utc_date(timestamp) or service != "sms":
            return "AuthFailure.SignatureFailure"
        canonical = canonical_request(dict(request.headers), signed, raw)
        if signature(self.secret_key, timestamp, service, string_to_sign(timestamp, service, canonical)) != sig:
            return "AuthFailure.SignatureFailure"
        return None

    async def _endpoint(self, request: Request) -> JSONResponse:
        raw = await request.body()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        problem = self._verify(request, raw)
        if problem:
            return self._error(problem)
        action = request.headers.get("x-tc-action", "")
        if request.headers.get("x-tc-version") != VERSION:
            return self._error("InvalidParameter", "X-TC-Version")
        if not request.headers.get("x-tc-region"):
            return self._error("MissingParameter", "X-TC-Region")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error("FailedOperation.JsonParseFail")
        self.received.append({"action": action, "body": body, "headers": dict(request.headers)})
        if self.failures:
            return self._error(self.failures.pop(0))
        if body.get("SmsSdkAppId") != self.sdk_app_id:
            return self._error("InvalidParameterValue.SdkAppIdNotExist")
        handler = {"SendSms": self._send_sms, "PullSmsSendStatusByPhoneNumber": self._pull_status,
                   "PullSmsReplyStatusByPhoneNumber": self._pull_replies_by_phone,
                   "PullSmsReplyStatus": self._pull_reply_queue}.get(action)
        if handler is None:
            return self._error("InvalidAction", f"no action {action}")
        return handler(body)

    def _ok(self, payload: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"Response": {**payload, "RequestId": str(uuid.uuid4())}})

    def _send_sms(self, body: dict[str, Any]) -> JSONResponse:
        numbers = body.get("PhoneNumberSet") or []
        if not numbers:
            return self._error("MissingParameter.EmptyPhoneNumberSet")
        if len(numbers) > 200:
            return self._error("LimitExceeded.PhoneNumberCountLimit")
        if body.get("SignName") not in self.sign_names:
            return self._error("FailedOperation.SignatureIncorrectOrUnapproved")
        count = self.templates.get(str(body.get("TemplateId")))
        if count is None:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved")
        params = body.get("TemplateParamSet") or []
        if len(params) != count or not all(isinstance(p, str) for p in params):
            return self._error("InvalidParameterValue.TemplateParameterFormatError")
        context = body.get("SessionContext", "")
        if len(context.encode()) >= 512:
            return self._error("InvalidParameter", "SessionContext")
        now, statuses = int(self.clock()), []
        for phone in numbers:
            code = self.number_codes.get(phone) or ("Ok" if _NUMBER.match(phone)
                                                     else "InvalidParameterValue.IncorrectPhoneNumber")
            serial = f"5000:{uuid.uuid4().int % 10**28:028d}" if code == "Ok" else ""
            if code == "Ok":
                self.sends.append(SentSms(serial, phone, str(body["TemplateId"]), params, body["SignName"],
                                          context, now))
            statuses.append({"SerialNo": serial, "PhoneNumber": phone, "Fee": 1 if code == "Ok" else 0,
                             "SessionContext": context, "Code": code,
                             "Message": "send success" if code == "Ok" else code, "IsoCode": "CN"})
        return self._ok({"SendStatusSet": statuses})

    def _window(self, body: dict[str, Any]) -> tuple[int, int, int, int] | JSONResponse:
        limit, offset = int(body.get("Limit", 0)), int(body.get("Offset", 0))
        if not 0 < limit <= 100 or "BeginTime" not in body or not body.get("PhoneNumber"):
            return self._error("InvalidParameter", "Limit/BeginTime/PhoneNumber")
        return int(body["BeginTime"]), int(body.get("EndTime") or 2**31), offset, limit

    def _pull_status(self, body: dict[str, Any]) -> JSONResponse:
        window = self._window(body)
        if isinstance(window, JSONResponse):
            return window
        begin, end, offset, limit = window
        rows = [s for s in self.sends if s.phone == body["PhoneNumber"] and begin <= s.at <= end]
        return self._ok({"PullSmsSendStatusSet": [{
            "UserReceiveTime": s.at, "CountryCode": "86", "SubscriberNumber": s.phone.removeprefix("+86"),
            "PhoneNumber": s.phone, "SerialNo": s.serial_no, "ReportStatus": s.report_status,
            "Description": s.description,
            "SessionContext": s.session_context if self.session_context_in_status else ""}
            for s in rows[offset:offset + limit]]})

    def _reply_row(self, r: FakeReply) -> dict[str, Any]:
        return {"ExtendCode": "", "CountryCode": "86", "PhoneNumber": r.phone, "SignName": self.sign_names[0],
                "ReplyContent": r.text, "ReplyTime": r.at, "SubscriberNumber": r.phone.removeprefix("+86")}

    def _pull_replies_by_phone(self, body: dict[str, Any]) -> JSONResponse:
        window = self._window(body)
        if isinstance(window, JSONResponse):
            return window
        begin, end, offset, limit = window
        rows = [r for r in self.replies if r.phone == body["PhoneNumber"] and begin <= r.at <= end]
        return self._ok({"PullSmsReplyStatusSet": [self._reply_row(r) for r in rows[offset:offset + limit]]})

    def _pull_reply_queue(self, body: dict[str, Any]) -> JSONResponse:
        rows = [r for r in self.replies if not r.pulled][: int(body.get("Limit", 100))]
        for r in rows:
            r.pulled = True
        return self._ok({"PullSmsReplyStatusSet": [self._reply_row(r) for r in rows]})
