"""One fake vendor of channels/fakes/ served on a loopback port in a process of its own, for
bench/dispatch.py: the CPU the vendor spends must not be counted as Siyu's.

    python -m bench.fake_vendor aliyun_sms|wecom

It binds 127.0.0.1 on a free port, prints `ready http://127.0.0.1:PORT` once it accepts
connections and serves until SIGTERM or Ctrl-C. The fakes check what the real vendors check
(the Aliyun signature, nonces and timestamps; WeCom tokens and task bodies) with the fake
credentials of channels/fakes/local.py. `GET /_bench/stats` tells what the fake accepted and the
CPU this process has used, so the benchmark can verify that every touch arrived and see
whether the vendor, not the sender, was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from channels.fakes import local

HOST = "127.0.0.1"
STATS_PATH = "/_bench/stats"
ADAPTERS = ("aliyun_sms", "wecom")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def channel_settings(adapter: str, base_url: str) -> dict[str, Any]:
    """The adapter's `channels:` entry with the fake's credentials (what `siyu fakes` writes)."""
    c = local.CREDENTIALS
    if adapter == "aliyun_sms":
        return {"adapter": "aliyun_sms", "base_url": base_url, "access_key_id": c["aliyun_key_id"],
                "access_key_secret": c["aliyun_key_secret"], "sign_name": local.SIGN_NAME}
    if adapter == "wecom":
        return {"adapter": "wecom", "base_url": base_url, "corp_id": c["wecom_corp_id"], "secret": c["wecom_secret"]}
    raise ValueError(f"no fake vendor for adapter {adapter!r} ({', '.join(ADAPTERS)})")


def vendor_app(adapter: str) -> tuple[App, Callable[[], dict[str, int]]]:
    """The fake's ASGI app and a function counting what it accepted: `requests` (SendSms calls or
    WeCom tasks), `recipients` (phone numbers or external user ids) and `distinct_recipients`."""
    c = local.CREDENTIALS
    if adapter == "aliyun_sms":
        from channels.fakes.aliyun_sms import aliyun_sms_app

        app = aliyun_sms_app({c["aliyun_key_id"]: c["aliyun_key_secret"]}, sign_names={local.SIGN_NAME})
        sms = app.state.sms

        def sms_counts() -> dict[str, int]:
            return {"requests": len(sms.requests), "recipients": len(sms.sends),
                    "distinct_recipients": len({s.out_id for s in sms.sends})}

        return app, sms_counts
    if adapter == "wecom":
        from channels.fakes.wecom import WecomFake

        wecom = WecomFake(c["wecom_corp_id"], c["wecom_secret"])

        def wecom_counts() -> dict[str, int]:
            ids = [i for body in wecom.received for i in body["external_userid"]]
            return {"requests": len(wecom.received), "recipients": len(ids), "distinct_recipients": len(set(ids))}

        return wecom.app, wecom_counts
    raise SystemExit(f"no fake vendor for adapter {adapter!r} ({', '.join(ADAPTERS)})")


def with_stats(app: App, counts: Callable[[], dict[str, int]]) -> App:
    """`app`, plus `GET /_bench/stats`: the counts and this process's CPU seconds, as JSON."""
    from starlette.responses import JSONResponse

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            response = JSONResponse({**counts(), "cpu_seconds": time.process_time()})
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return serve


async def serve(adapter: str) -> None:
    """Serve the fake until uvicorn is told to stop (SIGTERM, SIGINT)."""
    import uvicorn

    app, counts = vendor_app(adapter)
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on accepted connections (with proto 0 it does not,
    # and every answer written in two parts waits ~40 ms for a delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))  # a free port, known before uvicorn listens: no race with another process
    server = uvicorn.Server(uvicorn.Config(with_stats(app, counts), log_level="warning", lifespan="off",
                                          access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # it failed to start: let its error out
            raise SystemExit(f"fake {adapter} stopped before it started")
        await asyncio.sleep(0.01)
    print(f"ready http://{HOST}:{sock.getsockname()[1]}", flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_vendor",
                                     description="serve one fake vendor on 127.0.0.1 for bench.dispatch")
    parser.add_argument("adapter", choices=ADAPTERS)
    asyncio.run(serve(parser.parse_args().adapter))


if __name__ == "__main__":
    main()
