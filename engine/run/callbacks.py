"""The vendors' push callbacks, served by `siyu run` on `http.listen` (Starlette on uvicorn).

Each adapter declares the pushes its vendor makes (`channels.push.PushRoute`): the route, the
parser in that adapter's file, the vendor's own acknowledgement and how a push proves its
origin. This module builds the routes from the registry (`channels.ADAPTERS`) and the
configured channels, applies the receipts and replies through engine.run.receipts
(idempotent: a receipt pushed three times changes nothing the second and third time) and
answers. With the local trial's settings that is:

    POST /callbacks/aliyun/sms-report/<secret>     Aliyun SmsReport (delivery receipts)
    POST /callbacks/aliyun/sms-up/<secret>         Aliyun SmsUp (replies: 退订 suppresses the number)
    POST /callbacks/aliyun/voice-report/<secret>   Aliyun VoiceReport (call outcomes)
    POST /callbacks/tencent/sms-status/<secret>    Tencent delivery callback
    POST /callbacks/tencent/sms-reply/<secret>     Tencent reply callback
    GET  /callbacks/wechat                         WeChat server verification (echostr)
    POST /callbacks/wechat                         WeChat TEMPLATESENDJOBFINISH events, signed (and encrypted)

Answers: a wrong path or secret 404 (as for a route that does not exist); a push that fails
its signature, timestamp, nonce or source check 403; a body over the cap 413; a malformed
body 400 with a one-line reason; the database unavailable 503, so the vendor pushes again;
otherwise the vendor's acknowledgement, also when what it brought was inconsistent (counted,
not applied). Every request is counted per day, route and outcome (`PushTally`), and the
daemon adds the counts to the `callback_counts` table once a minute. Log lines name the route,
never the path: the path holds the secret.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from channels import ADAPTERS
from channels.base import ChannelSettings, Inbound
from channels.push import Pushes, PushRefused, PushRoute, PushSettings
from engine import ledger
from engine.clock import local_date
from engine.grammar.addresses import ChannelName
from engine.logs import log
from engine.run.http_server import VENDOR_BODY_CAP, BodyRefused, read_body
from engine.run.receipts import PushOrigin, ReceiptBook
from engine.store.connect import is_transient, write_transaction

PREFIX = "/callbacks/"
OUTCOMES = ("applied", "inconsistent", "unmatched", "refused", "malformed", "unavailable")
"""What became of pushes: applied (and acknowledged; replies count here), inconsistent (a receipt
that does not fit its touch: acknowledged, not applied), unmatched (a receipt for no touch of
ours), refused (wrong secret, signature, timestamp, nonce or source), malformed (400, or 413),
unavailable (the database was: 503)."""
NOT_FOUND = PlainTextResponse("Not Found", status_code=404)


class PushTally:
    """Pushes counted per (day, route, outcome) in memory, taken out once a minute by the daemon
    (`drain`) to be added to the `callback_counts` table. Thread-safe: applying runs in threads."""

    def __init__(self, tz: ZoneInfo, clock: Callable[[], datetime]) -> None:
        self.tz = tz
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], tuple[int, datetime]] = {}
        self._reasons: dict[str, str] = {}  #: route → the latest refusal or malformation, for the summary line

    def add(self, route: str, outcome: str, n: int = 1, reason: str | None = None) -> None:
        if n <= 0:
            return
        now = self.clock()
        key = (local_date(now, self.tz).isoformat(), route, outcome)
        with self._lock:
            count, _ = self._counts.get(key, (0, now))
            self._counts[key] = (count + n, now)
            if reason:
                self._reasons[route] = reason

    def drain(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The counts since the last drain as `callback_counts` rows, and the latest reasons."""
        with self._lock:
            counts, self._counts = self._counts, {}
            reasons, self._reasons = self._reasons, {}
        return ([{"day": day, "route": route, "outcome": outcome, "count": count, "last_at": at}
                 for (day, route, outcome), (count, at) in counts.items()], reasons)

    def restore(self, rows: Sequence[dict[str, Any]]) -> None:
        """Put back rows that could not be written (the database was away): counted next time."""
        with self._lock:
            for row in rows:
                key = (row["day"], row["route"], row["outcome"])
                count, at = self._counts.get(key, (0, row["last_at"]))
                self._counts[key] = (count + row["count"], max(at, row["last_at"]))

    def flush(self, engine: Engine) -> None:
        """Add the drained counts to the database and log one summary line per route that refused
        or could not read requests since the last flush."""
        rows, reasons = self.drain()
        if not rows:
            return
        try:
            with write_transaction(engine) as conn:
                ledger.add_push_counts(conn, rows)
        except Exception:
            self.restore(rows)
            raise
        bad: dict[str, dict[str, int]] = {}
        for row in rows:
            if row["outcome"] in ("refused", "malformed"):
                bad.setdefault(row["route"], {})[row["outcome"]] = row["count"]
        for route, counts in sorted(bad.items()):
            log.warning("callbacks.refused", route=route, **counts, last_reason=reasons.get(route))


@dataclass(frozen=True)
class Served:
    """A declared route as served: where its receipts may land."""

    route: PushRoute
    origin: PushOrigin


def _reason(exc: BaseException) -> str:
    """A one-line reason for an answer: the exception's message cut short (it may quote pushed text)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 80 else text[:79] + "…"


async def _read(route: PushRoute, request: Request) -> Inbound:
    """What an authenticated push brings: the body read within its cap, opened (WeChat) and parsed."""
    body = await read_body(request, max_bytes=VENDOR_BODY_CAP)
    if route.open is not None:
        body = route.open(request.query_params, body)
    return route.parse(body)


def _handler(book: ReceiptBook, served: Served, tally: PushTally) -> Callable[[Request], Awaitable[Response]]:
    """Serve one declared push: authenticate, echo, or read → parse → apply → acknowledge."""
    route = served.route
    ack: Response = (PlainTextResponse(route.ack) if isinstance(route.ack, str) else JSONResponse(dict(route.ack)))
    name = route.route

    async def handle(request: Request) -> Response:
        if route.secrets:
            given = request.path_params.get("secret", "").encode("utf-8", "surrogateescape")
            if not any(hmac.compare_digest(given, secret.encode()) for secret in route.secrets):
                tally.add(name, "refused", reason="wrong secret")
                return NOT_FOUND
        try:
            if request.method == "GET":
                if route.echo is None:
                    return PlainTextResponse("Method Not Allowed", status_code=405)
                return PlainTextResponse(route.echo(request.query_params))
            inbound = await _read(route, request)
        except PushRefused as exc:
            tally.add(name, "refused", reason=exc.reason)
            return PlainTextResponse("forbidden", status_code=403)
        except BodyRefused as exc:  # too large (413), too slow (408), cut short (400)
            tally.add(name, "malformed", reason=exc.detail)
            return JSONResponse({"code": exc.status_code, "msg": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
            reason = _reason(exc)
            tally.add(name, "malformed", reason=reason)
            return JSONResponse({"code": 400, "msg": f"malformed: {reason}"}, status_code=400)
        return await _apply(book, served, tally, inbound, ack, request.query_params)
    return handle


async def _apply(book: ReceiptBook, served: Served, tally: PushTally, inbound: Inbound, ack: Response,
                 query: Mapping[str, str]) -> Response:
    """Apply what an authenticated push brought and answer: the vendor's acknowledgement, 400 for a
    value the ledger cannot hold, 503 while the database is unavailable."""
    name = served.route.route
    try:
        counts = await asyncio.to_thread(book.apply, inbound, served.origin)
    except DataError as exc:
        tally.add(name, "malformed", reason=type(exc.orig).__name__)
        return JSONResponse({"code": 400, "msg": "malformed: a value is out of range"}, status_code=400)
    except DBAPIError as exc:
        if not isinstance(exc, OperationalError) and not is_transient(exc):
            raise  # a bug, not an outage: the server's backstop logs it as one line and answers 500
        tally.add(name, "unavailable")
        log.warning("callback.unavailable", route=name, error=type(exc.orig).__name__)
        if served.route.forget is not None:
            served.route.forget(query)
        return JSONResponse({"code": 503, "msg": "try again"}, status_code=503)
    applied = counts["receipts"] + counts["replies"]
    tally.add(name, "applied", applied or int(not (counts["inconsistent"] or counts["unmatched"])))
    tally.add(name, "inconsistent", counts["inconsistent"])
    tally.add(name, "unmatched", counts["unmatched"])
    log.info("callback.applied", route=name, **counts)
    return ack


def _senders(channels: Mapping[ChannelName, ChannelSettings], adapter: str, channel: str | None
             ) -> frozenset[tuple[str, str | None]]:
    """(channel, provider) of the touches `adapter` sends for the configured `channels`, limited
    to `channel` (None: any), as the ledger records them (channels.fallback labels)."""
    out: set[tuple[str, str | None]] = set()
    for name, settings in channels.items():
        if channel is not None and name != channel:
            continue
        fallback = getattr(settings, "fallback", None)
        if settings.adapter == adapter:
            out |= {(name, None), (name, adapter)}
        if fallback is not None and fallback.adapter == adapter:
            out.add((name, adapter if settings.adapter != adapter else f"{adapter}/fallback"))
    return frozenset(out)


def served_routes(channels: Mapping[ChannelName, ChannelSettings]) -> list[Served]:
    """Every registered adapter's declared pushes, given the configured `channels` (by name)."""
    providers = [p for s in channels.values() for p in (s, getattr(s, "fallback", None)) if p is not None]
    served: dict[str, Served] = {}
    for name, adapter in ADAPTERS.items():
        if not isinstance(adapter, Pushes):
            continue
        for route in adapter.push_routes([p for p in providers if p.adapter == name]):
            if route.route in served:
                raise ValueError(f"push route {route.route} declared twice (adapter {name})")
            if not route.secrets and route.open is None:
                raise ValueError(f"push route {route.route} of {name} is not authenticated")
            served[route.route] = Served(route, PushOrigin(route.route, _senders(channels, name, route.channel)))
    return list(served.values())


def push_off(channels: Mapping[ChannelName, ChannelSettings]) -> list[tuple[str, str, str]]:
    """(channel, adapter, reason) of every configured adapter whose vendor pushes but that serves no route."""
    providers: list[tuple[str, Any]] = [(name, p) for name, s in channels.items()
                                        for p in (s, getattr(s, "fallback", None))]
    return [(name, provider.adapter, reason) for name, provider in providers
            if isinstance(provider, PushSettings) and (reason := provider.push_off_reason()) is not None]


class SourceAllowlist:
    """ASGI middleware: a push route with `callback_allow` networks answers 403 to any other source
    (the client address as uvicorn reports it: behind a proxy on 127.0.0.1, X-Forwarded-For)."""

    def __init__(self, app: ASGIApp, rules: dict[str, tuple[Any, ...]], tally: PushTally) -> None:
        self.app = app
        self.rules = rules  #: route → networks
        self.tally = tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            rest = scope["path"][len(PREFIX):]
            route = next((r for r in self.rules if rest == r or rest.startswith(r + "/")), None)
            if route is not None and not _allowed(scope.get("client"), self.rules[route]):
                self.tally.add(route, "refused", reason="source address not allowed")
                await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _allowed(client: tuple[str, int] | None, networks: tuple[Any, ...]) -> bool:
    try:
        address = ip_address(client[0]) if client else None
    except ValueError:
        return False
    return address is not None and any(address in network for network in networks)


def build_app(book: ReceiptBook, channels: Mapping[ChannelName, ChannelSettings], tally: PushTally) -> Starlette:
    """The callback application for the configured `channels` (by name)."""
    served = served_routes(channels)
    routes = [Route(PREFIX + s.route.route + ("/{secret}" if s.route.secrets else ""), _handler(book, s, tally),
                    methods=list(s.route.methods)) for s in served]
    rules = {s.route.route: s.route.allow for s in served if s.route.allow}
    return Starlette(routes=routes, middleware=[Middleware(SourceAllowlist, rules=rules, tally=tally)])


def log_push_routes(channels: Mapping[ChannelName, ChannelSettings]) -> None:
    """At start: the routes served (by name) and every adapter that serves none, with why."""
    for channel, adapter, reason in push_off(channels):
        log.warning("callbacks.push_disabled", channel=channel, adapter=adapter, reason=reason)
    for name, settings in channels.items():
        for provider in (settings, getattr(settings, "fallback", None)):
            if isinstance(provider, PushSettings) and (warning := provider.push_warning()):
                log.warning("callbacks.push_weak", channel=name, adapter=provider.adapter, warning=warning)
    log.info("callbacks.routes", routes=sorted(s.route.route for s in served_routes(channels)))
