"""The vendors' push callbacks, served by `siyu run` on `http.listen` (Starlette on uvicorn).

Each adapter declares the pushes its vendor makes (`channels.base.Pushes.push_routes`): the
path, the parser in that adapter's file, the vendor's own acknowledgement and, for signed
pushes, the check. This module builds the routes from the registry (`channels.ADAPTERS`) and
the configured channels, applies the receipts and replies through engine.run.receipts
(idempotent: a receipt pushed three times changes nothing the second and third time) and
answers with the acknowledgement. Today that is:

    POST /callbacks/aliyun/sms-report      Aliyun SmsReport (delivery receipts)
    POST /callbacks/aliyun/sms-up          Aliyun SmsUp (replies: 退订 suppresses the number)
    POST /callbacks/aliyun/voice-report    Aliyun VoiceReport (call outcomes)
    POST /callbacks/tencent/sms-status     Tencent delivery callback
    POST /callbacks/tencent/sms-reply      Tencent reply callback
    GET  /callbacks/wechat                 WeChat server verification (echostr), when an account has a token
    POST /callbacks/wechat                 WeChat TEMPLATESENDJOBFINISH events, signed with an account's token
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from channels import ADAPTERS
from channels.base import ChannelSettings, Pushes, PushRoute
from engine.logs import log
from engine.run.http_server import http_server
from engine.run.receipts import ReceiptBook


def _handler(book: ReceiptBook, route: PushRoute) -> Callable[[Request], Awaitable[Response]]:
    """Serve one declared push: check, echo, or parse → apply → acknowledge."""
    ack: Response = (PlainTextResponse(route.ack) if isinstance(route.ack, str) else JSONResponse(dict(route.ack)))

    async def handle(request: Request) -> Response:
        query = request.query_params
        if route.verify is not None and not route.verify(query):
            log.warning("callback.bad_signature", vendor=route.vendor)
            return PlainTextResponse("bad signature", status_code=403)
        if route.echo is not None and request.method == "GET":
            return PlainTextResponse(query.get(route.echo, ""))
        try:
            inbound = route.parse(await request.body())
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("callback.malformed", vendor=route.vendor, path=request.url.path, error=str(exc))
            return JSONResponse({"code": 400, "msg": "malformed"}, status_code=400)
        counts = await asyncio.to_thread(book.apply, inbound)
        log.info("callback.applied", vendor=route.vendor, path=request.url.path, **counts)
        return ack
    return handle


def push_routes(channels: Iterable[ChannelSettings]) -> list[PushRoute]:
    """Every registered adapter's declared pushes, given the configured `channels`' settings."""
    providers = [p for s in channels for p in (s, getattr(s, "fallback", None)) if p is not None]
    routes: dict[str, PushRoute] = {}
    for name, adapter in ADAPTERS.items():
        if not isinstance(adapter, Pushes):
            continue
        for route in adapter.push_routes([p for p in providers if p.adapter == name]):
            if route.path in routes:
                raise ValueError(f"push route {route.path} declared twice (adapter {name})")
            routes[route.path] = route
    return list(routes.values())


def build_app(book: ReceiptBook, channels: Iterable[ChannelSettings] = ()) -> Starlette:
    """The callback application for the configured `channels` (their settings)."""
    return Starlette(routes=[Route(r.path, _handler(book, r), methods=list(r.methods))
                             for r in push_routes(channels)])


server = http_server  # the callback server is the one HTTP server, with its limits
