"""The vendors' push callbacks, served by `siyu run` on `http.listen` (Starlette on uvicorn).

Each route reads its vendor's own request format with the parser in that adapter's file,
applies the receipts and replies through engine.run.receipts (idempotent: a receipt pushed
three times changes nothing the second and third time) and answers with the vendor's own
acknowledgement. WeChat pushes are checked against the account's token first.

    POST /callbacks/aliyun/sms-report      Aliyun SmsReport (delivery receipts)
    POST /callbacks/aliyun/sms-up          Aliyun SmsUp (replies: 退订 suppresses the number)
    POST /callbacks/aliyun/voice-report    Aliyun VoiceReport (call outcomes)
    POST /callbacks/tencent/sms-status     Tencent delivery callback
    POST /callbacks/tencent/sms-reply      Tencent reply callback
    GET  /callbacks/wechat                 WeChat server verification (echostr)
    POST /callbacks/wechat                 WeChat TEMPLATESENDJOBFINISH events
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from channels.aliyun import sms as aliyun_sms
from channels.aliyun import voice as aliyun_voice
from channels.base import Inbound
from channels.tencent import sms as tencent_sms
from channels.wechat import template as wechat_template
from engine.logs import log
from engine.run.receipts import ReceiptBook

Parse = Callable[[bytes], Inbound]


def _receipts_route(book: ReceiptBook, vendor: str, parse: Parse, ack: Response) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        body = await request.body()
        try:
            inbound = parse(body)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("callback.malformed", vendor=vendor, path=request.url.path, error=str(exc))
            return JSONResponse({"code": 400, "msg": "malformed"}, status_code=400)
        counts = await asyncio.to_thread(book.apply, inbound)
        log.info("callback.applied", vendor=vendor, path=request.url.path, **counts)
        return ack
    return handle


def _wechat_routes(book: ReceiptBook, tokens: Sequence[str]) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        q = request.query_params
        signed = any(wechat_template.check_signature(token, q.get("signature", ""), q.get("timestamp", ""),
                                                     q.get("nonce", "")) for token in tokens)
        if not signed:
            log.warning("callback.bad_signature", vendor="wechat")
            return PlainTextResponse("bad signature", status_code=403)
        if request.method == "GET":
            return PlainTextResponse(q.get("echostr", ""))
        receipts = wechat_template.parse_event(await request.body())
        counts = await asyncio.to_thread(book.apply, Inbound(receipts=receipts))
        log.info("callback.applied", vendor="wechat", **counts)
        return PlainTextResponse(wechat_template.ACKNOWLEDGEMENT)
    return handle


def build_app(book: ReceiptBook, wechat_tokens: Sequence[str] = ()) -> Starlette:
    """The callback application; `wechat_tokens` are the accounts' server tokens."""
    aliyun_ack = JSONResponse(aliyun_sms.PUSH_ACK)
    routes: list[Any] = [
        Route("/callbacks/aliyun/sms-report", _receipts_route(
            book, "aliyun", lambda b: Inbound(receipts=aliyun_sms.parse_sms_report(b)), aliyun_ack), methods=["POST"]),
        Route("/callbacks/aliyun/sms-up", _receipts_route(
            book, "aliyun", lambda b: Inbound(replies=aliyun_sms.parse_sms_up(b)), aliyun_ack), methods=["POST"]),
        Route("/callbacks/aliyun/voice-report", _receipts_route(
            book, "aliyun", lambda b: Inbound(receipts=aliyun_voice.parse_voice_report(b)),
            JSONResponse(aliyun_voice.VOICE_REPORT_ACK)), methods=["POST"]),
        Route("/callbacks/tencent/sms-status", _receipts_route(
            book, "tencent", lambda b: Inbound(receipts=tencent_sms.parse_status_callback(b)),
            JSONResponse(tencent_sms.CALLBACK_ACK)), methods=["POST"]),
        Route("/callbacks/tencent/sms-reply", _receipts_route(
            book, "tencent", lambda b: Inbound(replies=tencent_sms.parse_reply_callback(b)),
            JSONResponse(tencent_sms.CALLBACK_ACK)), methods=["POST"]),
    ]
    if wechat_tokens:
        routes.append(Route("/callbacks/wechat", _wechat_routes(book, wechat_tokens), methods=["GET", "POST"]))
    return Starlette(routes=routes)


def server(app: Starlette, listen: str, grace: timedelta) -> Any:
    """A uvicorn server for `app` that leaves signal handling to the daemon (uvicorn would take
    SIGTERM and SIGINT for itself). Told to exit, it stops listening and gives the requests it
    has begun `grace` to finish."""
    import contextlib

    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    host, _, port = listen.rpartition(":")
    return _Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning", lifespan="off",
                                  access_log=False, timeout_graceful_shutdown=max(1, round(grace.total_seconds()))))
