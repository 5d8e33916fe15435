"""Tencent Cloud SMS (2021-01-11): TC3-HMAC-SHA256 signing, `SendSms`, the pull APIs, push callbacks, codes.

Facts follow `../shared/vendors.md` §4 (request §4.1, signature §4.2, response §4.3, codes §4.4,
receipts and replies §4.6) and the retry policy of §6. The touch id travels in `SessionContext`
(echoed, not deduplicated, §0.2), so a send whose answer was lost is settled by `lookup` through
`PullSmsSendStatusByPhoneNumber`, never by sending again. A batched call carries the touch ids of
all its numbers comma-joined (SessionContext must stay under 512 bytes, which caps a batch).
No phone number, secret or signature is ever logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import Field

from channels.base import (
    CONNECT_FAILED,
    NOT_CONNECTED,
    ChannelContext,
    HttpClients,
    Inbound,
    MessageCheck,
    Outcome,
    OutcomeKind,
    Receipt,
    Reply,
    Touch,
)
from channels.fallback import SmsSettings
from channels.push import PushRoute, SecretPathSettings, push_text, secret_routes
from channels.tencent.signing import signed_headers
from engine.grammar.addresses import e164, mainland_mobile
from engine.grammar.policies import Duration
from engine.grammar.values import GrammarModel

log = structlog.get_logger("siyu.channels.tencent_sms")

SERVICE, VERSION = "sms", "2021-01-11"
MAX_NUMBERS = 200  #: §4.1: PhoneNumberSet ≤ 200
MAX_SESSION_CONTEXT = 511  #: §4.1: SessionContext < 512 bytes
PULL_LIMIT = 100  #: §4.6: Limit ≤ 100
CALLBACK_ACK: dict[str, Any] = {"result": 0, "errmsg": "OK"}  #: §4.6: what both callbacks must answer

# ---------------------------------------------------------------------------------------------
# Codes (§4.4), classified by the §6 policy. Request-level `Response.Error.Code` and per-number
# `SendStatusSet[i].Code` share this table (§4.3: which appears where is UNCONFIRMED).

_K = OutcomeKind
_CODES: dict[str, OutcomeKind] = {
    "Ok": _K.sent,
    # signature and credentials: nothing is sent until the operator fixes config or the clock
    "AuthFailure.SignatureFailure": _K.channel_fatal,
    "AuthFailure.SignatureExpire": _K.channel_fatal,  # clock > 5 min off: every call fails until fixed
    "AuthFailure.SecretIdNotFound": _K.channel_fatal,
    "AuthFailure.InvalidSecretId": _K.channel_fatal,
    "AuthFailure.UnauthorizedOperation": _K.channel_fatal,
    # API frequency limit: rejected before sending, retry with backoff
    "RequestLimitExceeded": _K.retry,
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded": _K.retry,
    "RequestLimitExceeded.IPLimitExceeded": _K.retry,
    "RequestLimitExceeded.UinLimitExceeded": _K.retry,
    # backend errors that may have sent: reconcile through lookup
    "InternalError": _K.unknown,
    "InternalError.Timeout": _K.unknown,
    "InternalError.SendAndRecvFail": _K.unknown,
    "InternalError.OtherError": _K.unknown,
    "InternalError.UnknownError": _K.unknown,
    "InternalError.RequestTimeException": _K.channel_fatal,  # request time > 10 min off: a clock problem
    # caps reached (§6: do not retry now; reschedule only if the playbook allows)
    "LimitExceeded.PhoneNumberThirtySecondLimit": _K.failed,
    "LimitExceeded.PhoneNumberOneHourLimit": _K.failed,
    "LimitExceeded.PhoneNumberDailyLimit": _K.failed,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": _K.failed,
    "LimitExceeded.DeliveryFrequencyLimit": _K.failed,
    "LimitExceeded.PhoneNumberCountLimit": _K.failed,  # > 200 numbers: cannot happen, batches are split
    "LimitExceeded.AppDailyLimit": _K.channel_fatal,  # the whole app is capped: pause, do not fail every touch
    "LimitExceeded.DailyLimit": _K.channel_fatal,
    "FailedOperation.MarketingSendTimeConstraint": _K.failed,  # 08:00–22:00 only; quiet hours should prevent it
    # this touch: parameters or content
    "InvalidParameterValue.TemplateParameterFormatError": _K.failed,
    "InvalidParameterValue.TemplateParameterLengthLimit": _K.failed,
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": _K.failed,
    "InvalidParameterValue.ContentLengthLimit": _K.failed,
    "FailedOperation.ContainSensitiveWord": _K.failed,
    "FailedOperation.FailResolvePacket": _K.failed,
    "FailedOperation.JsonParseFail": _K.failed,
    "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber": _K.failed,
    "MissingParameter.EmptyPhoneNumberSet": _K.failed,
    "InvalidParameter": _K.failed,
    "MissingParameter": _K.failed,
    # the member's number on SMS
    "InvalidParameterValue.IncorrectPhoneNumber": _K.failed_member,
    "FailedOperation.PhoneNumberInBlacklist": _K.failed_member,
    "FailedOperation.PhoneNumberOnBlacklist": _K.failed_member,
    # the account: pause the channel
    "InvalidParameterValue.SdkAppIdNotExist": _K.channel_fatal,
    "FailedOperation.SignatureIncorrectOrUnapproved": _K.channel_fatal,
    "FailedOperation.TemplateIncorrectOrUnapproved": _K.channel_fatal,
    "FailedOperation.InsufficientBalanceInSmsPackage": _K.channel_fatal,
    "UnauthorizedOperation.SerivceSuspendDueToArrears": _K.channel_fatal,  # (sic)
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": _K.channel_fatal,
    "UnauthorizedOperation.SdkAppIdIsDisabled": _K.channel_fatal,
    "UnauthorizedOperation.RequestIpNotInWhitelist": _K.channel_fatal,
    "UnauthorizedOperation.IndividualUserMarketingSmsPermissionDeny": _K.channel_fatal,
    "UnsupportedOperation.UnsuportedRegion": _K.channel_fatal,  # (sic)
}
# Undocumented sub-codes fall back on their family; anything else the vendor refused is `failed`.
_FAMILIES: dict[str, OutcomeKind] = {
    "AuthFailure": _K.channel_fatal, "RequestLimitExceeded": _K.retry, "InternalError": _K.unknown,
    "LimitExceeded": _K.failed, "UnauthorizedOperation": _K.channel_fatal,
}


def classify(code: str) -> OutcomeKind:
    """The outcome kind of one vendor code (request-level or per-number)."""
    if code in _CODES:
        return _CODES[code]
    return _FAMILIES.get(code.split(".", 1)[0], _K.failed)


# ---------------------------------------------------------------------------------------------
# Settings and the adapter


class TencentTemplate(GrammarModel):
    id: str
    params: list[str] = Field(default_factory=list)
    """The playbook's parameter names in the order of the template's {1}, {2}, …"""


class TencentSmsSettings(SmsSettings, SecretPathSettings):
    adapter: Literal["tencent_sms"]
    secret_id: str
    secret_key: str
    sdk_app_id: str
    sign_name: str
    region: str = "ap-guangzhou"
    templates: dict[str, TencentTemplate] = Field(default_factory=dict)
    """Playbook template_code → Tencent template id and parameter order."""

    def maps_template(self, code: str) -> bool:
        """Whether a playbook's `template_code` can be sent: only codes mapped in `templates`."""
        return code in self.templates
    base_url: str | None = "https://sms.tencentcloudapi.com"
    param_max_length: int | None = Field(None, ge=1)
    """Longest template parameter accepted (personal accounts: 12, §4.4); None: no local check."""
    lookup_by_session_context: bool = True
    """UNCONFIRMED (§7): pulled status carries SessionContext only if Tencent support enabled it. When
    True, a listing without the touch id proves `not_sent`; when False, `lookup` answers `unknown`."""
    lookup_window: Duration = timedelta(days=1)
    """How far back `lookup` lists sends to a number (the vendor allows 7 days)."""
    reply_source: Literal["by_phone", "queue"] = "by_phone"
    """`pull` replies per touched number, or from the `PullSmsReplyStatus` queue (needs activation)."""


def _message_problem(settings: TencentSmsSettings, message: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, rule) of the first rule `message` breaks for this account, or None: its template_code is
    mapped to a Tencent template, every parameter that template takes has a value, none is too long."""
    code = str(message.get("template_code", ""))
    template = settings.templates.get(code)
    if template is None:
        return "siyu.TemplateNotMapped", f"template_code {code!r} has no Tencent template in `templates`"
    params = message.get("params") or {}
    if not isinstance(params, Mapping):
        return "siyu.MissingTemplateParameter", "params is not a mapping"
    missing = [p for p in template.params if params.get(p) in (None, "")]
    if missing:
        return "siyu.MissingTemplateParameter", f"missing template parameters: {missing}"
    limit = settings.param_max_length
    if limit is not None and any(len(str(params[p])) > limit for p in template.params):
        return "siyu.TemplateParameterLengthLimit", f"a parameter exceeds {limit} characters"
    return None


def check_message(settings: TencentSmsSettings, message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of this account that `message` breaks, or None (`ChecksMessages`)."""
    problem = _message_problem(settings, message)
    return None if problem is None else problem[1]


class _CallFailed(Exception):
    def __init__(self, kind: OutcomeKind, code: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.code, self.message = kind, code, message


class TencentSmsChannel:
    """Tencent Cloud SMS: `SendSms` batches, `lookup` and `pull` through the pull APIs."""

    Settings = TencentSmsSettings

    def __init__(self, name: str, settings: TencentSmsSettings, context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.clock = (context or ChannelContext()).now
        self.url = settings.base_url or "https://sms.tencentcloudapi.com"
        self.host = urlsplit(self.url).netloc
        self.http = HttpClients.verified(timeout=settings.timeout)

    @classmethod
    def push_routes(cls, configured: Sequence[TencentSmsSettings]) -> list[PushRoute]:
        """The status and reply callbacks (§4.6) at the configured `callback_secret`'s paths. Tencent
        signs neither; `push: off` and the status and reply pulls are the recommended setup."""
        return secret_routes(configured, [
            PushRoute("tencent/sms-status", "sms", lambda body: Inbound(receipts=parse_status_callback(body)),
                      CALLBACK_ACK),
            PushRoute("tencent/sms-reply", None, lambda body: Inbound(replies=parse_reply_callback(body)),
                      CALLBACK_ACK)])

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- transport --------------------------------------------------------------------------
    async def _call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """One signed call; its `Response`, or `_CallFailed` classified for a send."""
        payload = json.dumps(body, ensure_ascii=False).encode()
        s = self.settings
        headers = signed_headers(action, payload, secret_id=s.secret_id, secret_key=s.secret_key,
                                 host=self.host, region=s.region, timestamp=int(time.time()))
        try:
            async with self.http.client() as client:
                answer = await client.post(self.url, content=payload, headers=headers)
        except NOT_CONNECTED as exc:  # the request never left
            raise _CallFailed(_K.retry, CONNECT_FAILED, f"{action}: cannot connect: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:  # written, then timed out or reset: may have been accepted
            raise _CallFailed(_K.unknown, type(exc).__name__, f"{action}: no answer after sending") from exc
        if answer.status_code != 200:  # the SDK treats any non-200 as a network error (§0.1)
            raise _CallFailed(_K.unknown, f"HTTP{answer.status_code}", f"{action}: HTTP {answer.status_code}")
        try:
            response = answer.json()["Response"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _CallFailed(_K.unknown, "BadResponse", f"{action}: unreadable answer") from exc
        error = response.get("Error")
        if error:
            code = str(error.get("Code", ""))
            log.warning("tencent_sms.error", channel=self.name, action=action, code=code,
                        request_id=response.get("RequestId"))
            raise _CallFailed(classify(code), code, str(error.get("Message", "")))
        return dict(response)

    # -- send -------------------------------------------------------------------------------
    @classmethod
    def message_check(cls, settings: TencentSmsSettings) -> MessageCheck:
        """`check_message` with this account's templates (`ChecksMessages`)."""
        return partial(check_message, settings)

    def _check(self, touch: Touch) -> tuple[str, str, tuple[str, ...]] | Outcome:
        """(E.164 number, template id, ordered params) or the outcome that stops this touch locally."""
        problem = _message_problem(self.settings, touch.message)
        if problem is not None:
            return Outcome(touch.touch_id, _K.failed, code=problem[0], message=problem[1])
        template = self.settings.templates[str(touch.message.get("template_code", ""))]
        params = touch.message.get("params") or {}
        values = tuple(str(params[p]) for p in template.params)
        phone = e164(str(touch.address.get("phone", "")))
        if phone is None:
            return Outcome(touch.touch_id, _K.failed_member, code="siyu.IncorrectPhoneNumber",
                           message="not a mainland mobile number")
        return phone, template.id, values

    def _batches(self, ready: list[tuple[Touch, str, str, tuple[str, ...]]]) -> list[list[tuple[Touch, str]]]:
        """Touches with the same template and params, distinct numbers, ≤ 200, ids fitting SessionContext."""
        groups: dict[tuple[str, tuple[str, ...]], list[list[tuple[Touch, str]]]] = {}
        for touch, phone, template_id, values in ready:
            calls = groups.setdefault((template_id, values), [])
            for call in calls:
                ids = sum(len(t.touch_id.encode()) + 1 for t, _ in call) + len(touch.touch_id.encode())
                if len(call) < MAX_NUMBERS and ids <= MAX_SESSION_CONTEXT and all(p != phone for _, p in call):
                    call.append((touch, phone))
                    break
            else:
                calls.append([(touch, phone)])
        return [call for calls in groups.values() for call in calls]

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[Touch, str, str, tuple[str, ...]]] = []
        for touch in touches:
            checked = self._check(touch)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
            else:
                ready.append((touch, *checked))
        template_of = {t.touch_id: (tid, vals) for t, _, tid, vals in ready}
        for call in self._batches(ready):
            template_id, values = template_of[call[0][0].touch_id]
            outcomes.extend(await self._send_call(call, template_id, values))
        return outcomes

    async def _send_call(self, call: list[tuple[Touch, str]], template_id: str,
                         values: tuple[str, ...]) -> list[Outcome]:
        body = {"PhoneNumberSet": [p for _, p in call], "SmsSdkAppId": self.settings.sdk_app_id,
                "SignName": self.settings.sign_name, "TemplateId": template_id,
                "TemplateParamSet": list(values), "SessionContext": ",".join(t.touch_id for t, _ in call)}
        try:
            response = await self._call("SendSms", body)
        except _CallFailed as exc:
            return [Outcome(t.touch_id, exc.kind, code=exc.code, message=exc.message) for t, _ in call]
        by_phone = {str(s.get("PhoneNumber")): s for s in response.get("SendStatusSet") or []}
        out = []
        for touch, phone in call:
            status = by_phone.get(phone)
            if status is None:
                out.append(Outcome(touch.touch_id, _K.unknown, code="NoSendStatus",
                                   message="the answer has no status for this number"))
                continue
            code = str(status.get("Code", ""))
            kind = classify(code)
            out.append(Outcome(touch.touch_id, kind, vendor_id=status.get("SerialNo") if kind == _K.sent else None,
                               code=None if kind == _K.sent else code,
                               message=None if kind == _K.sent else str(status.get("Message", "")),
                               details={"fee": status.get("Fee")} if kind == _K.sent else {}))
        log.info("tencent_sms.sent", channel=self.name, numbers=len(call), template_id=template_id,
                 accepted=sum(o.kind == _K.sent for o in out))
        return out

    # -- pulls ------------------------------------------------------------------------------
    async def _pull_all(self, action: str, set_name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            response = await self._call(action, {**body, "Offset": offset, "Limit": PULL_LIMIT})
            page = list(response.get(set_name) or [])
            items.extend(page)
            if len(page) < PULL_LIMIT:
                return items
            offset += PULL_LIMIT

    async def _statuses(self, phone: str, begin: datetime, end: datetime) -> list[dict[str, Any]]:
        return await self._pull_all("PullSmsSendStatusByPhoneNumber", "PullSmsSendStatusSet", {
            "PhoneNumber": phone, "SmsSdkAppId": self.settings.sdk_app_id,
            "BeginTime": int(begin.timestamp()), "EndTime": int(end.timestamp())})

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        now = self.clock()
        begin = max(now - self.settings.lookup_window, now - timedelta(days=7) + timedelta(minutes=1))
        out = []
        for touch in touches:
            phone = e164(str(touch.address.get("phone", "")))
            if phone is None:
                out.append(Outcome(touch.touch_id, _K.not_sent, message="no valid number: never sent"))
                continue
            try:
                items = await self._statuses(phone, begin, now + timedelta(minutes=5))
            except _CallFailed as exc:
                out.append(Outcome(touch.touch_id, _K.unknown, code=exc.code, message=exc.message))
                continue
            hit = next((i for i in items if touch.touch_id in str(i.get("SessionContext") or "").split(",")), None)
            if hit is not None:
                out.append(Outcome(touch.touch_id, _K.sent, vendor_id=hit.get("SerialNo")))
            elif self.settings.lookup_by_session_context:
                out.append(Outcome(touch.touch_id, _K.not_sent, message="no send carries this touch id"))
            else:
                out.append(Outcome(touch.touch_id, _K.unknown, message="pulled status has no SessionContext"))
        return out

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        now = self.clock()
        since = max(since, now - timedelta(days=7) + timedelta(minutes=1))
        by_phone: dict[str, list[Touch]] = {}
        for touch in touches:
            phone = e164(str(touch.address.get("phone", "")))
            if phone is not None:
                by_phone.setdefault(phone, []).append(touch)
        receipts: list[Receipt] = []
        replies: list[Reply] = []
        for phone, mine in by_phone.items():
            try:
                items = await self._statuses(phone, since, now)
            except _CallFailed:
                continue  # the next pull tries again; the error was logged
            receipts.extend(_receipt(i, {t.touch_id for t in mine}) for i in items
                            if i.get("ReportStatus") in ("SUCCESS", "FAIL"))
            if self.settings.reply_source == "by_phone":
                replies.extend(await self._replies_by_phone(phone, since, now))
        if self.settings.reply_source == "queue":
            replies.extend(await self._replies_queue())
        return Inbound(receipts=receipts, replies=replies)

    async def _replies_by_phone(self, phone: str, since: datetime, now: datetime) -> list[Reply]:
        try:
            items = await self._pull_all("PullSmsReplyStatusByPhoneNumber", "PullSmsReplyStatusSet", {
                "PhoneNumber": phone, "SmsSdkAppId": self.settings.sdk_app_id,
                "BeginTime": int(since.timestamp()), "EndTime": int(now.timestamp())})
        except _CallFailed:
            return []
        return [_reply(i) for i in items]

    async def _replies_queue(self) -> list[Reply]:
        try:
            response = await self._call("PullSmsReplyStatus", {"Limit": PULL_LIMIT,
                                                               "SmsSdkAppId": self.settings.sdk_app_id})
        except _CallFailed:
            return []
        return [_reply(i) for i in response.get("PullSmsReplyStatusSet") or []]


def _at(unix: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(unix), UTC) if unix not in (None, "", 0) else None
    except (TypeError, ValueError, OverflowError, OSError):  # not a time, or none any calendar holds
        return None


def _touch_id(context: Any, candidates: set[str] | None = None) -> str | None:
    """The touch id in a SessionContext: the one among `candidates`, or the only one there is."""
    ids = [i for i in str(context or "").split(",") if i]
    if candidates is not None:
        ids = [i for i in ids if i in candidates]
    return ids[0] if len(ids) == 1 else None


def _receipt(item: Mapping[str, Any], candidates: set[str]) -> Receipt:
    ok = item.get("ReportStatus") == "SUCCESS"
    return Receipt(touch_id=_touch_id(item.get("SessionContext"), candidates), vendor_id=item.get("SerialNo"),
                   delivered=ok, status=str(item.get("Description") or item.get("ReportStatus")),
                   at=_at(item.get("UserReceiveTime")))


def _reply(item: Mapping[str, Any]) -> Reply:
    phone = str(item.get("PhoneNumber", ""))
    return Reply(phone=mainland_mobile(phone) or phone, text=str(item.get("ReplyContent", "")),
                 at=_at(item.get("ReplyTime")))


# ---------------------------------------------------------------------------------------------
# Push callbacks (§4.6): the engine's callback server parses bodies here and answers CALLBACK_ACK.

_SHANGHAI = timedelta(hours=8)


def _local_time(text: Any) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` in Beijing time (Tencent's console zone), as an aware UTC datetime."""
    try:
        naive = datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return (naive - _SHANGHAI).replace(tzinfo=UTC)


def _records(body: bytes | str | Any) -> list[dict[str, Any]]:
    data = json.loads(body) if isinstance(body, bytes | str) else body
    items = data if isinstance(data, list) else [data]
    return [i for i in items if isinstance(i, dict)]


def _phone(record: Mapping[str, Any]) -> str:
    """The number of a pushed record: bare when it is a mainland mobile number in any spelling, else as given."""
    code, number = (push_text(record, "nationcode") or "86").lstrip("+"), push_text(record, "mobile", 32) or ""
    return (mainland_mobile(number) or number) if code == "86" else f"+{code}{number}"


def parse_status_callback(body: bytes | str | Any) -> list[Receipt]:
    """Delivery receipts from a status callback body (a JSON array; one POST may batch several)."""
    return [Receipt(touch_id=_touch_id(push_text(r, "ext", 256) or push_text(r, "session_context", 256)
                                       or push_text(r, "SessionContext", 256)),
                    vendor_id=push_text(r, "sid"), delivered=r.get("report_status") == "SUCCESS",
                    status=push_text(r, "errmsg") or push_text(r, "report_status") or "",
                    at=_local_time(push_text(r, "user_receive_time")),
                    details={"description": push_text(r, "description", 256)},
                    address=_phone(r))
            for r in _records(body)]


def parse_reply_callback(body: bytes | str | Any) -> list[Reply]:
    """SMS replies (上行) from a reply callback body (one JSON object, or an array of them)."""
    replies = []
    for r in _records(body):
        if not push_text(r, "mobile", 32):
            raise ValueError("a reply has no mobile")
        replies.append(Reply(phone=_phone(r), text=push_text(r, "text", 1000) or "", at=_at(r.get("time"))))
    return replies
