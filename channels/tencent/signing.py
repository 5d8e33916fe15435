"""Tencent Cloud API signing, TC3-HMAC-SHA256 (vendors.md §4.2): shared by the adapter and its fake.

The functions follow the vendor's worked example step by step (canonical request → string
to sign → key chain → signature → `Authorization`), so each step can be checked against it.
No secret or signature is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

SERVICE = "sms"
VERSION = "2021-01-11"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ("content-type", "host")




def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_request(headers: Mapping[str, str], signed_headers: Sequence[str], payload: bytes,
                      *, method: str = "POST", query: str = "") -> str:
    """CanonicalRequest: names and values lower-cased and trimmed, sorted; the header block ends in `\\n`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    names = sorted(h.lower() for h in signed_headers)
    block = "".join(f"{n}:{lowered.get(n, '').strip().lower()}\n" for n in names)
    return f"{method.upper()}\n/\n{query}\n{block}\n{';'.join(names)}\n{_sha256_hex(payload)}"


def utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{_sha256_hex(canonical.encode())}"


def signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    """Lowercase hex HMAC-SHA256 under the key chain TC3+secret → date → service → tc3_request."""
    k_date = _hmac(f"TC3{secret_key}".encode(), utc_date(timestamp))
    k_signing = _hmac(_hmac(k_date, service), "tc3_request")
    return hmac.new(k_signing, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, *, timestamp: int, service: str,
                  headers: Mapping[str, str], payload: bytes,
                  signed_headers: Sequence[str] = SIGNED_HEADERS) -> str:
    """The `Authorization` header value (parts joined by comma and space)."""
    canonical = canonical_request(headers, signed_headers, payload)
    sig = signature(secret_key, timestamp, service, string_to_sign(timestamp, service, canonical))
    names = ";".join(sorted(h.lower() for h in signed_headers))
    return (f"{ALGORITHM} Credential={secret_id}/{utc_date(timestamp)}/{service}/tc3_request, "
            f"SignedHeaders={names}, Signature={sig}")


def signed_headers(action: str, payload: bytes, *, secret_id: str, secret_key: str, host: str,
                   region: str, timestamp: int, version: str = VERSION, service: str = SERVICE) -> dict[str, str]:
    """Every header of one API call, `Authorization` included."""
    headers = {"Content-Type": CONTENT_TYPE, "Host": host}
    headers["Authorization"] = authorization(secret_id, secret_key, timestamp=timestamp, service=service,
                                             headers=headers, payload=payload)
    headers.update({"X-TC-Action": action, "X-TC-Version": version, "X-TC-Timestamp": str(timestamp),
                    "X-TC-Region": region})
    return headers
