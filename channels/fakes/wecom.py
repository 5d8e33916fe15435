"""A fake WeCom customer-contact API (vendors.md §1): tokens, 1v1 tasks, their results.

`WecomFake(corp_id, secret).app` (or `make_app(...)`) is an ASGI app (serve it with `FakeServer`). It checks
`corpid`/`corpsecret` at `gettoken` (a wrong secret gets 40001), issues tokens that expire,
checks `access_token` on every call (missing 41001, unknown 40014, expired 42001),
validates `add_msg_template` bodies and keeps the tasks, and serves
`get_groupmsg_list_v2`, `get_groupmsg_task` and `get_groupmsg_send_result` with cursors.

Test hooks: `confirm(msgid, sender, statuses)` plays the staff member confirming a task;
`expire_tokens()`, `fail(api, code, times)`, `delay_s`, `drop(api)` (the request is
processed, then the connection is cut mid-answer); `gettoken_calls` and `received`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _Dropped(Exception):
    """Raised inside the server to cut a connection after the request was processed."""


@dataclass
class Task:
    msgid: str
    sender: str
    external_userid: list[str]
    text: str
    create_time: int
    member_status: int = 0  #: get_groupmsg_task status: 0 not sent, 2 sent
    results: dict[str, int] = field(default_factory=dict)  #: external id → send_list status
    send_time: int | None = None


def _page(rows: list[Any], body: dict[str, Any], default: int, most: int) -> tuple[list[Any], str]:
    start = int(body.get("cursor") or 0)
    limit = min(int(body.get("limit") or default), most)
    end = start + limit
    return rows[start:end], (str(end) if end < len(rows) else "")


class WecomFake:
    """State and failure switches of one fake corp."""

    def __init__(self, corp_id: str = "ww_test_corp", secret: str = "contact-secret", *, expires_in: int = 7200,
                 invalid_ids: set[str] | None = None, strangers: set[str] | None = None) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.expires_in = expires_in
        self.invalid_ids = set(invalid_ids or ())  #: come back in fail_list
        self.strangers = set(strangers or ())  #: not the sender's friends: the whole task is refused with 84061
        self.tokens: dict[str, float] = {}  #: token → expiry (time.time())
        self.gettoken_calls = 0
        self.received: list[dict[str, Any]] = []  #: add_msg_template bodies accepted
        self.calls: list[str] = []  #: API names called, in order
        self.tasks: dict[str, Task] = {}
        self.failures: dict[str, list[int]] = {}
        self.drops: dict[str, int] = {}
        self.delay_s = 0.0
        self._ids = itertools.count(1)
        routes = [Route("/cgi-bin/gettoken", self._gettoken, methods=["GET"])]
        for api, handler in (("add_msg_template", self._add), ("get_groupmsg_list_v2", self._list),
                             ("get_groupmsg_task", self._task), ("get_groupmsg_send_result", self._result)):
            routes.append(Route(f"/cgi-bin/externalcontact/{api}", self._endpoint(api, handler), methods=["POST"]))
        self._app = Starlette(routes=routes)

    # -- test hooks -------------------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (42001)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    def fail(self, api: str, code: int, times: int = 1) -> None:
        """The next `times` calls of `api` ("gettoken", "add_msg_template", …) answer `code`."""
        self.failures.setdefault(api, []).extend([code] * times)

    def drop(self, api: str, times: int = 1) -> None:
        """The next `times` calls of `api` are processed, then the connection is cut mid-answer."""
        self.drops[api] = self.drops.get(api, 0) + times

    def confirm(self, msgid: str, sender: str, statuses: dict[str, int] | None = None) -> None:
        """The staff member `sender` sends task `msgid`: recipients become 1 (sent) unless `statuses`
        says 2 (not a friend) or 3 (over the receive cap)."""
        task = self.tasks[msgid]
        assert task.sender == sender, "only the task's sender can confirm it"
        task.member_status = 2
        task.send_time = int(time.time())
        for external in task.results:
            task.results[external] = (statuses or {}).get(external, 1)

    # -- ASGI ---------------------------------------------------------------------------------------------
    @property
    def app(self) -> WecomFake:
        """The ASGI app to serve (the fake itself: a Starlette app behind the failure switches)."""
        return self

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        api = str(scope["path"]).rsplit("/", 1)[-1]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.drops.get(api):
            await self._app(scope, receive, send)
            return
        self.drops[api] -= 1

        async def cut(message: Message) -> None:
            if message["type"] == "http.response.body":
                body = bytes(message.get("body", b""))
                await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                raise _Dropped(api)
            await send(message)

        try:
            await self._app(scope, receive, cut)
        except _Dropped:
            raise ConnectionResetError(f"fake WeCom dropped {api}") from None

    # -- handlers ----------------------------------------------------------------------------------------
    def _injected(self, api: str) -> JSONResponse | None:
        queue = self.failures.get(api)
        if queue:
            code = queue.pop(0)
            return JSONResponse({"errcode": code, "errmsg": f"injected {code}"})
        return None

    async def _gettoken(self, request: Request) -> JSONResponse:
        self.gettoken_calls += 1
        self.calls.append("gettoken")
        injected = self._injected("gettoken")
        if injected is not None:
            return injected
        if request.query_params.get("corpid") != self.corp_id:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
        if request.query_params.get("corpsecret") != self.secret:
            return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.time() + self.expires_in
        return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in})

    def _endpoint(self, api: str, handler: Callable[[dict[str, Any]], dict[str, Any]]
                  ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            self.calls.append(api)
            token = request.query_params.get("access_token")
            if not token:
                return JSONResponse({"errcode": 41001, "errmsg": "access_token missing"})
            if token not in self.tokens:
                return JSONResponse({"errcode": 40014, "errmsg": "invalid access_token"})
            if self.tokens[token] <= time.time():
                return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
            injected = self._injected(api)
            if injected is not None:
                return injected
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
            if not isinstance(body, dict):
                return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
            return JSONResponse(handler(body))

        return endpoint

    def _add(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("external_userid")
        text = (body.get("text") or {}).get("content") if isinstance(body.get("text"), dict) else None
        if body.get("chat_type", "single") != "single":
            return {"errcode": 40035, "errmsg": "this fake serves chat_type single only"}
        if not isinstance(body.get("sender"), str) or not body["sender"]:
            return {"errcode": 40003, "errmsg": "invalid sender userid"}
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            return {"errcode": 40035, "errmsg": "invalid external_userid list"}
        if len(ids) > 10000:
            return {"errcode": 40035, "errmsg": "more than 10000 external_userid"}
        if not isinstance(text, str) or not text:
            return {"errcode": 44004, "errmsg": "text content empty"}
        if len(text.encode()) > 4000:
            return {"errcode": 45002, "errmsg": "content size out of limit"}
        if set(body) - {"chat_type", "external_userid", "sender", "text", "attachments", "allow_select"}:
            return {"errcode": 40035, "errmsg": "unknown field"}
        if self.strangers & set(ids):
            return {"errcode": 84061, "errmsg": "not external contact", "fail_list": []}
        self.received.append(body)
        good = [i for i in ids if i not in self.invalid_ids]
        if not good:
            return {"errcode": 40096, "errmsg": "invalid external userid", "fail_list": []}
        msgid = f"msg{next(self._ids):04d}{secrets.token_hex(4)}"
        self.tasks[msgid] = Task(msgid, body["sender"], good, text, int(time.time()),
                                 results=dict.fromkeys(good, 0))
        return {"errcode": 0, "errmsg": "ok", "fail_list": [i for i in ids if i in self.invalid_ids], "msgid": msgid}

    def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("chat_type", "single") != "single":
            return {"errcode": 0, "errmsg": "ok", "next_cursor": "", "group_msg_list": []}
        start, end = int(body.get("start_time", 0)), int(body.get("end_time", 0))
        if end < start or end - start > 31 * 86400:
            return {"errcode": 40058, "errmsg": "invalid time window"}
        rows = [{"msgid": t.msgid, "create_time": str(t.create_time), "create_type": 0, "text": {"content": t.text}}
                for t in self.tasks.values() if start <= t.create_time <= end]  # API tasks carry no creator
        page, cursor = _page(rows, body, 50, 100)
        return {"errcode": 0, "errmsg": "ok", "next_cursor": cursor, "group_msg_list": page}

    def _task(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(str(body.get("msgid")))
        if task is None:
            return {"errcode": 40035, "errmsg": "invalid msgid"}
        row: dict[str, Any] = {"userid": task.sender, "status": task.member_status}
        if task.send_time is not None:
            row["send_time"] = task.send_time
        page, cursor = _page([row], body, 500, 1000)
        return {"errcode": 0, "errmsg": "ok", "next_cursor": cursor, "task_list": page}

    def _result(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(str(body.get("msgid")))
        if task is None:
            return {"errcode": 40035, "errmsg": "invalid msgid"}
        rows: list[dict[str, Any]] = []
        if body.get("userid") == task.sender:
            for external, status in task.results.items():
                row: dict[str, Any] = {"external_userid": external, "userid": task.sender, "status": status}
                if status == 1:
                    row["send_time"] = task.send_time
                rows.append(row)
        page, cursor = _page(rows, body, 500, 1000)
        return {"errcode": 0, "errmsg": "ok", "next_cursor": cursor, "send_list": page}


def make_app(corp_id: str = "ww_test_corp", secret: str = "contact-secret", **options: Any) -> WecomFake:
    """A fresh fake corp; it is its own ASGI app (`siyu fakes` can serve it)."""
    return WecomFake(corp_id, secret, **options)
