"""The `wecom` adapter: WeCom customer contact, 1v1 "企业群发" to external contacts.

A send creates an `externalcontact/add_msg_template` task (`chat_type: single`) that the
member's staff member confirms in the WeCom client; nothing reaches the customer before
that. Touches with the identical rendered text for the same staff member share one task
(≤ `max_recipients` ids), so a guide confirms one task, not hundreds; a personalised text
makes one task per member. `sent` means "task created" (vendor_id = the task's msgid);
`pull` later turns the per-recipient send results into delivered / undelivered receipts.

WeCom has no idempotency key (vendors.md §0.2), so `lookup` is a heuristic: it lists the
company-created tasks of a recent time window (`get_groupmsg_list_v2`) and matches one by
text, sender and recipient. Tokens come from `gettoken` through the store-shared
`TokenCache`; a call answered with a token code refreshes once and is retried once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field

from channels.base import (
    CONNECT_FAILED,
    NOT_CONNECTED,
    ChannelContext,
    ChannelSettings,
    HttpClients,
    Inbound,
    MessageCheck,
    Outcome,
    OutcomeKind,
    Receipt,
    Touch,
)
from channels.wechat.token import TokenCache
from engine.grammar.policies import Duration
from engine.logs import log, mask_secret

K = OutcomeKind

# Every documented WeCom code, classified (vendors.md §1.5 and §1.4; global code table, doc 90313/90455).
_CODES: dict[int, OutcomeKind] = {
    -1: K.retry,  # system busy: rejected, back off (docs: ≤ 3 retries)
    6000: K.retry,  # data version conflict: later
    45009: K.retry,  # API frequency limit: after the block window
    45033: K.retry,  # concurrency limit: back off
    40014: K.retry,  # invalid access_token, still after one refresh: the call was refused, nothing created
    42001: K.retry,  # access_token expired, still after one refresh: refused likewise
    40001: K.channel_fatal,  # invalid secret (gettoken; or a business call still refused after a refresh)
    40013: K.channel_fatal,  # invalid corpid
    40091: K.channel_fatal,  # secret invalid
    48002: K.channel_fatal,  # API forbidden: the secret lacks customer-contact permission
    50002: K.channel_fatal,  # member outside the app's visible range
    60011: K.channel_fatal,  # no privilege on member/department
    41001: K.channel_fatal,  # access_token missing: an adapter bug every send would hit
    40003: K.failed,  # invalid UserID (the `sender`): the staff data is wrong, not the customer
    60111: K.failed,  # userid does not exist (the `sender`) likewise
    40007: K.failed,  # invalid media_id
    40035: K.failed,  # invalid parameter
    40058: K.failed,  # invalid parameter
    40063: K.failed,  # empty parameter
    44004: K.failed,  # text content empty
    45002: K.failed,  # content too large
    41051: K.failed,  # welcome message only (not used here)
    40096: K.failed_member,  # invalid external contact userid
    84061: K.failed_member,  # no external-contact relationship any more (not a friend)
}
_TOKEN_CODES = frozenset({40014, 42001, 40001})  # refresh once, retry once (wechatpy's rule, §1.1)
_MEMBER_KINDS = frozenset({K.failed_member})
_SEND_STATUS = {0: "not_sent", 1: "sent", 2: "not_friend", 3: "receive_cap"}  # §1.3 send_list.status


class WecomSettings(ChannelSettings):
    adapter: Literal["wecom"]
    corp_id: str
    secret: str
    """The 客户联系 secret (or an app secret listed under 客户联系 → 可调用接口的应用)."""
    base_url: str | None = "https://qyapi.weixin.qq.com"
    max_recipients: Annotated[int, Field(ge=1, le=10000)] = 10000
    """External user ids per task (the vendor allows 10,000)."""
    lookup_window: Duration = timedelta(days=2)
    """How far back `lookup` lists tasks when settling an unknown send (the vendor allows ≤ 1 month)."""


MAX_TEXT_BYTES = 4000
"""`text.content` of `add_msg_template` is at most 4,000 bytes (vendors.md §1.2)."""


def check_message(message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of `add_msg_template` that `message` breaks, or None (`ChecksMessages`): a text, of
    at most `MAX_TEXT_BYTES` bytes in UTF-8."""
    text = message.get("text")
    if not isinstance(text, str) or not text:
        return "no text in the message"
    size = len(text.encode())
    if size > MAX_TEXT_BYTES:
        return f"text: {size} bytes, at most {MAX_TEXT_BYTES} allowed"
    return None


@dataclass
class _Failure(Exception):
    """A vendor call that did not succeed, already classified."""

    kind: OutcomeKind
    code: str
    message: str


def _short(value: str) -> str:
    return mask_secret(value)


class WecomChannel:
    """WeCom 1v1 tasks to external contacts; receipts from the tasks' send results."""

    Settings = WecomSettings

    def __init__(self, name: str, settings: WecomSettings, context: ChannelContext | None = None) -> None:
        context = context or ChannelContext()
        self.name = name
        self.settings = settings
        self.clock = context.now
        self.base_url = (settings.base_url or "https://qyapi.weixin.qq.com").rstrip("/")
        self.http = HttpClients.verified(timeout=settings.timeout, base_url=self.base_url)
        self.tokens = TokenCache(context.store, f"wecom:{settings.corp_id}", self._fetch_token, clock=context.clock)

    @classmethod
    def message_check(cls, settings: WecomSettings | None) -> MessageCheck:
        """`check_message`: the vendor's rules need no setting (`ChecksMessages`)."""
        return check_message

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- transport ------------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, *, params: dict[str, str],
                       body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One HTTP call. Raises _Failure: retry if the request surely never left, unknown otherwise."""
        try:
            async with self.http.client() as client:
                response = await client.request(method, path, params=params, json=body)
        except NOT_CONNECTED as exc:
            raise _Failure(K.retry, CONNECT_FAILED, f"connection not established: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:  # timeout or reset after the request was written
            raise _Failure(K.unknown, type(exc).__name__, "no answer after the request was sent") from exc
        if response.status_code >= 400:
            raise _Failure(K.unknown, f"HTTP{response.status_code}", "vendor HTTP error")
        try:
            data = response.json()
        except ValueError as exc:
            raise _Failure(K.unknown, "BadJSON", "vendor answered with no JSON") from exc
        if not isinstance(data, dict):
            raise _Failure(K.unknown, "BadJSON", "vendor answered with no JSON object")
        return data

    async def _fetch_token(self) -> tuple[str, int]:
        try:
            data = await self._request("GET", "/cgi-bin/gettoken",
                                       params={"corpid": self.settings.corp_id, "corpsecret": self.settings.secret})
        except _Failure as exc:
            # nothing was sent yet: a failed token fetch can always be tried again later
            raise _Failure(K.retry if exc.kind == K.unknown else exc.kind, exc.code, "gettoken: " + exc.message) from exc
        code = int(data.get("errcode", 0))
        if code != 0:
            kind = _CODES.get(code, K.retry)
            if code in _TOKEN_CODES:  # at gettoken, 40001 is a bad secret: configuration
                kind = K.channel_fatal if code == 40001 else K.retry
            raise _Failure(kind, str(code), f"gettoken: {data.get('errmsg', '')}")
        log.info("wecom.token_fetched", channel=self.name, corp=_short(self.settings.corp_id))
        return str(data["access_token"]), int(data.get("expires_in", 7200))

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` with a token; refresh once on a token code. Raises _Failure on errcode ≠ 0."""
        token = await self._token()
        data = await self._request("POST", path, params={"access_token": token}, body=body)
        if int(data.get("errcode", 0)) in _TOKEN_CODES:
            log.info("wecom.token_rejected", channel=self.name, code=data.get("errcode"))
            try:
                token = await self.tokens.refresh_after(token)
            except TimeoutError as exc:
                raise _Failure(K.retry, "token", str(exc)) from exc
            data = await self._request("POST", path, params={"access_token": token}, body=body)
        code = int(data.get("errcode", 0))
        if code != 0:
            raise _Failure(_CODES.get(code, K.unknown), str(code), str(data.get("errmsg", "")))
        return data

    async def _token(self) -> str:
        try:
            return await self.tokens.get()
        except TimeoutError as exc:
            raise _Failure(K.retry, "token", str(exc)) from exc

    # -- send -----------------------------------------------------------------------------------------
    def group_key(self, touch: Touch) -> tuple[str, str]:
        """Touches with the same staff member and text share a task."""
        return str(touch.address.get("wecom_staff_userid") or ""), str(touch.message.get("text") or "")

    def _groups(self, touches: Sequence[Touch]) -> list[list[Touch]]:
        by_key: dict[tuple[str, str], list[Touch]] = {}
        for t in touches:
            by_key.setdefault(self.group_key(t), []).append(t)
        size = self.settings.max_recipients
        return [members[start:start + size] for members in by_key.values()
                for start in range(0, len(members), size)]

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        """One task per (staff member, text), `concurrency` of them in flight at a time."""
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(group: list[Touch]) -> list[Outcome]:
            async with limit:
                return await self._send_task(group)

        done = await asyncio.gather(*(one(group) for group in self._groups(touches)))
        return [outcome for outcomes in done for outcome in outcomes]

    async def _send_task(self, group: list[Touch]) -> list[Outcome]:
        first = group[0]
        missing = [t for t in group if not t.address.get("wecom_external_userid")]
        group = [t for t in group if t.address.get("wecom_external_userid")]
        outcomes = [Outcome(t.touch_id, K.failed_member, code="no_address", message="no wecom_external_userid")
                    for t in missing]
        if not group:
            return outcomes
        problem = "no staff userid" if not first.address.get("wecom_staff_userid") \
            else check_message(first.message, first.address)
        if problem is not None:
            return outcomes + [Outcome(t.touch_id, K.failed, code="bad_touch", message=problem) for t in group]
        body = {"chat_type": "single", "external_userid": sorted({str(t.address["wecom_external_userid"])
                                                                  for t in group}),
                "sender": str(first.address["wecom_staff_userid"]), "text": {"content": str(first.message["text"])}}
        try:
            data = await self._call("/cgi-bin/externalcontact/add_msg_template", body)
        except _Failure as exc:
            if exc.kind in _MEMBER_KINDS and len(group) > 1:
                # one bad id refused the whole task, which was therefore not created: find it alone
                singles = [o for t in group for o in await self._send_task([t])]
                return outcomes + singles
            return outcomes + [Outcome(t.touch_id, exc.kind, code=exc.code, message=exc.message) for t in group]
        msgid = str(data.get("msgid") or "")
        failed = {str(x) for x in data.get("fail_list") or []}
        # debug: the dispatcher logs each touch's outcome, with this task's msgid, at info
        log.debug("wecom.task_created", channel=self.name, msgid=_short(msgid), recipients=len(group),
                  failed=len(failed))
        for t in group:
            if str(t.address["wecom_external_userid"]) in failed:
                outcomes.append(Outcome(t.touch_id, K.failed_member, code="fail_list",
                                        message="WeCom cannot send to this external contact",
                                        details={"msgid": msgid}))
            else:
                outcomes.append(Outcome(t.touch_id, K.sent, vendor_id=msgid))
        return outcomes

    # -- lookup ---------------------------------------------------------------------------------------
    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        """Heuristic: WeCom has no idempotency key. A task of the last `lookup_window` with the same
        text, created for the same sender, whose recipients include the touch's external id, is
        taken as this touch's send. No such task in a complete listing → not_sent."""
        try:
            tasks = await self._list_tasks()
        except _Failure as exc:
            return [Outcome(t.touch_id, K.unknown, code=exc.code, message=exc.message) for t in touches]
        out = []
        recipients: dict[tuple[str, str], dict[str, int]] = {}
        for t in touches:
            text = str(t.message.get("text") or "")
            sender = str(t.address.get("wecom_staff_userid") or "")
            external = str(t.address.get("wecom_external_userid") or "")
            found: str | None = None
            try:
                for task in tasks:
                    if (task.get("text") or {}).get("content") != text:
                        continue
                    msgid = str(task["msgid"])
                    if (msgid, sender) not in recipients:
                        recipients[(msgid, sender)] = await self._send_results(msgid, sender)
                    if external in recipients[(msgid, sender)]:
                        found = msgid
                        break
            except _Failure as exc:
                out.append(Outcome(t.touch_id, K.unknown, code=exc.code, message=exc.message))
                continue
            out.append(Outcome(t.touch_id, K.sent, vendor_id=found) if found
                       else Outcome(t.touch_id, K.not_sent, message="no matching WeCom task in the window"))
        return out

    async def _list_tasks(self) -> list[dict[str, Any]]:
        now = self.clock()
        body: dict[str, Any] = {"chat_type": "single", "filter_type": 0, "limit": 100,
                                "start_time": int((now - self.settings.lookup_window).timestamp()),
                                "end_time": int(now.timestamp()) + 60}
        tasks: list[dict[str, Any]] = []
        while True:
            data = await self._call("/cgi-bin/externalcontact/get_groupmsg_list_v2", body)
            tasks.extend(data.get("group_msg_list") or [])
            cursor = data.get("next_cursor")
            if not cursor:
                return tasks
            body = {**body, "cursor": cursor}

    async def _member_status(self, msgid: str) -> dict[str, int]:
        """Per staff member of task `msgid`: its task status (2 = sent)."""
        body: dict[str, Any] = {"msgid": msgid, "limit": 1000}
        statuses: dict[str, int] = {}
        while True:
            data = await self._call("/cgi-bin/externalcontact/get_groupmsg_task", body)
            for row in data.get("task_list") or []:
                statuses[str(row.get("userid"))] = int(row.get("status", 0))
            if not data.get("next_cursor"):
                return statuses
            body = {**body, "cursor": data["next_cursor"]}

    async def _send_results(self, msgid: str, sender: str) -> dict[str, int]:
        """external_userid → send_list status (0 not yet, 1 sent, 2 not a friend, 3 receive cap)."""
        return {k: v[0] for k, v in (await self._send_rows(msgid, sender)).items()}

    async def _send_rows(self, msgid: str, sender: str) -> dict[str, tuple[int, int | None]]:
        body: dict[str, Any] = {"msgid": msgid, "userid": sender, "limit": 1000}
        rows: dict[str, tuple[int, int | None]] = {}
        while True:
            data = await self._call("/cgi-bin/externalcontact/get_groupmsg_send_result", body)
            for row in data.get("send_list") or []:
                rows[str(row.get("external_userid"))] = (int(row.get("status", 0)), row.get("send_time"))
            if not data.get("next_cursor"):
                return rows
            body = {**body, "cursor": data["next_cursor"]}

    # -- receipts -------------------------------------------------------------------------------------
    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        """Receipts for sent touches whose staff member has confirmed the task; status 0 → none yet.

        The task's msgid is read from `touch.vendor_id` when the Touch carries one, else from
        `touch.message["vendor_id"]`; touches without it are skipped."""
        by_task: dict[tuple[str, str], list[Touch]] = {}
        for t in touches:
            msgid = t.vendor_id or t.message.get("vendor_id")
            sender = t.address.get("wecom_staff_userid")
            if msgid and sender:
                by_task.setdefault((str(msgid), str(sender)), []).append(t)
        receipts: list[Receipt] = []
        members: dict[str, dict[str, int]] = {}
        for (msgid, sender), group in by_task.items():
            try:
                if msgid not in members:
                    members[msgid] = await self._member_status(msgid)
                if members[msgid].get(sender) != 2:
                    continue  # the staff member has not sent the task yet
                rows = await self._send_rows(msgid, sender)
            except _Failure as exc:
                log.warning("wecom.pull_failed", channel=self.name, msgid=_short(msgid), code=exc.code)
                continue
            for t in group:
                status, at = rows.get(str(t.address.get("wecom_external_userid")), (0, None))
                if status == 0:
                    continue
                receipts.append(Receipt(touch_id=t.touch_id, vendor_id=msgid, delivered=status == 1,
                                        status=str(status), details={"meaning": _SEND_STATUS.get(status, "")},
                                        at=datetime.fromtimestamp(at, UTC) if at else None))
        return Inbound(receipts=receipts)
