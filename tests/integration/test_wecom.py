"""The `wecom` adapter against the fake WeCom API: task shape, grouping, tokens, codes, lookup, receipts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from daemonkit import seed, touch_row
from scenario import AT, SHANGHAI, add_member

from channels.base import ChannelContext, Outcome, OutcomeKind, Touch
from channels.fakes.server import FakeServer, free_port
from channels.fakes.wecom import WecomFake
from channels.wechat.wecom import _CODES, WecomChannel, WecomSettings
from engine.config import DispatchSettings
from engine.decide.contact_policy import ContactPolicies
from engine.grammar.policies import PolicySettings
from engine.ledger.token_store import LedgerTokenStore
from engine.run.dispatch import Dispatcher
from engine.store.connect import open_engine

K = OutcomeKind
SINCE = datetime(2024, 1, 1, tzinfo=UTC)


class _Current:
    """One server for the module; each test gets a fresh fake behind it (and the client ports it saw)."""

    fake: WecomFake
    ports: list[int]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.ports.append(scope["client"][1])
        await self.fake(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeServer, _Current]]:
    current = _Current()
    with FakeServer(current) as running:
        yield running, current


@pytest.fixture
def fake(server: tuple[FakeServer, _Current]) -> WecomFake:
    running, current = server
    current.fake = WecomFake(invalid_ids={"wm_gone"})
    current.ports = []
    current.fake.url = running.url  # type: ignore[attr-defined]
    return current.fake


def channel(fake: WecomFake, store: Any = None, **overrides: Any) -> WecomChannel:
    values: dict[str, Any] = {"adapter": "wecom", "corp_id": fake.corp_id, "secret": fake.secret,
                              "base_url": fake.url, "timeout": 2.0}  # type: ignore[attr-defined]
    values.update(overrides)
    tokens = None if store is None else LedgerTokenStore(store)
    return WecomChannel("wecom", WecomSettings(**values), ChannelContext(store=tokens))


def touch(n: int, text: str = "春季会员日，全场 8 折", staff: str = "guide_li", external: str | None = None,
          **message: Any) -> Touch:
    return Touch(touch_id=f"t{n:04d}", playbook="spring", member_id=f"m{n}", channel="wecom", occurrence="o1",
                 message={"text": text, **message},
                 address={"wecom_external_userid": external or f"wm_ext_{n}", "wecom_staff_userid": staff})


def send(ch: WecomChannel, touches: list[Touch]) -> dict[str, Outcome]:
    return {o.touch_id: o for o in asyncio.run(ch.send(touches))}


def test_send__arrives_with_the_documented_shape(fake: WecomFake) -> None:
    """One touch becomes a single-chat task from the member's staff member, and `sent` carries the msgid."""
    out = send(channel(fake), [touch(1)])
    assert fake.received == [{"chat_type": "single", "external_userid": ["wm_ext_1"], "sender": "guide_li",
                              "text": {"content": "春季会员日，全场 8 折"}}]
    assert out["t0001"].kind == K.sent
    assert out["t0001"].vendor_id in fake.tasks


def test_send__identical_text_same_staff_is_one_task(fake: WecomFake) -> None:
    """Identical texts to one staff member's customers share a task; another staff member gets their own."""
    touches = [touch(n) for n in range(1, 6)] + [touch(6, staff="guide_wang")]
    out = send(channel(fake), touches)
    assert len(fake.received) == 2
    assert sorted(len(b["external_userid"]) for b in fake.received) == [1, 5]
    assert len({out[t.touch_id].vendor_id for t in touches[:5]}) == 1
    assert all(o.kind == K.sent for o in out.values())


def test_send__personalised_text_is_one_task_per_member(fake: WecomFake) -> None:
    """A text that names the member makes one task per member, as expected."""
    out = send(channel(fake), [touch(n, text=f"王{n}您好，会员日 8 折") for n in range(1, 4)])
    assert len(fake.received) == 3
    assert len({o.vendor_id for o in out.values()}) == 3


def test_send__tasks_hold_at_most_max_recipients(fake: WecomFake) -> None:
    """A group larger than `max_recipients` is split into several tasks."""
    send(channel(fake, max_recipients=2), [touch(n) for n in range(1, 6)])
    assert [len(b["external_userid"]) for b in fake.received] == [2, 2, 1]


def test_send__fail_list_fails_only_those_members(fake: WecomFake) -> None:
    """An id in the task's fail_list is failed_member; the others in the task are sent."""
    out = send(channel(fake), [touch(1), touch(2, external="wm_gone")])
    assert out["t0001"].kind == K.sent
    assert out["t0002"].kind == K.failed_member


def test_send__not_a_friend_in_a_group_fails_only_that_member(fake: WecomFake) -> None:
    """84061 refuses the whole task, so each member is tried alone: only the bad one is failed_member."""
    fake.strangers.add("wm_ext_2")
    out = send(channel(fake), [touch(1), touch(2), touch(3)])
    assert out["t0002"].kind == K.failed_member and out["t0002"].code == "84061"
    assert out["t0001"].kind == out["t0003"].kind == K.sent
    assert [b["external_userid"] for b in fake.received] == [["wm_ext_1"], ["wm_ext_3"]]


def test_connections__kept_between_batches_while_open_and_closed_by_aclose(
        fake: WecomFake, server: tuple[FakeServer, _Current]) -> None:
    """Opened (as the dispatcher does), the adapter makes the token call and two batches' tasks over one
    connection and closes it on aclose; not opened, each call has a connection of its own."""
    ports = server[1].ports

    async def opened(ch: WecomChannel) -> None:
        ch.open()
        try:
            await ch.send([touch(1)])
            await ch.send([touch(2, staff="guide_wang")])
        finally:
            await ch.aclose()

    ch = channel(fake)
    asyncio.run(opened(ch))
    assert len(ports) == 3 and len(set(ports)) == 1
    assert ch.http._idle == []
    ports.clear()
    alone = channel(fake)
    send(alone, [touch(3)])
    send(alone, [touch(4)])
    assert len(ports) == 3 and len(set(ports)) == 3  # a token call and a task, then a task


def test_dispatch__a_claimed_batch_shares_tasks_across_its_send_calls(fake: WecomFake, db_url: str) -> None:
    """Touches for one staff member with one text are put side by side before a claimed batch is cut
    into send calls of `batch_size`: six touches alternating between two guides, in calls of two,
    make four tasks (A A | A B | B B), not six, and each touch is sent once."""
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            for i in range(6):
                add_member(conn, f"M{i}", wecom_external_userid=f"wm_ext_{i}",
                           wecom_staff_userid="guide_a" if i % 2 == 0 else "guide_b")
        seed(engine, *(touch_row("p", f"M{i}", "o", "queued", AT, channel="wecom", message={"text": "会员日"},
                                 decided_at=AT + timedelta(seconds=i)) for i in range(6)))
        ch = channel(fake, store=engine, batch_size=2)
        dispatcher = Dispatcher(engine, DispatchSettings(), {"wecom": ch}, {"wecom": ch.settings},
                                ContactPolicies.of([], PolicySettings(frequency=[], quiet_hours={})), SHANGHAI, "me",
                                clock=lambda: AT)
        counts = asyncio.run(dispatcher.drain())
        assert counts == {"sent": 6}
        assert sorted((b["sender"], sorted(b["external_userid"])) for b in fake.received) == [
            ("guide_a", ["wm_ext_0", "wm_ext_2"]), ("guide_a", ["wm_ext_4"]),
            ("guide_b", ["wm_ext_1"]), ("guide_b", ["wm_ext_3", "wm_ext_5"])]
    finally:
        engine.dispose()


def test_token__expired_mid_run_refreshes_exactly_once(fake: WecomFake) -> None:
    """A token expired between two sends: one gettoken refresh, and the call succeeds."""
    ch = channel(fake)
    send(ch, [touch(1)])
    fake.expire_tokens()
    out = send(ch, [touch(2)])
    assert out["t0002"].kind == K.sent
    assert fake.gettoken_calls == 2
    assert len(fake.received) == 2


def test_token__second_rejection_is_not_refreshed_again(fake: WecomFake) -> None:
    """A call refused for its token twice in a row refreshes once only, then gives up (retry later)."""
    fake.fail("add_msg_template", 42001, times=2)
    out = send(channel(fake), [touch(1)])
    assert out["t0001"].kind == K.retry
    assert fake.gettoken_calls == 2


def test_token__wrong_secret_is_channel_fatal(fake: WecomFake) -> None:
    """A wrong secret gets 40001 at gettoken: fatal for the channel, nothing sent."""
    out = send(channel(fake, secret="wrong"), [touch(1)])
    assert out["t0001"].kind == K.channel_fatal and out["t0001"].code == "40001"
    assert fake.received == []


def test_token__shared_by_replicas_through_the_database(fake: WecomFake, db_url: str) -> None:
    """Two adapters on one database use one token; a refresh after a stale token keeps the fresh one."""
    engine_a, engine_b = open_engine(db_url), open_engine(db_url)
    try:
        a, b = channel(fake, store=engine_a), channel(fake, store=engine_b)
        send(a, [touch(1)])
        send(b, [touch(2)])
        assert fake.gettoken_calls == 1
        stale = asyncio.run(b.tokens.get())
        fake.expire_tokens()
        assert send(a, [touch(3)])["t0003"].kind == K.sent  # a refreshes
        assert fake.gettoken_calls == 2
        fresh = asyncio.run(a.tokens.get())
        assert fresh != stale
        assert asyncio.run(b.tokens.refresh_after(stale)) == fresh  # b's late refresh keeps a's token
        assert send(b, [touch(4)])["t0004"].kind == K.sent
        assert fake.gettoken_calls == 2
    finally:
        engine_a.dispose()
        engine_b.dispose()


def test_token__kept_in_memory_between_reads_of_the_database(fake: WecomFake, db_url: str) -> None:
    """Fifty tasks in one send read the shared token from the database twice (before and after
    claiming the refresh), not once per task."""
    from sqlalchemy import event

    engine = open_engine(db_url)
    reads: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: reads.append(statement) if "vendor_tokens" in statement
                 and statement.lstrip().upper().startswith("SELECT") else None)
    try:
        out = send(channel(fake, store=engine), [touch(n, staff=f"guide_{n}") for n in range(50)])
        assert {o.kind for o in out.values()} == {K.sent} and len(fake.received) == 50
        assert fake.gettoken_calls == 1 and len(reads) == 2
    finally:
        engine.dispose()


def test_send__rate_limit_is_retry(fake: WecomFake) -> None:
    """45009 means the task was not created: retry later."""
    fake.fail("add_msg_template", 45009)
    out = send(channel(fake), [touch(1)])
    assert out["t0001"].kind == K.retry and out["t0001"].code == "45009"
    assert fake.received == []


@pytest.mark.parametrize(("code", "kind"), sorted(_CODES.items()))
def test_codes__each_code_has_its_outcome(fake: WecomFake, code: int, kind: OutcomeKind) -> None:
    """Every classified WeCom code, answered by the fake, gives its outcome kind."""
    fake.fail("add_msg_template", code, times=2)  # twice: token codes are retried once after a refresh
    out = send(channel(fake), [touch(1)])
    assert out["t0001"].kind == kind
    assert out["t0001"].code == str(code)


def test_codes__undocumented_code_is_unknown(fake: WecomFake) -> None:
    """A code nobody documented might have created the task: unknown, settled by lookup."""
    fake.fail("add_msg_template", 99999)
    assert send(channel(fake), [touch(1)])["t0001"].kind == K.unknown


def test_transport__connection_refused_is_retry() -> None:
    """Nothing listens: the request never left, so it may be sent again."""
    settings = WecomSettings(adapter="wecom", corp_id="c", secret="s", base_url=f"http://127.0.0.1:{free_port()}")
    out = asyncio.run(WecomChannel("wecom", settings).send([touch(1)]))
    assert out[0].kind == K.retry


def test_transport__slow_answer_is_unknown(fake: WecomFake) -> None:
    """A timeout after the request was written is unknown, never retry."""
    ch = channel(fake, timeout=0.3)
    asyncio.run(ch.tokens.get())
    fake.delay_s = 0.6
    assert send(ch, [touch(1)])["t0001"].kind == K.unknown


def test_transport__dropped_connection_is_unknown_and_lookup_settles_it(fake: WecomFake) -> None:
    """The fake creates the task, then cuts the connection: unknown; lookup finds the task; nothing resent."""
    ch = channel(fake)
    fake.drop("add_msg_template")
    sent = [touch(1), touch(2)]
    out = send(ch, sent)
    assert {o.kind for o in out.values()} == {K.unknown}
    assert len(fake.tasks) == 1
    msgid = next(iter(fake.tasks))
    found = {o.touch_id: o for o in asyncio.run(ch.lookup([*sent, touch(3), touch(4, text="另一条")]))}
    assert found["t0001"].kind == K.sent and found["t0001"].vendor_id == msgid
    assert found["t0002"].kind == K.sent
    assert found["t0003"].kind == K.not_sent  # same text, not a recipient
    assert found["t0004"].kind == K.not_sent  # no task with that text
    assert len(fake.received) == 1


def test_lookup__listing_failure_is_unknown(fake: WecomFake) -> None:
    """When the task list cannot be read, lookup says unknown, never not_sent."""
    ch = channel(fake)
    fake.fail("get_groupmsg_list_v2", -1)
    assert asyncio.run(ch.lookup([touch(1)]))[0].kind == K.unknown


def test_pull__receipts_after_the_staff_member_confirms(fake: WecomFake) -> None:
    """No receipt before the staff member sends the task; then delivered, not a friend, over the cap."""
    ch = channel(fake)
    touches = [touch(1), touch(2), touch(3)]
    msgid = send(ch, touches)["t0001"].vendor_id
    pulled = [touch(n, vendor_id=msgid) for n in (1, 2, 3)]
    assert asyncio.run(ch.pull(pulled, since=SINCE)).receipts == []
    assert msgid is not None
    fake.confirm(msgid, "guide_li", {"wm_ext_2": 2, "wm_ext_3": 3})
    receipts = {r.touch_id: r for r in asyncio.run(ch.pull(pulled, since=SINCE)).receipts}
    assert receipts["t0001"].delivered and receipts["t0001"].status == "1"
    assert receipts["t0001"].at is not None
    assert not receipts["t0002"].delivered and receipts["t0002"].status == "2"
    assert not receipts["t0003"].delivered and receipts["t0003"].status == "3"
    assert all(r.vendor_id == msgid for r in receipts.values())


def test_logs__no_token_or_secret(fake: WecomFake) -> None:
    """The adapter's log lines carry neither the token nor the secret nor a full msgid."""
    from structlog.testing import capture_logs

    ch = channel(fake)
    with capture_logs() as logs:
        out = send(ch, [touch(1)])
        fake.expire_tokens()
        send(ch, [touch(2)])
    text = repr(logs)
    assert fake.secret not in text
    assert all(token not in text for token in fake.tokens)
    assert str(out["t0001"].vendor_id) not in text


def test_protocol__is_a_channel_and_a_receipt_source(fake: WecomFake) -> None:
    """The adapter satisfies both Protocols the engine uses."""
    from channels.base import Channel, ReceiptSource

    ch = channel(fake)
    assert isinstance(ch, Channel) and isinstance(ch, ReceiptSource)
