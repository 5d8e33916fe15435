"""What a vendor pushes to Siyu, as its adapter declares it, and how a push proves where it came from.

Vendors push delivery receipts, SMS replies (退订) and call outcomes to the callback server
that `siyu run` serves (engine/run/callbacks.py). A push changes the ledger and can
unsubscribe a number, so every route is authenticated, on by default:

- Aliyun and Tencent sign nothing. Their adapters take `callback_secret: "${ENV}"` (at least
  32 characters of `[A-Za-z0-9_-]`, or a list of two while rotating) and their routes are
  served at `/callbacks/<vendor>/<route>/<secret>`; an adapter without one serves no route.
- WeChat signs its pushes: the route's `open` checks the signature, the timestamp window and
  the nonce (channels/wechat/crypto.py) and decrypts the body in safe mode.
- `push: off` turns an adapter's routes off (pull only); `callback_allow` limits the source
  addresses a route accepts.

Parsers read untrusted JSON: `push_text` is the one reader of a field that must be short text
(an id, a phone, a status), so a list, a dict, a huge integer or a megabyte string is a
malformed push (400), never an error deeper down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BeforeValidator, Field, field_validator

from channels.base import ChannelSettings, Inbound

SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,256}")
"""A `callback_secret`: URL-safe, long enough not to be guessed."""


class PushRefused(Exception):
    """A push that does not prove its origin (signature, timestamp, nonce, source address): answered
    403 and nothing in it is read. `reason` is short ("bad signature", "nonce seen before", …) and
    never holds a token or key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PushRoute:
    """One push a vendor makes to Siyu's callback server, as the adapter declares it.

    Served at `/callbacks/<route>/<secret>` when `secrets` is set (any of them opens it), else at
    `/callbacks/<route>`, where `open` must authenticate every request (the server refuses to
    serve a route with neither): it gets the query and
    the body, raises `PushRefused` (403) or ValueError (400) and returns the body to parse
    (decrypted, for WeChat's safe mode). With `echo`, a GET answers the vendor's address check.
    `parse` reads the body (raising on a malformed one: 400, nothing applied); the engine then
    applies what it brings, receipts only to touches of `channel` sent through this adapter, and
    answers with `ack`: a mapping as JSON, a string as plain text.
    """

    route: str  #: "aliyun/sms-report": the path under /callbacks/, and the route's name in logs and counts
    channel: str | None  #: the channel name its receipts are about (sms, ai_call, template); None: replies only
    parse: Callable[[bytes], Inbound]
    ack: Mapping[str, Any] | str
    secrets: tuple[str, ...] = ()
    open: Callable[[Mapping[str, str], bytes], bytes] | None = None
    echo: Callable[[Mapping[str, str]], str] | None = None
    methods: tuple[str, ...] = ("POST",)
    allow: tuple[IPv4Network | IPv6Network, ...] = ()  #: source networks it accepts; () = any
    forget: Callable[[Mapping[str, str]], None] | None = None
    """Undo what `open` remembered of a push (its nonce) when the push could not be applied (503), so
    the vendor's retry is not refused as a replay."""


@runtime_checkable
class Pushes(Protocol):
    """**Protocol:** an adapter class whose vendor pushes receipts or replies to Siyu.

    `push_routes` is called on the class (not an instance) when the callback server is built,
    with the settings of every configured channel or fallback provider that uses this adapter
    (possibly none), and returns the routes its vendor pushes to: none when no configured
    settings allow pushes (`PushSettings.push_off_reason`). Routes only describe the vendor's
    format and authentication: the engine serves them (Starlette) and applies what they bring.
    """

    def push_routes(self, configured: Sequence[Any]) -> Sequence[PushRoute]: ...


def _networks(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("write a list of networks, e.g. [106.11.0.0/16]")  # noqa: TRY004 - pydantic reports ValueErrors
    out = []
    for item in value:
        try:
            out.append(ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{str(item)[:40]!r} is not an address or network (write e.g. 106.11.0.0/16)") from None
    return out


class PushSettings(ChannelSettings):
    """Settings of an adapter whose vendor pushes: on by default, limited by source if asked."""

    push: bool = True
    """`push: off`: serve no push route for this adapter; receipts come from its pull API only."""
    callback_allow: Annotated[list[IPv4Network | IPv6Network], BeforeValidator(_networks)] = Field(
        default_factory=list)
    """Source networks the push routes accept (the vendor's published egress ranges); empty: any."""

    def push_off_reason(self) -> str | None:
        """Why this adapter serves no push route (None: it serves them)."""
        return None if self.push else "push: off"

    def push_warning(self) -> str | None:
        """What is weak about how this adapter's pushes are served, for the start-up log (None: nothing)."""
        return None


class SecretPathSettings(PushSettings):
    """An adapter whose vendor signs nothing: its routes hold `callback_secret` in their path."""

    callback_secret: str | list[str] | None = None
    """`"${ENV}"`, or a list of two while rotating (the vendor console holds the new URL, the old
    one still works until removed): at least 32 characters of A–Z a–z 0–9 _ -."""

    @field_validator("callback_secret")
    @classmethod
    def _secret(cls, value: str | list[str] | None) -> str | list[str] | None:
        secrets = [value] if isinstance(value, str) else value or []
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise ValueError("write one secret, or a list of two while rotating")
        if not all(SECRET_SHAPE.fullmatch(s) for s in secrets):
            raise ValueError("a callback secret is 32 to 256 characters of A-Z a-z 0-9 _ - "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @property
    def callback_secrets(self) -> tuple[str, ...]:
        value = self.callback_secret
        return (value,) if isinstance(value, str) else tuple(value or ())

    def push_off_reason(self) -> str | None:
        return super().push_off_reason() or (None if self.callback_secrets else "no callback_secret")


def secret_routes(configured: Sequence[Any], routes: Sequence[PushRoute]) -> list[PushRoute]:
    """`routes` opened by the secrets of every configured `SecretPathSettings` that allows pushes
    (and limited to their source networks when each has some); none when no settings allow pushes."""
    serving = [s for s in configured if isinstance(s, SecretPathSettings) and s.push_off_reason() is None]
    if not serving:
        return []
    secrets = tuple(dict.fromkeys(secret for s in serving for secret in s.callback_secrets))
    allow = tuple(dict.fromkeys(n for s in serving for n in s.callback_allow)) if all(
        s.callback_allow for s in serving) else ()
    return [replace(route, secrets=secrets, allow=allow) for route in routes]


def push_text(item: Mapping[str, Any], key: str, limit: int = 64) -> str | None:
    """Field `key` of a pushed JSON object as short text: None when absent or empty; a number is
    taken as its digits; anything else (TypeError), or longer than `limit` (ValueError), is a
    malformed push."""
    value = item.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10 ** 18:
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{key}: longer than {limit} characters")
    return value
