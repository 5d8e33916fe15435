"""A fake Aliyun intelligent outbound robot (outboundbot 2019-12-26): `AssignJobs`, `QueryJobsWithResult`.

Signature, timestamp and nonce are checked as the Aliyun gateway does (shared with the
voice fake). `AssignJobs` validates the instance, the job group and each `JobsJson.N`
(`contacts`: exactly one `{phoneNumber, referenceId, …}`, `extras`: `[{key, value}]`,
at most 25 jobs). Jobs start `Scheduling`; `finish()` plays `outcomes` (answered,
duration, who hung up, intent tag) and ends them `Succeeded` or `Failed`. `failures` is
played in turn, one per AssignJobs: any code, slow, or accept-then-drop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response

from .aliyun_voice import PHONE, DropResponse, Failure, error, rpc_app


@dataclass
class JobResult:
    """What the robot's call to one contact came to."""

    answered: bool = True
    duration_s: int = 41
    intent: str | None = "interested"
    hung_up_by_rejection: bool = False


@dataclass
class BotFake:
    """State and behaviour of the fake; `app()` is the ASGI app."""

    secrets: dict[str, str] = field(default_factory=lambda: {"test-key-id": "test-key-secret"})
    instance_id: str = "inst-fake"
    job_groups: set[str] = field(default_factory=lambda: {"jg-lapsed"})
    requests: list[dict[str, str]] = field(default_factory=list)
    assign_calls: list[dict[str, str]] = field(default_factory=list)  #: accepted AssignJobs requests
    jobs: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, JobResult] = field(default_factory=dict)  #: phone → scripted result
    failures: list[Failure] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)

    def reset(self) -> None:
        for bag in (self.requests, self.assign_calls, self.jobs, self.outcomes, self.failures, self.nonces):
            bag.clear()

    @staticmethod
    def _parse_job(raw: str) -> dict[str, Any] | str:
        try:
            job = json.loads(raw)
        except ValueError:
            return "JobsJson is not JSON"
        if not isinstance(job, dict) or not isinstance(job.get("contacts"), list) or len(job["contacts"]) != 1:
            return "a job has exactly one contact"
        contact = job["contacts"][0]
        if not isinstance(contact, dict) or not PHONE.match(str(contact.get("phoneNumber", ""))):
            return "contact.phoneNumber is not a phone number"
        if not isinstance(contact.get("referenceId"), str) or not contact["referenceId"]:
            return "contact.referenceId is required"
        extras = job.get("extras", [])
        if not isinstance(extras, list) or not all(
                isinstance(e, dict) and set(e) == {"key", "value"} and all(isinstance(v, str) for v in e.values())
                for e in extras):
            return "extras are [{key, value}] strings"
        return job

    async def _assign(self, p: dict[str, str]) -> Response:
        failure = self.failures.pop(0) if self.failures else Failure()
        if failure.code:
            return error(failure.code, http_status=failure.http_status)
        if p.get("InstanceId") != self.instance_id:
            return error("InstanceNotFound", http_status=404)
        if p.get("JobGroupId") not in self.job_groups:
            return error("JobGroupNotFound", http_status=404)
        raws = [p[k] for k in sorted((k for k in p if k.startswith("JobsJson.")), key=lambda k: int(k.split(".")[1]))]
        if not raws:
            return error("MissingParameter", "JobsJson is required")
        if len(raws) > 25:
            return error("InvalidParameter", "at most 25 jobs per call")
        parsed = [self._parse_job(raw) for raw in raws]
        problem = next((x for x in parsed if isinstance(x, str)), None)
        if problem is not None:
            return error("InvalidParameter", problem)
        self.assign_calls.append(p)
        ids = []
        for job in parsed:
            assert isinstance(job, dict)
            contact = job["contacts"][0]
            job_id = str(uuid.uuid4())
            ids.append(job_id)
            self.jobs.append({"Id": job_id, "JobGroupId": p["JobGroupId"], "Status": "Scheduling",
                              "CalledNumber": contact["phoneNumber"], "ScriptId": p.get("ScriptId"),
                              "Extras": job.get("extras", []),
                              "Contact": {"PhoneNumber": contact["phoneNumber"],
                                          "ReferenceId": contact["referenceId"], "Name": contact.get("name")}})
        if failure.slow_s:
            await asyncio.sleep(failure.slow_s)
        if failure.drop:
            return DropResponse()
        return JSONResponse({"Code": "OK", "Success": True, "HttpStatusCode": 200, "Message": "",
                             "RequestId": str(uuid.uuid4()).upper(), "JobGroupId": p["JobGroupId"], "JobsId": ids})

    def finish(self) -> None:
        """Every scheduled job calls its contact and ends as `outcomes` says."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        for job in self.jobs:
            if job["Status"] != "Scheduling":
                continue
            r = self.outcomes.get(job["CalledNumber"], JobResult())
            job["Status"] = "Succeeded" if r.answered else "Failed"
            job["JobFailureReason"] = None if r.answered else "NoAnswer"
            job["LatestTask"] = {
                "CallTime": now_ms, "CallDuration": r.duration_s if r.answered else 0,
                "HasAnswered": r.answered, "HasHangUpByRejection": r.hung_up_by_rejection,
                "HasReachedEndOfFlow": r.answered and not r.hung_up_by_rejection,
                "Status": "Succeeded" if r.answered else "NoAnswer",
                "TagHits": [{"TagGroup": "意向", "TagName": r.intent}] if r.answered and r.intent else [],
                "Contact": job["Contact"],
            }

    def _query(self, p: dict[str, str]) -> Response:
        if p.get("InstanceId") != self.instance_id:
            return error("InstanceNotFound", http_status=404)
        found = [j for j in self.jobs if j["JobGroupId"] == p.get("JobGroupId")
                 and (not p.get("QueryText") or p["QueryText"] == j["CalledNumber"])]
        return JSONResponse({"Code": "OK", "Success": True, "HttpStatusCode": 200, "Message": "",
                             "RequestId": str(uuid.uuid4()).upper(),
                             "Jobs": {"List": found, "TotalCount": len(found),
                                      "PageNumber": int(p.get("PageNumber", "1")),
                                      "PageSize": int(p.get("PageSize", "10"))}})

    def app(self) -> Starlette:
        async def query(p: dict[str, str]) -> Response:
            return self._query(p)
        return rpc_app("2019-12-26", {"AssignJobs": self._assign, "QueryJobsWithResult": query},
                       self.secrets, self.nonces, self.requests)


def outbound_bot_app(fake: BotFake) -> Starlette:
    """The ASGI app of `fake` (for `FakeServer` and `siyu fakes`)."""
    return fake.app()
