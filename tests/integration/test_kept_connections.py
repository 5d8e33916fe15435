"""Every vendor adapter keeps its HTTP connections between batches while a dispatcher has it open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from channels import ADAPTERS
from channels.aliyun.outbound_bot import AliyunOutboundBotChannel, AliyunOutboundBotSettings
from channels.aliyun.voice import AliyunVoiceChannel, AliyunVoiceSettings
from channels.base import KeepsConnections, OutcomeKind, Touch
from channels.fakes.aliyun_outbound_bot import BotFake, outbound_bot_app
from channels.fakes.aliyun_voice import VoiceFake, aliyun_voice_app
from channels.fakes.server import FakeServer

KEY_ID, SECRET = "test-key-id", "test-key-secret"


class _Ports:
    """An ASGI app in front of a fake that notes the client port of every request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ports: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


def _touch(n: int) -> Touch:
    return Touch(touch_id=f"t{n:04d}", playbook="lapsed", member_id=f"m{n}", channel="ai_call",
                 occurrence="2024-06-01", message={"scenario": "lapsed_recall", "variables": {"name": "王女士"}},
                 address={"phone": f"1380013{n:04d}"})


def _voice(url: str) -> AliyunVoiceChannel:
    return AliyunVoiceChannel("ai_call", AliyunVoiceSettings.model_validate({
        "adapter": "aliyun_voice", "access_key_id": KEY_ID, "access_key_secret": SECRET, "base_url": url,
        "scenarios": {"lapsed_recall": {"tts_code": "TTS_100001"}}}))


def _bot(url: str) -> AliyunOutboundBotChannel:
    return AliyunOutboundBotChannel("ai_call", AliyunOutboundBotSettings.model_validate({
        "adapter": "aliyun_outbound_bot", "access_key_id": KEY_ID, "access_key_secret": SECRET,
        "instance_id": "inst-fake", "base_url": url,
        "scenarios": {"lapsed_recall": {"job_group_id": "jg-lapsed"}}}))


CASES: dict[str, tuple[Callable[[], Any], Callable[[str], Any]]] = {
    "aliyun_voice": (lambda: aliyun_voice_app(VoiceFake()), _voice),
    "aliyun_outbound_bot": (lambda: outbound_bot_app(BotFake()), _bot),
}


@pytest.fixture(params=sorted(CASES))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[_Ports, Any]]:
    app, channel = CASES[request.param]
    ports = _Ports(app())
    with FakeServer(ports) as server:
        yield ports, channel(server.url)


def test_adapters__every_vendor_adapter_can_keep_its_connections() -> None:
    """Each adapter that talks to a vendor over HTTP has open()/aclose(), so the dispatcher keeps its clients."""
    vendors = {name: cls for name, cls in ADAPTERS.items() if name not in ("log", "stub")}
    assert sorted(vendors) == ["aliyun_outbound_bot", "aliyun_sms", "aliyun_voice", "tencent_sms",
                               "wechat_template", "wecom"]
    assert [name for name, cls in vendors.items() if not issubclass(cls, KeepsConnections)] == []


def test_connections__kept_between_batches_while_open_and_closed_by_aclose(served: tuple[_Ports, Any]) -> None:
    """Opened, two batches one after the other go over one connection, closed by aclose; not opened,
    each batch has a connection of its own."""
    ports, channel = served

    async def opened() -> list[OutcomeKind]:
        channel.open()
        try:
            kinds = [o.kind for o in await channel.send([_touch(1)])]
            return kinds + [o.kind for o in await channel.send([_touch(2)])]
        finally:
            await channel.aclose()

    assert asyncio.run(opened()) == [OutcomeKind.sent, OutcomeKind.sent]
    assert len(ports.ports) == 2 and len(set(ports.ports)) == 1
    assert channel.http._idle == []
    ports.ports.clear()
    for n in (3, 4):
        [outcome] = asyncio.run(channel.send([_touch(n)]))
        assert outcome.kind == OutcomeKind.sent
    assert len(ports.ports) == 2 and len(set(ports.ports)) == 2
