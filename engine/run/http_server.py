"""The one HTTP server Siyu listens with (uvicorn on h11), and the limits every request meets.

`siyu run` serves the vendors' push callbacks with it, and any other endpoint Siyu opens must
too: a port on the internet meets slow clients, huge bodies and floods of idle connections
before it meets a vendor. What `http_server` sets up against them:

- a request head (request line and headers) must be complete `head_timeout_s` after the
  connection opens or after the previous response, else the connection is closed: a client
  that sends half a request line, or nothing, holds no file descriptor for long (slowloris);
- connections above `limit_concurrency`, 80 % of the open-files limit, are closed as soon as
  they are accepted, so the other 20 % stay free for the vendor sends and the database; the
  daemon raises that limit to the hard one at start (`raise_open_files_limit`);
- when accept() fails anyway (EMFILE), asyncio's traceback per failed accept (thousands a
  second: its accept loop goes on for the whole backlog) becomes one `http.accept_failed`
  warning a minute;
- an exception escaping the application is one `http.error` line (route, exception type:
  never the path, the query or the exception's text, which may carry secrets) and a 500;
- handlers read bodies with `read_body`: a cap per route group and a deadline, refused as
  413 / 408 / 400 (Starlette answers an HTTPException by itself).

Signals stay with the daemon: the server never takes SIGTERM or SIGINT for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import h11
import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.logs import log

#: Body caps per route group, in bytes. A vendor push is a few kilobytes; a whole batch of
#: receipts stays well under a megabyte.
VENDOR_BODY_CAP = 1_048_576
#: How long a handler waits for a whole body, however it trickles in.
BODY_DEADLINE_S = 30.0
#: The open-files soft limit asked for when the hard limit is unlimited (as in the unit file).
OPEN_FILES_WHEN_UNLIMITED = 65_536
#: The share of the open-files limit that connections may hold; the rest is for sends and the database.
CONNECTION_SHARE = 0.8
#: At most one warning of a kind (accept failures, connections over the limit) this often.
WARNING_EVERY_S = 60.0

_ACCEPT_OUT_OF_RESOURCE = "socket.accept() out of system resource"  # asyncio selector_events


class BodyRefused(HTTPException):
    """A request body Siyu will not read; Starlette answers it with `status_code` and closes."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(status_code, detail, headers={"Connection": "close"})


class BodyTooLarge(BodyRefused):
    """The body is larger than its route group's cap (413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"body larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class BodyTimeout(BodyRefused):
    """The body did not arrive in time (408)."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__(408, f"body not complete within {deadline_s:g} s")
        self.deadline_s = deadline_s


class BodyIncomplete(BodyRefused):
    """The client went away before the end of the body (400)."""

    def __init__(self) -> None:
        super().__init__(400, "body ended early")


async def read_body(request: Request, *, max_bytes: int, deadline_s: float = BODY_DEADLINE_S) -> bytes:
    """The whole body of `request`, at most `max_bytes` of it, within `deadline_s`.

    A declared Content-Length above the cap is refused before a byte is read; otherwise the
    bytes are counted as they stream in (chunked bodies have no length up front). Raises
    `BodyTooLarge`, `BodyTimeout` or `BodyIncomplete`, which Starlette answers by itself.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(deadline_s) from None
    except ClientDisconnect:
        raise BodyIncomplete from None
    return b"".join(chunks)


def _soft_open_files() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OPEN_FILES_WHEN_UNLIMITED if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (`OPEN_FILES_WHEN_UNLIMITED` if that is
    unlimited) and return the soft limit in effect, logged once as `http.open_files`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # a kernel ceiling (fs.nr_open) below the hard limit
            log.warning("http.open_files_not_raised", soft=soft, hard=hard, error=type(exc).__name__)
    in_effect = _soft_open_files()
    log.info("http.open_files", soft=in_effect, hard=None if hard == resource.RLIM_INFINITY else hard)
    return in_effect


class _Throttled:
    """One warning line per `every_s` at most; `count` is every occurrence, logged or not."""

    def __init__(self, event: str, every_s: float = WARNING_EVERY_S) -> None:
        self.event = event
        self.every_s = every_s
        self.count = 0
        self._held_back = 0
        self._last: float | None = None

    def warn(self, **fields: Any) -> None:
        self.count += 1
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            self._held_back += 1
            return
        log.warning(self.event, held_back=self._held_back, **fields)
        self._last, self._held_back = now, 0


class _LimitedConfig(uvicorn.Config):
    """uvicorn's config plus what the protocol below needs: the head timeout and its warnings."""

    def __init__(self, app: ASGIApp, *, head_timeout_s: float, **settings: Any) -> None:
        super().__init__(app, **settings)
        self.head_timeout_s = head_timeout_s
        self.over_capacity = _Throttled("http.over_capacity")
        self.accept_failures = _Throttled("http.accept_failed")


class _HeadTimeoutProtocol(H11Protocol):
    """h11 that closes a connection whose request head is not complete in time, and a
    connection accepted above the concurrency limit (its file descriptor is worth more free)."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.head_timeout_s = config.head_timeout_s if isinstance(config, _LimitedConfig) else 10.0
        self.over_capacity = config.over_capacity if isinstance(config, _LimitedConfig) else None
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            if self.over_capacity is not None:
                self.over_capacity.warn(connections=len(self.connections), limit=self.limit_concurrency)
            transport.abort()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is None and self.conn.their_state is h11.IDLE:
            self._await_head()  # a new request begins after a kept-alive response
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self.head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_done(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _ContainedErrors:
    """ASGI middleware: an exception from the app is one `http.error` line and a 500, not a
    traceback (Starlette has usually sent its 500 already, then re-raises for the server)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception as exc:  # noqa: BLE001 - the backstop: handlers answer what they expect themselves
            route = scope.get("route")  # Starlette's router notes the matched route in the scope
            log.error("http.error", route=getattr(route, "path", None) or getattr(route, "name", None),
                      method=scope.get("method"), error=type(exc).__name__)
            if not started:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})


class LimitedServer(uvicorn.Server):
    """uvicorn's server with the daemon keeping the signals and accept failures logged sparingly."""

    config: _LimitedConfig

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception(previous))
        try:
            await super().serve(sockets)
        finally:
            loop.set_exception_handler(previous)

    def _loop_exception(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
                        ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        accept_failures = self.config.accept_failures

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == _ACCEPT_OUT_OF_RESOURCE:
                code = getattr(context.get("exception"), "errno", None)
                accept_failures.warn(error=errno.errorcode.get(code, "?") if code else "?",
                                     open_files=_soft_open_files())
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
        return handle


def http_server(app: ASGIApp, listen: str, grace: timedelta, *, head_timeout_s: float = 10.0,
                keep_alive_s: int = 5) -> LimitedServer:
    """A server for `app` on `listen` ("host:port"; port 0 picks a free one) with Siyu's limits.

    Told to exit (`should_exit = True`), it stops listening and gives the requests it has begun
    `grace` to finish. `limit_concurrency` is 80 % of the open-files soft limit at the time of
    the call, so the daemon calls `raise_open_files_limit()` first.
    """
    host, _, port = listen.rpartition(":")
    config = _LimitedConfig(
        _ContainedErrors(app), head_timeout_s=head_timeout_s, host=host.strip("[]"), port=int(port),
        http=_HeadTimeoutProtocol, log_level="warning", lifespan="off", access_log=False,
        timeout_keep_alive=keep_alive_s, limit_concurrency=max(1, int(_soft_open_files() * CONNECTION_SHARE)),
        timeout_graceful_shutdown=max(1, round(grace.total_seconds())))
    return LimitedServer(config)
