"""Aliyun RPC request signing, signature version 1.0 (HMAC-SHA1): shared by SMS, voice and the outbound robot.

1. every parameter but `Signature`, names and values percent-encoded as UTF-8 (RFC 3986:
   only A–Z a–z 0–9 - _ . ~ stay as they are; space is %20, * is %2A);
2. sorted by encoded name and joined as name=value with & (the canonical query);
3. string to sign: METHOD & %2F & percent-encode(canonical query);
4. Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", string to sign)).

channels/aliyun/rpc.py signs every call with `signed_params`; the fake vendors verify requests
with the same `signature` function.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun requires it (`~` kept, space → %20, `*` → %2A)."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params.items() if k != "Signature")
    return "&".join(f"{k}={v}" for k, v in pairs)


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(method: str, params: Mapping[str, str], access_key_secret: str) -> str:
    digest = hmac.new(f"{access_key_secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


def signed_params(action: str, version: str, params: Mapping[str, str], access_key_id: str,
                  access_key_secret: str, *, method: str = "POST", now: datetime | None = None,
                  nonce: str | None = None, region: str = "cn-hangzhou") -> dict[str, str]:
    """The full parameter set of one RPC call, `Signature` included."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    full = {
        "Action": action, "Version": version, "Format": "JSON", "RegionId": region,
        "AccessKeyId": access_key_id, "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "SignatureNonce": nonce or uuid.uuid4().hex, "Timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **dict(params),
    }
    full["Signature"] = signature(method, full, access_key_secret)
    return full
