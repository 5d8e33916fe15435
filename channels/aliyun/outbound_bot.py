"""The `aliyun_outbound_bot` adapter: Aliyun intelligent outbound robot (outboundbot 2019-12-26).

Touches of one scenario go out together: one `AssignJobs` call per scenario and up to 25
touches (the vendor's limit), one job per touch, each with one contact whose `referenceId`
is the touch id and the scenario variables as script `extras`. `lookup` and `pull` read
`QueryJobsWithResult` by phone within the scenario's job group and match `ReferenceId`.

UNCONFIRMED (vendors.md §7.7), hence configurable or read leniently: the regional host
(`base_url`), job ids in the AssignJobs answer, the intent field names of a job result, and
the product's own error codes (unlisted ones are treated as failed, or unknown on 5xx).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import httpx
from pydantic import Field

from channels.aliyun import rpc
from channels.aliyun.rpc import GATEWAY_CODES, Endpoint
from channels.base import (
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
    not_connected,
)
from engine.grammar.values import GrammarModel, Text

VERSION = "2019-12-26"
DEFAULT_BASE_URL = "https://outboundbot.cn-shanghai.aliyuncs.com"  # UNCONFIRMED regional host
MAX_JOBS_PER_CALL = 25  # vendor FAQ (vendors.md §5.2)

K = OutcomeKind
# vendors.md §3.5 (RPC gateway codes, shared by every Aliyun RPC product), §5.2, §6.
_CODES: dict[str, OutcomeKind] = {
    **GATEWAY_CODES,
    "Throttling": K.retry,
    "InvalidParameter": K.failed,
    "MissingParameter": K.failed,
    "Forbidden.RAM": K.channel_fatal,
    "Forbidden.NotAuthorized": K.channel_fatal,
    "InstanceNotFound": K.channel_fatal,  # instance_id / job_group_id misconfigured
    "JobGroupNotFound": K.channel_fatal,
}

_FINAL_STATUSES = {"Succeeded", "Failed", "Cancelled"}


class BotScenario(GrammarModel):
    job_group_id: Text
    script_id: Text | None = None


class AliyunOutboundBotSettings(ChannelSettings):
    adapter: Literal["aliyun_outbound_bot"]
    access_key_id: Text
    access_key_secret: Text
    instance_id: Text
    scenarios: dict[str, BotScenario]
    region: str = "cn-shanghai"
    jobs_per_call: int = Field(MAX_JOBS_PER_CALL, ge=1, le=MAX_JOBS_PER_CALL)
    """Jobs in one AssignJobs call (the vendor allows at most 25)."""


def _ok(body: Mapping[str, Any]) -> bool:
    return body.get("Code") == "OK" and body.get("Success", True) is not False


def _job_list(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    jobs = body.get("Jobs") or {}
    listed = jobs.get("List") if isinstance(jobs, dict) else jobs
    return [j for j in listed or [] if isinstance(j, dict)]


def _reference(job: Mapping[str, Any]) -> str | None:
    contact = job.get("Contact") or (job.get("LatestTask") or {}).get("Contact") or {}
    ref = job.get("ReferenceId") or contact.get("ReferenceId")
    return str(ref) if ref else None


def job_receipt(job: Mapping[str, Any], touch_id: str | None) -> Receipt:
    """A finished job as a `Receipt`: answered, duration_s, hangup_by and the robot's intent label."""
    task = job.get("LatestTask") or {}
    answered = bool(task.get("HasAnswered"))
    hangup_by: str | None
    if task.get("HasHangUpByRejection"):
        hangup_by = "user"
    elif task.get("HasReachedEndOfFlow"):
        hangup_by = "robot"
    else:
        hangup_by = task.get("HangUpDirection")
    tags = task.get("TagHits") or job.get("TagHits") or []
    intent = next((t.get("TagName") for t in tags if isinstance(t, dict) and t.get("TagName")), None)
    call_time = task.get("CallTime")
    return Receipt(
        touch_id=touch_id or _reference(job),
        vendor_id=job.get("Id") or job.get("JobId"),
        delivered=answered,
        status=str(task.get("Status") or job.get("Status") or ""),
        at=datetime.fromtimestamp(call_time / 1000, UTC) if isinstance(call_time, int | float) else None,
        details={"answered": answered, "duration_s": int(task.get("CallDuration") or 0),
                 "hangup_by": hangup_by, "intent": intent, "job_status": job.get("Status"),
                 "failure_reason": job.get("JobFailureReason") or job.get("FailureReason")},
    )


def check_message(settings: AliyunOutboundBotSettings, message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of AssignJobs that `message` breaks, or None (`ChecksMessages`): `rpc.call_rule`."""
    return rpc.call_rule(settings.scenarios, message, address)


class AliyunOutboundBotChannel:
    """`AssignJobs` per scenario batch; `QueryJobsWithResult` settles lost sends and yields call outcomes."""

    Settings = AliyunOutboundBotSettings

    def __init__(self, name: str, settings: AliyunOutboundBotSettings,
                 context: ChannelContext | None = None) -> None:
        self.name = name
        self.settings = settings
        self.context = context or ChannelContext()
        self.rpc = Endpoint((settings.base_url or DEFAULT_BASE_URL).rstrip("/") + "/", VERSION,
                            settings.access_key_id, settings.access_key_secret, settings.region, self.context.clock)
        self.http = HttpClients.verified(timeout=settings.timeout)

    def open(self) -> None:
        self.http.open()

    async def aclose(self) -> None:
        await self.http.aclose()

    @staticmethod
    def _job(touch: Touch) -> str:
        contact = {"phoneNumber": touch.address["phone"], "referenceId": touch.touch_id}
        if touch.address.get("name"):
            contact["name"] = str(touch.address["name"])
        variables = touch.message.get("variables") or {}
        extras = [{"key": str(k), "value": str(v)} for k, v in variables.items()]
        return json.dumps({"contacts": [contact], "extras": extras}, ensure_ascii=False)

    async def _assign(self, client: httpx.AsyncClient, scenario: BotScenario,
                      batch: list[Touch]) -> list[Outcome]:
        params = {"InstanceId": self.settings.instance_id, "JobGroupId": scenario.job_group_id}
        if scenario.script_id:
            params["ScriptId"] = scenario.script_id
        for n, touch in enumerate(batch, start=1):
            params[f"JobsJson.{n}"] = self._job(touch)
        try:
            answer = await self.rpc.call(client, "AssignJobs", params)
        except NOT_CONNECTED as exc:
            return [not_connected(t.touch_id, exc) for t in batch]
        except httpx.TransportError as exc:  # written, then timed out or dropped: lookup settles it
            return [Outcome(t.touch_id, K.unknown, code="TRANSPORT", message=type(exc).__name__) for t in batch]
        if _ok(answer.body):
            job_ids = answer.body.get("JobsId") or []  # UNCONFIRMED field: used only when it lines up
            return [Outcome(t.touch_id, K.sent, code="OK",
                            vendor_id=str(job_ids[i]) if len(job_ids) == len(batch) else None)
                    for i, t in enumerate(batch)]
        kind = rpc.classify(_CODES, answer.code, answer.status)
        return [Outcome(t.touch_id, kind, code=answer.code, message=answer.message) for t in batch]

    @classmethod
    def message_check(cls, settings: AliyunOutboundBotSettings) -> MessageCheck:
        """`check_message` with this instance's scenarios (`ChecksMessages`)."""
        return partial(check_message, settings)

    def _check(self, touch: Touch) -> Outcome | None:
        problem = check_message(self.settings, touch.message, touch.address)
        if problem is not None:
            return Outcome(touch.touch_id, K.failed, code="SIYU_INVALID_MESSAGE", message=problem)
        if not touch.address.get("phone"):
            return Outcome(touch.touch_id, K.failed_member, code="SIYU_NO_PHONE", message="no phone number")
        return None

    async def send(self, touches: Sequence[Touch]) -> list[Outcome]:
        out: list[Outcome] = []
        groups: dict[str, list[Touch]] = {}
        for t in touches:
            bad = self._check(t)
            if bad is not None:
                out.append(bad)
            else:
                groups.setdefault(str(t.message["scenario"]), []).append(t)
        size = self.settings.jobs_per_call
        async with self.http.client() as client:
            calls = [self._assign(client, self.settings.scenarios[name], group[i:i + size])
                     for name, group in groups.items() for i in range(0, len(group), size)]
            for outcomes in await asyncio.gather(*calls):
                out.extend(outcomes)
        return out

    async def _find(self, client: httpx.AsyncClient, touch: Touch) -> tuple[str, dict[str, Any] | None]:
        """('found', job) / ('absent', None) when the vendor answered, ('unknown', None) otherwise."""
        scenario = self.settings.scenarios.get(str(touch.message.get("scenario")))
        if scenario is None or not touch.address.get("phone"):
            return "absent", None  # never sendable, so never sent
        params = {"InstanceId": self.settings.instance_id, "JobGroupId": scenario.job_group_id,
                  "QueryText": str(touch.address["phone"]), "PageNumber": "1", "PageSize": "100"}
        try:
            body = (await self.rpc.call(client, "QueryJobsWithResult", params)).body
        except httpx.TransportError:
            return "unknown", None
        if not _ok(body):
            return "unknown", None
        job = next((j for j in _job_list(body) if _reference(j) == touch.touch_id), None)
        return ("found", job) if job is not None else ("absent", None)

    async def lookup(self, touches: Sequence[Touch]) -> list[Outcome]:
        async with self.http.client() as client:
            found = await asyncio.gather(*(self._find(client, t) for t in touches))
        out = []
        for t, (state, job) in zip(touches, found, strict=True):
            if state == "found" and job is not None:
                out.append(Outcome(t.touch_id, K.sent, vendor_id=job.get("Id") or job.get("JobId")))
            elif state == "absent":
                out.append(Outcome(t.touch_id, K.not_sent, message="no job with this referenceId"))
            else:
                out.append(Outcome(t.touch_id, K.unknown, message="QueryJobsWithResult did not answer"))
        return out

    async def pull(self, touches: Sequence[Touch], since: datetime) -> Inbound:
        """Receipts with call outcomes for touches whose job has finished (Succeeded, Failed, Cancelled)."""
        async with self.http.client() as client:
            found = await asyncio.gather(*(self._find(client, t) for t in touches))
        return Inbound(receipts=[job_receipt(job, t.touch_id) for t, (state, job) in zip(touches, found, strict=True)
                                 if job is not None and job.get("Status") in _FINAL_STATUSES])
