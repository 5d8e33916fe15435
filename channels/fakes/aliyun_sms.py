"""A fake Aliyun SMS endpoint (dysmsapi 2017-05-25) for loopback tests and `siyu fakes`.

`aliyun_sms_app(access_keys)` returns a Starlette app whose `app.state.sms` is an
`AliyunSmsFake`: it verifies the V2 signature, the timestamp window and nonce reuse as the
gateway does, validates `SendSms`, keeps every send, serves `QuerySendDetails` from them,
and can be told to fail (any code for the next N sends, slow, rate-limited, accept then
drop the connection). `report_body` / `sms_up_body` build the vendor's push bodies.
Facts: ../shared/vendors.md §3.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from channels.aliyun.signing import signature

SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE = re.compile(r"^(?:\+86|0086|86)?(1\d{10})$")


@dataclass
class SentSms:
    """One number of one accepted `SendSms`."""

    phone: str  #: normalised to 11 digits
    sign_name: str
    template_code: str
    params: dict[str, Any]
    out_id: str | None
    biz_id: str
    send_date: str  #: yyyyMMdd, Shanghai
    sent_at: datetime
    status: int = 1  #: 1 waiting, 2 failed, 3 delivered
    err_code: str = ""


@dataclass
class AliyunSmsFake:
    """The fake's state; tests read `sends` and steer it through the fields and methods below."""

    access_keys: dict[str, str]
    sign_names: set[str] | None = None  #: approved signatures (None: any)
    templates: dict[str, list[str]] | None = None  #: approved template code → variables (None: any)
    sends: list[SentSms] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)  #: every verified SendSms parameter set
    queries: list[dict[str, str]] = field(default_factory=list)  #: every verified QuerySendDetails parameter set
    failures: deque[tuple[str, str, int]] = field(default_factory=deque)  #: (code, message, HTTP status)
    drops: int = 0  #: record the next N sends, then never answer
    delay_s: float = 0.0  #: be slow before answering anything
    max_per_second: int | None = None  #: gateway Throttling.User above this many SendSms per second
    nonces: set[str] = field(default_factory=set)
    _recent: deque[float] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900619746936498440))

    def reset(self) -> None:
        """Forget every send, request and failure switch (between tests sharing one server)."""
        for bag in (self.sends, self.requests, self.queries, self.failures, self._recent):
            bag.clear()
        self.drops, self.delay_s, self.max_per_second = 0, 0.0, None

    def fail_next(self, code: str, n: int = 1, *, message: str = "injected", status: int = 200) -> None:
        """Answer the next `n` SendSms calls with `code` (nothing is recorded)."""
        self.failures.extend([(code, message, status)] * n)

    def drop_next(self, n: int = 1) -> None:
        """Record the next `n` sends, then hold the connection without answering until the client gives up."""
        self.drops += n

    def settle(self, out_id: str, status: int, err_code: str | None = None) -> None:
        """Set the carrier result of a recorded send (2 failed, 3 delivered)."""
        for s in self.sends:
            if s.out_id == out_id:
                s.status = status
                s.err_code = err_code or ("DELIVERED" if status == 3 else "MK:0001")

    def report_body(self, out_ids: list[str] | None = None) -> bytes:
        """An SmsReport push body for the settled sends (or those with `out_ids`)."""
        chosen = [s for s in self.sends if (s.out_id in out_ids if out_ids is not None else s.status != 1)]
        return sms_report_body(chosen)


def sms_report_body(sends: list[SentSms]) -> bytes:
    now = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    return json.dumps([{
        "phone_number": s.phone, "send_time": s.sent_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
        "report_time": now, "success": s.status == 3, "err_code": s.err_code or "DELIVERED",
        "err_msg": "用户接收成功" if s.status == 3 else "失败", "sms_size": "1", "biz_id": s.biz_id,
        "out_id": s.out_id or ""} for s in sends], ensure_ascii=False).encode()


def sms_up_body(phone: str, content: str, *, sign_name: str = "麦德氏", dest_code: str = "",
                at: datetime | None = None) -> bytes:
    """An SmsUp push body: one reply from `phone`."""
    moment = (at or datetime.now(UTC)).astimezone(SHANGHAI)
    return json.dumps([{"phone_number": phone, "send_time": moment.strftime("%Y-%m-%d %H:%M:%S"),
                        "content": content, "sign_name": sign_name, "dest_code": dest_code,
                        "sequence_id": int(time.time() * 1000)}], ensure_ascii=False).encode()


def _error(code: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), "HostId": "dysmsapi.aliyuncs.com",
                         "Code": code, "Message": message, "Recommend": "https://api.aliyun.com/troubleshoot"},
                        status_code=status)


class _Drop(Response):
    """No answer at all: wait until the client hangs up."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def _verify(fake: AliyunSmsFake, method: str, params: dict[str, str]) -> JSONResponse | None:
    secret = fake.access_keys.get(params.get("AccessKeyId", ""))
    if secret is None:
        return _error("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
    try:
        stamp = datetime.strptime(params.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return _error("InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
    if abs(datetime.now(UTC) - stamp) > timedelta(minutes=15):
        return _error("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    if params.get("SignatureMethod") != "HMAC-SHA1" or params.get("SignatureVersion") != "1.0":
        return _error("InvalidParameter", "SignatureMethod or SignatureVersion is not supported.")
    if params.get("Signature") != signature(method, params, secret):
        return _error("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
    nonce = params.get("SignatureNonce", "")
    if not nonce or nonce in fake.nonces:
        return _error("SignatureNonceUsed", "Specified signature nonce was used already.")
    fake.nonces.add(nonce)
    return None


def _ok(**fields: Any) -> JSONResponse:
    return JSONResponse({"Code": "OK", "Message": "OK", "RequestId": str(uuid.uuid4()).upper(), **fields})


def _business(code: str, message: str) -> JSONResponse:
    return JSONResponse({"Code": code, "Message": message, "RequestId": str(uuid.uuid4()).upper()})


def _gate(fake: AliyunSmsFake, p: dict[str, str]) -> Response | None:
    """Missing parameters, throttling and injected failures: answered before anything is looked at."""
    for name in ("PhoneNumbers", "SignName", "TemplateCode"):
        if not p.get(name):
            return _error(f"Missing{name}", f"{name} is mandatory for this action.")
    if fake.max_per_second is not None:
        now = time.monotonic()
        while fake._recent and now - fake._recent[0] > 1:
            fake._recent.popleft()
        if len(fake._recent) >= fake.max_per_second:
            return _error("Throttling.User", "Request was denied due to user flow control.")
        fake._recent.append(now)
    if fake.failures:
        code, message, status = fake.failures.popleft()
        return _business(code, message) if status == 200 else _error(code, message, status)
    return None


def _send_sms(fake: AliyunSmsFake, p: dict[str, str]) -> Response:
    gated = _gate(fake, p)
    if gated is not None:
        return gated
    numbers = p["PhoneNumbers"].split(",")
    if len(numbers) > 1000:
        return _business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
    matches = [PHONE.match(n.strip()) for n in numbers]
    if not all(matches):
        return _business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    if fake.sign_names is not None and p["SignName"] not in fake.sign_names:
        return _business("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法")
    if fake.templates is not None and p["TemplateCode"] not in fake.templates:
        return _business("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
    try:
        params = json.loads(p.get("TemplateParam") or "{}")
    except ValueError:
        return _business("isv.INVALID_JSON_PARAM", "JSON参数不合法")
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        return _business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
    needed = (fake.templates or {}).get(p["TemplateCode"], [])
    if any(n not in params for n in needed):
        return _business("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量")
    biz_id = f"{next(fake._ids)}^0"
    now = datetime.now(UTC)
    fake.requests.append(dict(p))
    for m in matches:
        assert m is not None
        fake.sends.append(SentSms(m.group(1), p["SignName"], p["TemplateCode"], params, p.get("OutId"), biz_id,
                                  now.astimezone(SHANGHAI).strftime("%Y%m%d"), now))
    if fake.drops:
        fake.drops -= 1
        return _Drop()
    return _ok(BizId=biz_id)


def _query(fake: AliyunSmsFake, p: dict[str, str]) -> Response:
    fake.queries.append(dict(p))
    m = PHONE.match(p.get("PhoneNumber", ""))
    if not p.get("SendDate") or m is None:
        return _error("MissingParameter", "PhoneNumber and SendDate are mandatory for this action.")
    size, page = int(p.get("PageSize") or 10), int(p.get("CurrentPage") or 1)
    if not 1 <= size <= 50:
        return _business("isv.INVALID_PARAMETERS", "PageSize must be 1..50")
    rows = [s for s in fake.sends if s.phone == m.group(1) and s.send_date == p["SendDate"]
            and (not p.get("BizId") or s.biz_id == p["BizId"])]
    chunk = rows[(page - 1) * size: page * size]
    dtos = [{"PhoneNum": s.phone, "SendStatus": s.status, "ErrCode": s.err_code, "TemplateCode": s.template_code,
             "Content": f"【{s.sign_name}】{json.dumps(s.params, ensure_ascii=False)}",
             "SendDate": s.sent_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
             "ReceiveDate": (s.sent_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S") if s.status != 1 else ""),
             "OutId": s.out_id or "", "BizId": s.biz_id} for s in chunk]
    return _ok(TotalCount=len(rows), SmsSendDetailDTOs={"SmsSendDetailDTO": dtos})


def aliyun_sms_app(access_keys: dict[str, str], *, sign_names: set[str] | None = None,
                   templates: dict[str, list[str]] | None = None) -> Starlette:
    """The fake endpoint; its state is `app.state.sms` (an `AliyunSmsFake`)."""
    fake = AliyunSmsFake(dict(access_keys), sign_names=sign_names, templates=templates)

    async def rpc(request: Request) -> Response:
        params = dict(request.query_params.items())
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if fake.delay_s:
            await asyncio.sleep(fake.delay_s)
        rejected = _verify(fake, request.method, params)
        if rejected is not None:
            return rejected
        action = params.get("Action")
        if params.get("Version") != "2017-05-25":
            return _error("InvalidVersion", "Specified parameter Version is not valid.")
        if action == "SendSms":
            return _send_sms(fake, params)
        if action == "QuerySendDetails":
            return _query(fake, params)
        return _error("InvalidAction.NotFound", "Specified api is not found, please check your url and method.", 404)

    app = Starlette(routes=[Route("/", rpc, methods=["GET", "POST"])])
    app.state.sms = fake
    return app
