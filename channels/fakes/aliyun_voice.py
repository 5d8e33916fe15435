"""A fake Aliyun voice service (dyvmsapi 2017-05-25): `SingleCallByTts`, `QueryCallDetailByCallId`, VoiceReport.

It checks the RPC V2 signature with the shared `channels.aliyun.signing.signature` (a wrong
secret gets `SignatureDoesNotMatch`), the timestamp window and nonce reuse, and the
request shape (one callee, `OutId` ≤ 15 bytes, `TtsParam` a JSON object). It keeps every
verified request in `requests` and every accepted call in `calls`; `outcomes` scripts what
each callee does; `voice_report()` is the push body. `failures` is played in turn, one per
send: any code, a slow answer, or accept-then-drop.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
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
PHONE = re.compile(r"^(\+?86)?1\d{10}$|^0\d{9,11}$")


@dataclass
class Failure:
    """What the fake does to one send instead of (or after) accepting it."""

    code: str | None = None  #: answer with this code (nothing is dialled)
    http_status: int | None = None  #: default: 200 for isv./isp., 5xx for server errors, else 400
    slow_s: float = 0.0  #: accept, then wait this long before answering
    drop: bool = False  #: accept, then drop the connection mid-answer


@dataclass
class CallResult:
    """What one callee does with the call (VoiceReport names)."""

    status_code: str = "200000"
    duration_s: int = 23
    hangup_direction: str = "用户"


class DropResponse(Response):
    """Starts an answer, then breaks the connection before the body is complete."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"200")]})
        await send({"type": "http.response.body", "body": b'{"Code": "O', "more_body": True})
        raise ConnectionResetError("fake: connection dropped after accepting")


def error(code: str, message: str = "", http_status: int | None = None) -> JSONResponse:
    if http_status is None:
        http_status = 200 if code.startswith(("isv.", "isp.")) else {"InternalError": 500,
                                                                     "ServiceUnavailable": 503}.get(code, 400)
    return JSONResponse({"Code": code, "Message": message or code, "RequestId": str(uuid.uuid4()).upper()},
                        status_code=http_status)


def check_signed(params: dict[str, str], secrets: dict[str, str], nonces: set[str]) -> JSONResponse | None:
    """The gateway's checks of an RPC V2 request; None when it passes."""
    secret = secrets.get(params.get("AccessKeyId", ""))
    if secret is None:
        return error("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
    given = params.get("Signature", "")
    if given != signature("POST", {k: v for k, v in params.items() if k != "Signature"}, secret):
        return error("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
    try:
        stamp = datetime.strptime(params.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return error("InvalidTimeStamp.Format")
    if abs(datetime.now(UTC) - stamp) > timedelta(minutes=15):
        return error("InvalidTimeStamp.Expired")
    nonce = params.get("SignatureNonce", "")
    if not nonce or nonce in nonces:
        return error("SignatureNonceUsed")
    nonces.add(nonce)
    return None


async def form_params(request: Request) -> dict[str, str]:
    # parsed by hand: Starlette's form parser needs python-multipart, which Siyu does not ship
    params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    params.update(request.query_params)
    return params


Action = Callable[[dict[str, str]], Awaitable[Response]]


def rpc_app(version: str, actions: dict[str, Action], secrets: dict[str, str], nonces: set[str],
            requests: list[dict[str, str]]) -> Starlette:
    """One Aliyun RPC endpoint at `/`, as the gateway serves it: the signature, timestamp and nonce
    are checked, the request recorded in `requests`, the `Version` checked, then the `Action`
    answered from `actions`."""

    async def endpoint(request: Request) -> Response:
        p = await form_params(request)
        rejected = check_signed(p, secrets, nonces)
        if rejected is not None:
            return rejected
        requests.append(p)
        if p.get("Version") != version:
            return error("InvalidVersion")
        action = actions.get(p.get("Action", ""))
        if action is None:
            return error("InvalidAction.NotFound", http_status=404)
        return await action(p)

    return Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"])])


@dataclass
class VoiceFake:
    """State and behaviour of the fake; `app()` is the ASGI app."""

    secrets: dict[str, str] = field(default_factory=lambda: {"test-key-id": "test-key-secret"})
    requests: list[dict[str, str]] = field(default_factory=list)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  #: CallId → accepted call
    outcomes: dict[str, CallResult] = field(default_factory=dict)  #: callee → scripted result
    failures: list[Failure] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)

    def reset(self) -> None:
        for bag in (self.requests, self.calls, self.outcomes, self.failures, self.nonces):
            bag.clear()

    def _invalid(self, p: dict[str, str]) -> JSONResponse | None:
        callee = p.get("CalledNumber", "")
        if not callee or "," in callee:
            return error("isv.INVALID_PARAMETERS", "CalledNumber takes exactly one callee")
        if not PHONE.match(callee):
            return error("isv.MOBILE_NUMBER_ILLEGAL")
        if not p.get("TtsCode", "").startswith("TTS_"):
            return error("isv.TTS_TEMPLATE_ILLEGAL")
        if "OutId" in p and not 1 <= len(p["OutId"].encode()) <= 15:
            return error("isv.INVALID_PARAMETERS", "OutId must be 1-15 bytes")
        if "TtsParam" in p:
            try:
                values = json.loads(p["TtsParam"])
            except ValueError:
                return error("isv.INVALID_JSON_PARAM")
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                return error("isv.INVALID_JSON_PARAM")
        return None

    async def _single_call(self, p: dict[str, str]) -> Response:
        failure = self.failures.pop(0) if self.failures else Failure()
        if failure.code:
            return error(failure.code, http_status=failure.http_status)
        invalid = self._invalid(p)
        if invalid is not None:
            return invalid
        call_id = f"{len(self.calls) + 116012354148}^{uuid.uuid4().int % 10**11}"
        self.calls[call_id] = {"call_id": call_id, "out_id": p.get("OutId", ""), "callee": p["CalledNumber"],
                               "caller": p.get("CalledShowNumber", "057100000000"),
                               "at": datetime.now(SHANGHAI), "params": p}
        if failure.slow_s:
            await asyncio.sleep(failure.slow_s)
        if failure.drop:
            return DropResponse()
        return JSONResponse({"Code": "OK", "Message": "OK", "RequestId": str(uuid.uuid4()).upper(),
                             "CallId": call_id})

    def _result(self, call: dict[str, Any]) -> dict[str, Any]:
        result = self.outcomes.get(call["callee"], CallResult())
        answered = result.status_code in ("200000", "200001")
        start: datetime = call["at"] + timedelta(seconds=5)
        end = start + timedelta(seconds=result.duration_s if answered else 0)
        fmt = "%Y-%m-%d %H:%M:%S"
        return {"call_id": call["call_id"], "out_id": call["out_id"], "caller": call["caller"],
                "callee": call["callee"], "originate_time": call["at"].strftime(fmt),
                "ring_time": (call["at"] + timedelta(seconds=2)).strftime(fmt),
                "start_time": start.strftime(fmt) if answered else "", "end_time": end.strftime(fmt),
                "duration": result.duration_s if answered else 0, "status_code": result.status_code,
                "status_msg": "用户听完" if result.status_code == "200000" else "未接通",
                "smart_status_code": "ANSWERED" if answered else "NOANSWER",
                "hangup_direction": result.hangup_direction, "dtmf": "", "voice_type": "tts",
                "early_media_code": ""}

    def voice_report(self) -> list[dict[str, Any]]:
        """The VoiceReport HTTP push body (a JSON array) for every accepted call."""
        return [self._result(call) for call in self.calls.values()]

    def _detail(self, p: dict[str, str]) -> Response:
        call = self.calls.get(p.get("CallId", ""))
        if p.get("ProdId") != "11000000300006" or not p.get("QueryDate", "").isdigit():
            return error("isv.INVALID_PARAMETERS")
        if call is None:
            return JSONResponse({"Code": "OK", "Message": "OK", "RequestId": str(uuid.uuid4()), "Data": None})
        r = self._result(call)
        data = {"callId": r["call_id"], "caller": r["caller"], "callee": r["callee"], "state": r["status_code"],
                "stateDesc": r["status_msg"], "duration": r["duration"], "startDate": r["start_time"],
                "endDate": r["end_time"], "hangupDirection": r["hangup_direction"]}
        return JSONResponse({"Code": "OK", "Message": "OK", "RequestId": str(uuid.uuid4()),
                             "Data": json.dumps(data, ensure_ascii=False)})

    def app(self) -> Starlette:
        async def detail(p: dict[str, str]) -> Response:
            return self._detail(p)
        return rpc_app("2017-05-25", {"SingleCallByTts": self._single_call, "QueryCallDetailByCallId": detail},
                       self.secrets, self.nonces, self.requests)


def aliyun_voice_app(fake: VoiceFake) -> Starlette:
    """The ASGI app of `fake` (for `FakeServer` and `siyu fakes`)."""
    return fake.app()
