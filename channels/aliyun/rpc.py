"""One Aliyun RPC call, as SMS, voice and the outbound robot make it, and what its answer means.

`Endpoint.call` builds the parameters, signs them (channels/aliyun/signing.py), POSTs the
form and reads the JSON answer. `classify` turns a code that is not `OK` into an outcome
from the product's table (which extends `GATEWAY_CODES`), and `shanghai_time` reads the
`YYYY-MM-DD HH:MM:SS` Shanghai times that every Aliyun product writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from channels.aliyun.signing import signed_params
from channels.base import OutcomeKind
from engine.grammar.addresses import masked

SHANGHAI = ZoneInfo("Asia/Shanghai")

GATEWAY_CODES: dict[str, OutcomeKind] = {
    # The RPC gateway's own answers, the same for every Aliyun product (vendors.md §3.2, §3.5, §6);
    # each adapter adds its product's codes to these.
    "Throttling.User": OutcomeKind.retry,
    "Throttling.Api": OutcomeKind.retry,
    "SignatureNonceUsed": OutcomeKind.retry,  # rejected before sending; the next attempt has a new nonce
    "SignatureDoesNotMatch": OutcomeKind.channel_fatal,  # a wrong secret: retrying cannot help
    "InvalidAccessKeyId.NotFound": OutcomeKind.channel_fatal,
    "InvalidAccessKeyId.Inactive": OutcomeKind.channel_fatal,
    "InvalidTimeStamp.Expired": OutcomeKind.channel_fatal,  # our clock is off: pause until it is fixed
    "InvalidTimeStamp.Format": OutcomeKind.channel_fatal,
    "InternalError": OutcomeKind.unknown,  # may have been accepted: settle through the lookup
    "ServiceUnavailable": OutcomeKind.unknown,
}


def classify(codes: Mapping[str, OutcomeKind], code: str, http_status: int) -> OutcomeKind:
    """The outcome of an answer that is not `OK`: the product's table `codes` first; an unlisted
    code on a 5xx may hide an accepted request (`unknown`), any other unlisted code rejected it
    (`failed`: not `retry`, since we cannot know it is transient, nor `channel_fatal`, so one odd
    code does not stop the channel)."""
    if code in codes:
        return codes[code]
    return OutcomeKind.unknown if http_status >= 500 else OutcomeKind.failed


def shanghai_time(value: Any) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` in Shanghai time, as Aliyun writes it, or None (missing or unreadable)."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    except ValueError:
        return None


@dataclass(frozen=True)
class Answer:
    """One RPC answer: the HTTP status and the JSON object it carried (`{}` when it carried none)."""

    status: int
    body: dict[str, Any]
    readable: bool  #: the body was a JSON object

    @property
    def code(self) -> str:
        """The vendor's `Code`; `HTTP_<status>` when the body was not a JSON object."""
        return str(self.body.get("Code", "")) if self.readable else f"HTTP_{self.status}"

    @property
    def message(self) -> str | None:
        """The vendor's `Message`; "not JSON" when the body was not a JSON object."""
        return self.body.get("Message") if self.readable else "not JSON"


@dataclass(frozen=True)
class Endpoint:
    """One Aliyun product's RPC endpoint for one account: where to POST and how to sign."""

    url: str  #: the product's host, e.g. https://dysmsapi.aliyuncs.com/
    version: str  #: the API version, e.g. 2017-05-25
    access_key_id: str
    access_key_secret: str
    region: str
    clock: Callable[[], datetime] | None = None  #: the `Timestamp` signed (default: the real clock)

    async def call(self, client: httpx.AsyncClient, action: str, params: Mapping[str, str]) -> Answer:
        """POST one signed call of `action`; transport errors propagate (the caller knows whether the
        request may have been accepted)."""
        now = self.clock() if self.clock else datetime.now(UTC)
        form = signed_params(action, self.version, params, self.access_key_id, self.access_key_secret,
                             method="POST", now=now, region=self.region)
        response = await client.post(self.url, data=form)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return Answer(response.status_code, body, readable=True)
        return Answer(response.status_code, {}, readable=False)


_SEVERAL = re.compile(r"[,;/、，；]")
"""Separators between numbers: a phone with one of them names several callees."""


def call_rule(scenarios: Collection[str], message: Mapping[str, Any], address: Mapping[str, Any]) -> str | None:
    """The rule of an Aliyun call (SingleCallByTts, AssignJobs) that `message` breaks, or None: its
    scenario is configured, and the address names one callee (a call dials one number)."""
    if str(message.get("scenario")) not in scenarios:
        return f"no scenario {message.get('scenario')!r} configured"
    phone = address.get("phone")
    if isinstance(phone, str) and _SEVERAL.search(phone):
        return f"one callee per call: phone {masked(phone)!r} names several numbers"
    return None
