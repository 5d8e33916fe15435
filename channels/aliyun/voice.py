"""The `aliyun_voice` adapter: Aliyun voice notification (dyvmsapi 2017-05-25) `SingleCallByTts`.

One request per touch (the API takes one callee per call), `OutId` = touch id. Call outcomes
come from the `VoiceReport` push (`parse_voice_report`, keyed by `out_id`) and, for touches
whose `CallId` is known, from `QueryCallDetailByCallId` (`pull`). There is no query by
`OutId` (vendors.md §0.2), so a send whose answer was lost stays `unknown` unless a
VoiceReport has since named its touch id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Literal

import httpx
from pydantic import Field

from channels.aliyun import rpc
from channels.aliyun.rpc import GATEWAY_CODES, Endpoint, shanghai_time
from channels.base import (
    NOT_CONNECTED,
    ChannelContext,
    HttpClients,
    Inbound,
    MessageCheck,
    Outcome,
    OutcomeKind,
    Receipt,
    Touch,
    not_connected,
)
from channels.push import PushRoute, SecretPathSettings, push_text, secret_routes
from engine.grammar.values import GrammarModel, Text

VERSION = "2017-05-25"
DEFAULT_BASE_URL = "https://dyvmsapi.aliyuncs.com"
PROD_ID_VOICE_NOTIFICATION = "11000000300006"
VOICE_REPORT_ACK: dict[str, Any] = {"code": 0, "msg": "接收成功"}
"""The body Aliyun expects back from a VoiceReport push (HTTP 200); anything else is re-pushed."""

K = OutcomeKind
# Send-time codes: vendors.md §3.5 (shared dysms/dyvms `isv.*` family and the RPC gateway codes), §6.
_CODES: dict[str, OutcomeKind] = {
    **GATEWAY_CODES,
    # rejected before anything was dialled: safe to send again later
    # this touch only
    "isv.BUSINESS_LIMIT_CONTROL": K.failed,  # per-callee 1/min, 5/h, 20/day: the touch cap is hit
    "isv.TEMPLATE_MISSING_PARAMETERS": K.failed,
    "isv.TEMPLATE_PARAMS_ILLEGAL": K.failed,
    "isv.INVALID_JSON_PARAM": K.failed,
    "isv.PARAM_LENGTH_LIMIT": K.failed,
    "isv.PARAM_NOT_SUPPORT_URL": K.failed,
    "isv.INVALID_PARAMETERS": K.failed,
    "isv.BLACK_KEY_CONTROL_LIMIT": K.failed,
    # the number is dead for this channel
    "isv.MOBILE_NUMBER_ILLEGAL": K.failed_member,
    # account / configuration: pause the channel
    "isv.TTS_TEMPLATE_ILLEGAL": K.channel_fatal,
    "isv.DISPLAY_NUMBER_ILLEGAL": K.channel_fatal,
    "isv.AMOUNT_NOT_ENOUGH": K.channel_fatal,
    "isv.OUT_OF_SERVICE": K.channel_fatal,
    "isv.DAY_LIMIT_CONTROL": K.channel_fatal,  # account-wide cap: every send fails until it resets
    "isv.MONTH_LIMIT_CONTROL": K.channel_fatal,
    "isv.PRODUCT_UN_SUBSCRIPT": K.channel_fatal,
    "isv.PRODUCT_UNSUBSCRIBE": K.channel_fatal,
    "isv.ACCOUNT_NOT_EXISTS": K.channel_fatal,
    "isv.ACCOUNT_ABNORMAL": K.channel_fatal,
    "isv.DENY_IP_RANGE": K.channel_fatal,
    "isp.RAM_PERMISSION_DENY": K.channel_fatal,
    # may have been accepted: never resend blindly
    "isp.SYSTEM_ERROR": K.unknown,
}

# VoiceReport status_code values that mean the callee picked up (vendors.md §5.1).
_ANSWERED = {"200000", "200001"}
_HANGUP = {"用户": "user", "机器": "robot"}


class VoiceScenario(GrammarModel):
    tts_code: Text
    """The approved TTS template (`TTS_...`)."""
    called_show_number: str | None = None
    """Caller display number; omitted → the vendor's public pool."""
    play_times: int | None = Field(None, ge=1, le=3)


class AliyunVoiceSettings(SecretPathSettings):
    adapter: Literal["aliyun_voice"]
    access_key_id: Text
    access_key_secret: Text
    scenarios: dict[str, VoiceScenario]
    region: str = "cn-hangzhou"


def check_message(settings: AliyunVoiceSettings, message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of SingleCallByTts that `message` breaks, or None (`ChecksMessages`): `rpc.call_rule`."""
    return rpc.call_rule(settings.scenarios, message, address)


def _int(value: Any) -> int:
    """A count such as a call's seconds; 0 when it is not one (or beyond any real call)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if 0 <= number < 10 ** 9 else 0


def voice_receipt(item: Mapping[str, Any]) -> Receipt:
    """One VoiceReport item (or a call detail with the same names) as a `Receipt` with call outcome details."""
    status = push_text(item, "status_code") or ""
    answered = status in _ANSWERED or bool(push_text(item, "start_time"))
    hangup = push_text(item, "hangup_direction")
    return Receipt(
        touch_id=push_text(item, "out_id"),
        vendor_id=push_text(item, "call_id"),
        delivered=answered,
        status=status,
        at=shanghai_time(push_text(item, "end_time")),
        details={"answered": answered, "duration_s": _int(item.get("duration")),
                 "hangup_by": _HANGUP.get(hangup or "", hangup),
                 "intent": None, "status_msg": push_text(item, "status_msg", 256)},
        address=push_text(item, "callee", 32),
    )


def parse_voice_report(body: bytes | str | list[Any]) -> list[Receipt]:
    """The receipts in one VoiceReport HTTP push (a JSON array); answer the push with `VOICE_REPORT_ACK`.

    Raises ValueError on malformed JSON, TypeError when the body is not an array.
    """
    items = json.loads(body) if isinstance(body, bytes | str) else body
    if not isinstance(items, list):
        raise TypeError("a VoiceReport push is a JSON array")
    return [voice_receipt(item) for item in items if isinstance(item, dict)]


class AliyunVoiceChannel:
    """`SingleCallByTts` per touch; receipts from VoiceReport pushes and `QueryCallDetailByCallId`."""

    Settings = AliyunVoiceSettings

    def __init__(self, name: str, settings: AliyunVoiceSettings, context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.context = context or ChannelContext()
        self.rpc = Endpoint((settings.base_url or DEFAULT_BASE_URL).rstrip("/") + "/", VERSION,
                            settings.access_key_id, settings.access_key_secret, settings.region, self.context.clock)
        self.http = HttpClients.verified(timeout=settings.timeout)
        self.call_ids: dict[str, str] = {}  #: touch id → CallId, from sends and VoiceReport pushes seen here

    @classmethod
    def push_routes(cls, configured: Sequence[AliyunVoiceSettings]) -> list[PushRoute]:
        """VoiceReport call outcomes (vendors.md §5.1) at the configured `callback_secret`'s path; they
        apply to `ai_call` touches only."""
        return secret_routes(configured, [PushRoute(
            "aliyun/voice-report", "ai_call", lambda body: Inbound(receipts=parse_voice_report(body)),
            VOICE_REPORT_ACK)])

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    @classmethod
    def message_check(cls, settings: AliyunVoiceSettings) -> MessageCheck:
        """`check_message` with this account's scenarios (`ChecksMessages`)."""
        return partial(check_message, settings)

    def _request(self, touch: Touch) -> dict[str, str] | Outcome:
        """The SingleCallByTts parameters, or the outcome of a touch that cannot be sent as it is."""
        problem = check_message(self.settings, touch.message, touch.address)
        if problem is not None:
            return Outcome(touch.touch_id, K.failed, code="SIYU_INVALID_MESSAGE", message=problem)
        scenario = self.settings.scenarios[str(touch.message.get("scenario"))]
        phone = touch.address.get("phone")
        if not isinstance(phone, str) or not phone:
            return Outcome(touch.touch_id, K.failed_member, code="SIYU_NO_PHONE", message="no phone number")
        if not 1 <= len(touch.touch_id.encode()) <= 15:
            return Outcome(touch.touch_id, K.failed, code="SIYU_OUT_ID", message="touch id does not fit OutId")
        params = {"CalledNumber": phone, "TtsCode": scenario.tts_code, "OutId": touch.touch_id}
        variables = touch.message.get("variables") or {}
        if variables:
            params["TtsParam"] = json.dumps({k: str(v) for k, v in variables.items()}, ensure_ascii=False)
        if scenario.called_show_number:
            params["CalledShowNumber"] = scenario.called_show_number
        if scenario.play_times:
            params["PlayTimes"] = str(scenario.play_times)
        return params

    async def _call_one(self, client: httpx.AsyncClient, touch: Touch) -> Outcome:
        request = self._request(touch)
        if isinstance(request, Outcome):
            return request
        try:
            answer = await self.rpc.call(client, "SingleCallByTts", request)
        except NOT_CONNECTED as exc:
            return not_connected(touch.touch_id, exc)
        except httpx.TransportError as exc:  # written, then timed out or dropped: it may have dialled
            return Outcome(touch.touch_id, K.unknown, code="TRANSPORT", message=type(exc).__name__)
        if answer.code == "OK":
            call_id = answer.body.get("CallId")
            if call_id:
                self.call_ids[touch.touch_id] = str(call_id)
            return Outcome(touch.touch_id, K.sent, vendor_id=call_id, code=answer.code)
        return Outcome(touch.touch_id, rpc.classify(_CODES, answer.code, answer.status), code=answer.code,
                       message=answer.message)

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        async with self.http.client() as client:
            return list(await asyncio.gather(*(self._call_one(client, t) for t in touches)))

    def note_receipts(self, receipts: Sequence[Receipt]) -> None:
        """Remember which touches a VoiceReport push has named, so `lookup` can settle them."""
        for receipt in receipts:
            if receipt.touch_id and receipt.vendor_id:
                self.call_ids[receipt.touch_id] = receipt.vendor_id

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        out = []
        for t in touches:
            call_id = self.call_ids.get(t.touch_id)
            out.append(Outcome(t.touch_id, K.sent, vendor_id=call_id) if call_id
                       else Outcome(t.touch_id, K.unknown, message="dyvmsapi has no query by OutId"))
        return out

    async def _detail(self, client: httpx.AsyncClient, call_id: str, touch_id: str) -> Receipt | None:
        query_date = str(int(self.context.now().timestamp() * 1000))  # must fall on the call's day (vendors.md §5.1)
        params = {"CallId": call_id, "ProdId": PROD_ID_VOICE_NOTIFICATION, "QueryDate": query_date}
        try:
            body = (await self.rpc.call(client, "QueryCallDetailByCallId", params)).body
        except httpx.TransportError:
            return None  # a pull only reads: the next one will ask again
        if body.get("Code") != "OK" or not body.get("Data"):
            return None
        data = json.loads(body["Data"]) if isinstance(body["Data"], str) else body["Data"]
        # Inner field names are UNCONFIRMED (vendors.md §7.6): read the VoiceReport names, then camelCase.
        item = {
            "call_id": call_id, "out_id": touch_id,
            "status_code": data.get("status_code", data.get("state")),
            "duration": data.get("duration"),
            "start_time": data.get("start_time", data.get("startDate")),
            "end_time": data.get("end_time", data.get("endDate")),
            "hangup_direction": data.get("hangup_direction", data.get("hangupDirection")),
            "status_msg": data.get("status_msg", data.get("stateDesc")),
        }
        if not item["status_code"] or not item["end_time"]:
            return None  # the call has not finished yet
        return voice_receipt(item)

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        """Call details for touches whose CallId is known: `address['vendor_id']`, a send or a push seen here."""
        wanted = [(t.touch_id, t.vendor_id or t.address.get("vendor_id") or self.call_ids.get(t.touch_id))
                  for t in touches]
        async with self.http.client() as client:
            found = await asyncio.gather(*(self._detail(client, cid, tid) for tid, cid in wanted if cid))
        return Inbound(receipts=[r for r in found if r is not None])
