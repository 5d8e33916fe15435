"""The one HTTP server's limits, met on real loopback sockets: huge and slow bodies, slow or
silent clients, floods of idle connections, accept() out of file descriptors, and app errors."""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from structlog.testing import capture_logs

from engine.run.http_server import (
    VENDOR_BODY_CAP,
    LimitedServer,
    http_server,
    raise_open_files_limit,
    read_body,
)

ROOT = Path(__file__).resolve().parents[2]
TWO_MB = 2 * 1_048_576


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await read_body(request, max_bytes=VENDOR_BODY_CAP))))


async def _echo_quick(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await read_body(request, max_bytes=VENDOR_BODY_CAP, deadline_s=0.5))))


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(1)
    return PlainTextResponse("late")


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("token=abc123secret")


APP = Starlette(routes=[Route("/echo", _echo, methods=["POST"]), Route("/echo-quick", _echo_quick, methods=["POST"]),
                        Route("/slow", _slow), Route("/boom", _boom)])


@contextmanager
def _serving(app: Any = APP, **limits: Any) -> Iterator[tuple[LimitedServer, int]]:
    """`app` behind http_server on a free loopback port, in a thread of its own."""
    server = http_server(app, "127.0.0.1:0", timedelta(seconds=1), **limits)
    thread = threading.Thread(target=server.run, name="http-limits", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer ends it too)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_http_limits__declared_body_over_the_cap_is_413_before_it_is_read() -> None:
    """A POST declaring 2 MB on a 1 MB route is answered 413 on its head alone, and the connection closed."""
    with _serving() as (_server, port), _connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % TWO_MB)
        response = _read_until_closed(sock)
    assert _status(response) == 413
    assert b"body larger than 1048576 bytes" in response


def test_http_limits__chunked_body_over_the_cap_is_413() -> None:
    """A chunked POST with no length up front is refused 413 once its bytes pass 1 MB: the client never
    sends the last chunk, so the answer cannot have waited for the end of the body."""
    chunk = b"x" * 65536
    sent = 0
    with _serving() as (_server, port), _connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < TWO_MB and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the client was still sending
        response = _read_until_closed(sock)
    assert _status(response) == 413


def test_http_limits__chunked_body_under_the_cap_is_read_whole() -> None:
    """A 512 KB chunked POST reaches the handler whole."""
    with _serving() as (_server, port), httpx.Client() as client:
        response = client.post(f"http://127.0.0.1:{port}/echo", content=iter([b"y" * 65536] * 8))
    assert response.status_code == 200
    assert response.text == str(8 * 65536)


def test_http_limits__body_trickling_past_its_deadline_is_408() -> None:
    """A body that has sent 3 of its 10 bytes when the route's deadline passes is answered 408."""
    with _serving() as (_server, port), _connect(port) as sock:
        sock.sendall(b"POST /echo-quick HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        response = _read_until_closed(sock)
    assert _status(response) == 408


def test_http_limits__half_a_request_line_is_closed_after_the_head_timeout() -> None:
    """A client that sends half a request line and waits (slowloris) is disconnected after head_timeout."""
    with _serving(head_timeout_s=0.5) as (_server, port), _connect(port) as sock:
        sock.sendall(b"POST /echo HT")
        assert _read_until_closed(sock) == b""


def test_http_limits__a_connection_that_sends_nothing_is_closed_after_the_head_timeout() -> None:
    """A connection that never sends a byte is closed after head_timeout."""
    with _serving(head_timeout_s=0.5) as (_server, port), _connect(port) as sock:
        assert _read_until_closed(sock) == b""


def test_http_limits__a_slow_second_head_on_a_kept_connection_is_closed() -> None:
    """After a kept-alive answer, a second request head that stalls midway is closed after head_timeout,
    well before the 5 s keep-alive would have."""
    with _serving(head_timeout_s=0.5, keep_alive_s=5) as (_server, port), _connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        first = b""
        while not first.endswith(b"\r\n\r\n2"):  # the whole first answer: its body is the length, 2
            first += sock.recv(65536)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHo")
        sock.settimeout(3)
        rest = _read_until_closed(sock)
    assert _status(first) == 200
    assert rest == b""


def test_http_limits__a_handler_slower_than_the_head_timeout_still_answers() -> None:
    """The head timeout ends with the head: a handler taking 1 s answers with head_timeout 0.5 s."""
    with _serving(head_timeout_s=0.5) as (_server, port), httpx.Client() as client:
        response = client.get(f"http://127.0.0.1:{port}/slow")
    assert (response.status_code, response.text) == (200, "late")


def test_http_limits__malformed_request_is_400_without_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A request line that is not HTTP is answered 400, and nothing prints a traceback."""
    with _serving() as (_server, port), _connect(port) as sock:
        sock.sendall(b"\x16\x03\x01 GARBAGE\r\n\r\n")
        response = _read_until_closed(sock)
    assert _status(response) == 400
    assert "Traceback" not in capfd.readouterr().err


def test_http_limits__app_exception_is_500_and_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """An exception in a route is answered 500 and logged once as http.error with the route and the type only:
    no traceback, no path, query or exception text (they may carry secrets)."""
    with capture_logs() as logs, _serving() as (_server, port), httpx.Client() as client:
        response = client.get(f"http://127.0.0.1:{port}/boom?token=qs-secret")
    assert response.status_code == 500
    assert logs == [{"event": "http.error", "log_level": "error", "route": "/boom", "method": "GET",
                     "error": "RuntimeError"}]
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "secret" not in err


def test_http_limits__bare_asgi_app_exception_is_500_and_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """An ASGI app without Starlette's error middleware that raises before answering still gets a 500."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("13812345678")

    with capture_logs() as logs, _serving(app) as (_server, port), httpx.Client() as client:
        response = client.get(f"http://127.0.0.1:{port}/anything")
    assert response.status_code == 500
    assert [(e["event"], e["error"]) for e in logs] == [("http.error", "KeyError")]
    assert "Traceback" not in capfd.readouterr().err


@contextmanager
def _soft_open_files(soft: int) -> Iterator[None]:
    """This process's open-files soft limit set to `soft` for the block, then put back."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_http_limits__open_files_soft_limit_is_raised_to_the_hard_limit() -> None:
    """From a soft limit of 256, raise_open_files_limit sets the hard limit (or 65,536 when unlimited) and logs it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 65_536 if hard == resource.RLIM_INFINITY else hard
    with _soft_open_files(256), capture_logs() as logs:
        assert raise_open_files_limit() == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected
    assert [(e["event"], e["soft"]) for e in logs] == [("http.open_files", expected)]


IDLE = 1_100


def test_http_limits__a_flood_of_idle_connections_does_not_stop_a_real_request() -> None:
    """At the usual 1,024 soft limit raised at start, 1,100 idle connections leave a real request answered."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = 2 * IDLE + 200  # both ends live in this process, plus what pytest holds
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-files hard limit {hard} is below the {needed} this test needs in one process")
    with _soft_open_files(1024), ExitStack() as idle:
        raise_open_files_limit()
        server, port = idle.enter_context(_serving())
        for _ in range(IDLE):
            idle.enter_context(_connect(port))
        deadline = time.monotonic() + 10
        while len(server.server_state.connections) < IDLE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.server_state.connections) == IDLE
        with httpx.Client() as client:
            response = client.post(f"http://127.0.0.1:{port}/echo", content=b"receipt")
    assert (response.status_code, response.text) == (200, "7")


#: A daemon-like process with a low open-files limit serving a trivial app; argv: soft limit, whether
#: to use up every other descriptor, the warnings object to watch and how many occurrences to wait for.
_LOW_LIMIT_SERVER = """
import asyncio, json, os, resource, sys
from datetime import timedelta
from engine.logs import configure
from engine.run.http_server import http_server

soft, hoard, watched, wanted = int(sys.argv[1]), sys.argv[2] == "hoard", sys.argv[3], int(sys.argv[4])
configure("json")

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    server = http_server(app, "127.0.0.1:0", timedelta(seconds=1))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    held = []
    while hoard:
        try:
            held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            break
    print(json.dumps({"port": port, "backlog": server.config.backlog}), flush=True)
    warnings = getattr(server.config, watched)
    for _ in range(1000):  # at most 10 s
        if warnings.count >= wanted:
            break
        await asyncio.sleep(0.01)
    for fd in held:
        os.close(fd)
    print(json.dumps({"occurrences": warnings.count}), flush=True)
    server.should_exit = True
    await serving

asyncio.run(main())
"""


def _low_limit_server(soft: int, hoard: bool, watched: str, wanted: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _LOW_LIMIT_SERVER, str(soft), "hoard" if hoard else "-",
                             watched, str(wanted)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _log_while_connected(child: subprocess.Popen[str], port: int, connections: int) -> tuple[list[dict[str, Any]], str]:
    """Hold `connections` to the child server until it exits; its JSON log lines and its stderr."""
    clients = [_connect(port) for _ in range(connections)]
    try:
        out, err = child.communicate(timeout=30)
    finally:
        for sock in clients:
            sock.close()
    return [json.loads(line) for line in out.splitlines()], err


def test_http_limits__accept_out_of_file_descriptors_logs_one_line_not_tracebacks() -> None:
    """With every descriptor in use, each accept() fails (EMFILE) through two of asyncio's retry rounds,
    thousands of failures in all: the log holds one http.accept_failed line and no traceback."""
    child = _low_limit_server(64, hoard=True, watched="accept_failures", wanted="4097")
    assert child.stdout is not None
    started = json.loads(child.stdout.readline())
    assert started["backlog"] * 2 + 1 == 4097  # two full rounds of asyncio's accept loop
    lines, err = _log_while_connected(child, started["port"], 3)
    assert lines[-1]["occurrences"] >= 4097
    accept_lines = [line for line in lines if line.get("event") == "http.accept_failed"]
    assert len(accept_lines) == 1
    assert accept_lines[0]["error"] == "EMFILE"
    assert "Traceback" not in err and "out of system resource" not in err
    assert child.returncode == 0


def test_http_limits__connections_over_the_limit_are_closed_at_once_with_one_line() -> None:
    """At a soft limit of 256 the server holds 204 connections (80 %); the 16 beyond are closed as they
    arrive, and logged once as http.over_capacity."""
    child = _low_limit_server(256, hoard=False, watched="over_capacity", wanted="16")
    assert child.stdout is not None
    port = json.loads(child.stdout.readline())["port"]
    lines, err = _log_while_connected(child, port, 220)
    assert lines[-1]["occurrences"] == 16
    over = [line for line in lines if line.get("event") == "http.over_capacity"]
    assert [(line["connections"], line["limit"]) for line in over] == [(205, 204)]
    assert "Traceback" not in err


def test_http_limits__the_unit_file_gives_the_daemon_open_files_and_caps_its_memory() -> None:
    """packaging/siyu.service sets LimitNOFILE=65536 (what raise_open_files_limit raises to) and a MemoryMax backstop."""
    directives = [line.strip() for line in (ROOT / "packaging" / "siyu.service").read_text().splitlines()]
    assert "LimitNOFILE=65536" in directives
    assert "MemoryMax=2G" in directives
