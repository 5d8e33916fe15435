"""The `aliyun_sms` adapter: Aliyun SMS (dysmsapi 2017-05-25) over RPC with the V2 signature.

`send` makes one `SendSms` per touch with `OutId` = touch id, after checking the template
parameters against the vendor's limits. `lookup` and `pull` read `QuerySendDetails`, which
lists every send to one number on one Shanghai day with its `OutId`. The vendor's push
formats (SmsReport receipts, SmsUp replies) are parsed by `parse_sms_report` and
`parse_sms_up`, and declared with `PUSH_ACK` in `push_routes` for the callback server.

Facts come from ../shared/vendors.md §3 (Aliyun SMS) and §6 (retry policy).
No phone number, key or signature is ever logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field

from channels.aliyun import rpc
from channels.aliyun.rpc import GATEWAY_CODES, SHANGHAI, Endpoint, shanghai_time
from channels.base import (
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
    not_connected,
)
from channels.fallback import SmsSettings
from channels.push import PushRoute, SecretPathSettings, push_text, secret_routes
from engine.grammar.addresses import mainland_mobile

K = OutcomeKind

# Every code in vendors.md §3.5, classified per §6. Codes not listed here: see `classify`.
_CODES: dict[str, OutcomeKind] = {
    **GATEWAY_CODES,
    # per-number flow control (minute/hour/day window): this touch hit the cap; §6 "do not retry now"
    "isv.BUSINESS_LIMIT_CONTROL": K.failed,
    # the account's own daily/monthly cap: nothing can go out on this channel until it resets,
    # so pause the channel (queued touches wait, a probe resumes it) rather than fail them all
    "isv.DAY_LIMIT_CONTROL": K.channel_fatal,
    "isv.MONTH_LIMIT_CONTROL": K.channel_fatal,
    "isv.MOBILE_NUMBER_ILLEGAL": K.failed_member,
    "isv.BLACK_KEY_CONTROL_LIMIT": K.failed_member,  # §3.5 "blacklisted keyword/number"
    "isv.MOBILE_COUNT_OVER_LIMIT": K.failed,  # we send one number per request: a bug if ever seen
    "isv.AMOUNT_NOT_ENOUGH": K.channel_fatal,
    "isv.OUT_OF_SERVICE": K.channel_fatal,
    "isv.TEMPLATE_MISSING_PARAMETERS": K.failed,
    "isv.TEMPLATE_PARAMS_ILLEGAL": K.failed,
    "isv.INVALID_JSON_PARAM": K.failed,
    "isv.PARAM_LENGTH_LIMIT": K.failed,
    "isv.PARAM_NOT_SUPPORT_URL": K.failed,
    "isv.SMS_TEMPLATE_ILLEGAL": K.channel_fatal,
    "isv.SMS_SIGNATURE_ILLEGAL": K.channel_fatal,
    "isv.SMS_SIGN_ILLEGAL": K.channel_fatal,
    "isv.SIGN_STATE_ILLEGAL": K.channel_fatal,
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": K.channel_fatal,
    "isv.SMS_CONTENT_ILLEGAL": K.failed,
    "isv.EXTEND_CODE_ERROR": K.channel_fatal,
    "isv.DENY_IP_RANGE": K.channel_fatal,
    "isv.INVALID_PARAMETERS": K.failed,
    "isv.PRODUCT_UN_SUBSCRIPT": K.channel_fatal,
    "isv.PRODUCT_UNSUBSCRIBE": K.channel_fatal,
    "isv.ACCOUNT_NOT_EXISTS": K.channel_fatal,
    "isv.ACCOUNT_ABNORMAL": K.channel_fatal,
    "isp.RAM_PERMISSION_DENY": K.channel_fatal,
    "isp.SYSTEM_ERROR": K.unknown,  # may have been accepted: settle through QuerySendDetails
    # gateway codes (HTTP 4xx/5xx)
}

API_VERSION = "2017-05-25"
PUSH_ACK: dict[str, Any] = {"code": 0, "msg": "接收成功"}
"""What Aliyun expects (HTTP 200) after an SmsReport or SmsUp push; only the numeric `code` is checked."""
PUSH_ACK_BODY = json.dumps(PUSH_ACK, ensure_ascii=False).encode()

log = structlog.get_logger(__name__)


def classify(code: str, http_status: int) -> OutcomeKind:
    """The outcome of a vendor answer that is not `OK` (`rpc.classify`), where an unlisted code
    from the `isp.` (platform) family, or no code at all, may also hide an accepted message:
    `unknown`."""
    if code not in _CODES and (code.startswith("isp.") or not code):
        return K.unknown
    return rpc.classify(_CODES, code, http_status)


class AliyunSmsSettings(SmsSettings, SecretPathSettings):
    adapter: Literal["aliyun_sms"]
    access_key_id: str
    access_key_secret: str
    sign_name: str
    """The approved signature (签名) sent as `SignName`."""
    region: str = "cn-hangzhou"
    base_url: str = "https://dysmsapi.aliyuncs.com"
    max_param_length: int = Field(35, ge=1)
    """Longest template variable value, in characters (UNCONFIRMED: vendors.md §3.5 names no number)."""
    templates: dict[str, list[str]] = Field(default_factory=dict)
    """Optional: template code → the variable names it needs, checked before sending."""

    def maps_template(self, code: str) -> bool:
        """Whether a playbook's `template_code` can be sent: any code (it is Aliyun's own) unless
        `templates` lists the codes, then only those."""
        return not self.templates or code in self.templates
    lookup_days: int = Field(2, ge=1, le=30)
    """`lookup` searches this many Shanghai days back (today included) for a lost send."""
    page_size: int = Field(50, ge=1, le=50)
    query_concurrency: int = Field(20, ge=1, le=200)
    """QuerySendDetails calls in flight at once (receipt pulls and lookups ask once per phone and day)."""


def check_message(settings: AliyunSmsSettings, message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of this account that `message` breaks, or None (`ChecksMessages`): a template code,
    params as a mapping, every parameter the template lists in `templates` with a value, none
    empty (None), none longer than `max_param_length`."""
    code = message.get("template_code")
    params = message.get("params") or {}
    if not code:
        return "no template_code"
    if not isinstance(params, Mapping):
        return "params is not a mapping"
    missing = [n for n in settings.templates.get(str(code), []) if params.get(n) in (None, "")]
    missing += [str(n) for n, v in params.items() if v is None]
    if missing:
        return f"template {code}: missing parameters {', '.join(sorted(set(missing)))}"
    values = {str(n): str(v) for n, v in params.items()}  # Aliyun wants every value as a string
    too_long = [n for n, v in values.items() if len(v) > settings.max_param_length]
    if too_long:
        return (f"template {code}: parameters {', '.join(sorted(too_long))} longer than "
                f"{settings.max_param_length} characters")
    return None


SEND_DAY_SLACK = timedelta(minutes=10)
"""A send that began this close before midnight may be filed under the next day."""


def _shanghai_day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


class AliyunSmsChannel:
    """Sends SMS through Aliyun; `lookup` and `pull` read `QuerySendDetails`."""

    Settings = AliyunSmsSettings

    def __init__(self, name: str, settings: AliyunSmsSettings, context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.context = context or ChannelContext()
        self.http = HttpClients.verified(timeout=settings.timeout)
        self.rpc = Endpoint(settings.base_url.rstrip("/") + "/", API_VERSION, settings.access_key_id,
                            settings.access_key_secret, settings.region, self.context.clock)

    @classmethod
    def push_routes(cls, configured: Sequence[AliyunSmsSettings]) -> list[PushRoute]:
        """SmsReport receipts and SmsUp replies (vendors.md §3.7), at the configured `callback_secret`'s
        paths. SmsUp has no pull API: without these routes 退订 replies are lost (`siyu status` warns)."""
        return secret_routes(configured, [
            PushRoute("aliyun/sms-report", "sms", lambda body: Inbound(receipts=parse_sms_report(body)), PUSH_ACK),
            PushRoute("aliyun/sms-up", None, lambda body: Inbound(replies=parse_sms_up(body)), PUSH_ACK)])

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- send ----------------------------------------------------------------------------------

    @classmethod
    def message_check(cls, settings: AliyunSmsSettings) -> MessageCheck:
        """`check_message` with this account's templates and length limit (`ChecksMessages`)."""
        return partial(check_message, settings)

    def _check(self, touch: Touch) -> tuple[dict[str, str] | None, str | None]:
        """The `SendSms` parameters of `touch`, or why it must not be sent."""
        phone = touch.address.get("phone")
        if not phone:
            return None, "no phone number"
        problem = check_message(self.settings, touch.message, touch.address)
        if problem is not None:
            return None, problem
        code = touch.message["template_code"]
        values = {str(n): str(v) for n, v in touch.message.get("params", {}).items()}
        return {"PhoneNumbers": str(phone), "SignName": self.settings.sign_name, "TemplateCode": str(code),
                "TemplateParam": json.dumps(values, ensure_ascii=False), "OutId": touch.touch_id}, None

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        limit = asyncio.Semaphore(self.settings.concurrency)
        async with self.http.client() as client:

            async def one(touch: Touch) -> Outcome:
                async with limit:
                    outcome = await self._send_one(client, touch)
                # debug: the dispatcher logs each touch's outcome (touch.sent, touch.failed, …) at info
                log.debug("aliyun_sms.send", channel=self.name, touch_id=touch.touch_id,
                          kind=str(outcome.kind), code=outcome.code)
                return outcome

            return list(await asyncio.gather(*(one(t) for t in touches)))

    async def _send_one(self, client: httpx.AsyncClient, touch: Touch) -> Outcome:
        params, problem = self._check(touch)
        if params is None:
            return Outcome(touch.touch_id, K.failed, code="SIYU_PRECHECK", message=problem)
        try:
            answer = await self.rpc.call(client, "SendSms", params)
        except NOT_CONNECTED as exc:
            return not_connected(touch.touch_id, exc)
        except httpx.TransportError as exc:
            # written (or partly written) and then lost: it may have been accepted; lookup settles it
            return Outcome(touch.touch_id, K.unknown, code=type(exc).__name__, message=str(exc) or "no response")
        status, body = answer.status, answer.body
        code = str(body.get("Code") or "")
        message = str(body.get("Message") or f"HTTP {status}")
        if code == "OK" and status == 200:
            return Outcome(touch.touch_id, K.sent, vendor_id=str(body.get("BizId") or ""),
                           code="OK", details={"request_id": body.get("RequestId")})
        return Outcome(touch.touch_id, classify(code, status), code=code or f"HTTP_{status}", message=message,
                       details={"request_id": body.get("RequestId"), "http_status": status})

    # -- QuerySendDetails ----------------------------------------------------------------------

    async def _details(self, client: httpx.AsyncClient, phone: str, day: date) -> list[dict[str, Any]] | None:
        """Every send to `phone` on Shanghai day `day`, or None when the vendor gave no definite answer."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            try:
                answer = await self.rpc.call(client, "QuerySendDetails", {
                    "PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"),
                    "PageSize": str(self.settings.page_size), "CurrentPage": str(page)})
            except httpx.TransportError:
                return None
            status, body = answer.status, answer.body
            if status != 200 or body.get("Code") != "OK":
                log.warning("aliyun_sms.query_failed", channel=self.name, code=body.get("Code"), http_status=status)
                return None
            rows = (body.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            found.extend(r for r in rows if isinstance(r, dict))
            total = int(body.get("TotalCount") or 0)
            if not rows or len(found) >= total or page >= 100:
                return found
            page += 1

    def _days(self, touch: Touch, fallback: Sequence[date]) -> list[date]:
        """The Shanghai days `touch`'s send may be filed under in QuerySendDetails: the day its send
        began and, across midnight, the next; `fallback` when the engine does not know when it began."""
        if touch.claimed_at is None:
            return list(fallback)
        today = _shanghai_day(self.context.now())
        days = {_shanghai_day(touch.claimed_at), _shanghai_day(touch.claimed_at + SEND_DAY_SLACK)}
        return sorted(d for d in days if d <= today)

    async def _by_phone_and_day(self, keys: Iterable[tuple[str, date]]
                                ) -> dict[tuple[str, date], list[dict[str, Any]] | None]:
        """QuerySendDetails for each (phone, day), `query_concurrency` at a time."""
        wanted = sorted(set(keys))
        limit = asyncio.Semaphore(self.settings.query_concurrency)
        async with self.http.client() as client:

            async def one(phone: str, day: date) -> list[dict[str, Any]] | None:
                async with limit:
                    return await self._details(client, phone, day)

            answers = await asyncio.gather(*(one(p, d) for p, d in wanted))
        return dict(zip(wanted, answers, strict=True))

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        today = _shanghai_day(self.context.now())
        recent = [today - timedelta(days=n) for n in range(self.settings.lookup_days)]
        days = {t.touch_id: self._days(t, recent) for t in touches}
        details = await self._by_phone_and_day((str(t.address["phone"]), d) for t in touches
                                               if t.address.get("phone") for d in days[t.touch_id])
        out = []
        for t in touches:
            phone = t.address.get("phone")
            if not phone:
                out.append(Outcome(t.touch_id, K.not_sent, message="no phone number: never sent"))
                continue
            answers = [details[(str(phone), d)] for d in days[t.touch_id]]
            match = next((r for rows in answers if rows for r in rows if r.get("OutId") == t.touch_id), None)
            if match is not None:
                out.append(Outcome(t.touch_id, K.sent, vendor_id=match.get("BizId"), code="OK",
                                   details={"send_status": match.get("SendStatus")}))
            elif any(rows is None for rows in answers):
                out.append(Outcome(t.touch_id, K.unknown, message="QuerySendDetails gave no definite answer"))
            else:
                out.append(Outcome(t.touch_id, K.not_sent, message=(
                    f"no OutId {t.touch_id} in QuerySendDetails of {', '.join(map(str, days[t.touch_id]))}")))
        return out

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        """Receipts for `touches` sent since `since`, asking only for the day each was sent (Aliyun
        has no reply pull API: replies are pushed)."""
        today = _shanghai_day(self.context.now())
        first = max(_shanghai_day(since), today - timedelta(days=29))
        recent = [first + timedelta(days=n) for n in range((today - first).days + 1)]
        reachable = [t for t in touches if t.address.get("phone")]
        days = {t.touch_id: [d for d in self._days(t, recent) if d >= first] for t in reachable}
        details = await self._by_phone_and_day((str(t.address["phone"]), d) for t in reachable
                                               for d in days[t.touch_id])
        receipts = []
        for t in reachable:
            phone = str(t.address["phone"])
            rows = [r for d in days[t.touch_id] for r in (details.get((phone, d)) or [])
                    if r.get("OutId") == t.touch_id]
            for row in rows:
                state = int(row.get("SendStatus") or 0)
                if state in (2, 3):  # 1 is still waiting for the carrier
                    receipts.append(Receipt(t.touch_id, row.get("BizId"), delivered=state == 3,
                                            status=str(row.get("ErrCode") or state),
                                            at=shanghai_time(row.get("ReceiveDate")),
                                            details={"send_status": state}))
        return Inbound(receipts=receipts)


# -- push formats ------------------------------------------------------------------------------

def _items(body: bytes) -> list[dict[str, Any]]:
    data = json.loads(body)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise ValueError("an Aliyun push body is a JSON array of objects")
    return data


def parse_sms_report(body: bytes) -> list[Receipt]:
    """Receipts from an SmsReport push (vendors.md §3.7); raises ValueError on a malformed body."""
    return [Receipt(touch_id=push_text(item, "out_id"), vendor_id=push_text(item, "biz_id"),
                    delivered=item.get("success") in (True, "true"), status=push_text(item, "err_code") or "",
                    at=shanghai_time(push_text(item, "report_time")),
                    details={"err_msg": push_text(item, "err_msg", 256), "sms_size": push_text(item, "sms_size"),
                             "send_time": push_text(item, "send_time")},
                    address=push_text(item, "phone_number", 32))
            for item in _items(body)]


def parse_sms_up(body: bytes) -> list[Reply]:
    """Replies (上行) from an SmsUp push (vendors.md §3.7); raises ValueError on a malformed body."""
    out = []
    for item in _items(body):
        phone = push_text(item, "phone_number", 32)
        if phone is None:
            raise ValueError("an SmsUp item has no phone_number")
        # a mainland number in any spelling → bare; anything else as given
        out.append(Reply(phone=mainland_mobile(phone) or phone, text=push_text(item, "content", 1000) or "",
                         at=shanghai_time(push_text(item, "send_time"))))
    return out
