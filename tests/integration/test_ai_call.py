"""The ai_call adapters (aliyun_voice, aliyun_outbound_bot) against their loopback fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from channels.aliyun import outbound_bot as bot_mod
from channels.aliyun import voice as voice_mod
from channels.aliyun.outbound_bot import AliyunOutboundBotChannel, AliyunOutboundBotSettings
from channels.aliyun.voice import AliyunVoiceChannel, AliyunVoiceSettings, parse_voice_report
from channels.base import Channel, OutcomeKind, ReceiptSource, Touch
from channels.fakes.aliyun_outbound_bot import BotFake, JobResult, outbound_bot_app
from channels.fakes.aliyun_voice import CallResult, Failure, VoiceFake, aliyun_voice_app
from channels.fakes.server import FakeServer, free_port

KEY_ID, SECRET = "test-key-id", "test-key-secret"
PHONE, PHONE2 = "13800138000", "13900139000"
SINCE = datetime(2024, 1, 1, tzinfo=UTC)


def touch(touch_id: str = "t0000000000001", phone: str = PHONE, **variables: Any) -> Touch:
    return Touch(touch_id=touch_id, playbook="lapsed", member_id=f"m-{touch_id}", channel="ai_call",
                 occurrence="2024-06-01", message={"scenario": "lapsed_recall", "variables": variables or
                                                   {"name": "王女士", "discount": "8"}},
                 address={"phone": phone})


@pytest.fixture(scope="module")
def voice_server() -> Iterator[tuple[VoiceFake, FakeServer]]:
    fake = VoiceFake()
    with FakeServer(aliyun_voice_app(fake)) as server:
        yield fake, server


@pytest.fixture(scope="module")
def bot_server() -> Iterator[tuple[BotFake, FakeServer]]:
    fake = BotFake()
    with FakeServer(outbound_bot_app(fake)) as server:
        yield fake, server


@pytest.fixture
def voice(voice_server: tuple[VoiceFake, FakeServer]) -> VoiceFake:
    voice_server[0].reset()
    return voice_server[0]


@pytest.fixture
def bot(bot_server: tuple[BotFake, FakeServer]) -> BotFake:
    bot_server[0].reset()
    return bot_server[0]


def voice_channel(url: str, secret: str = SECRET, timeout: float = 5.0) -> AliyunVoiceChannel:
    settings = AliyunVoiceSettings.model_validate({
        "adapter": "aliyun_voice", "access_key_id": KEY_ID, "access_key_secret": secret, "base_url": url,
        "timeout": timeout,
        "scenarios": {"lapsed_recall": {"tts_code": "TTS_100001", "called_show_number": "057100000000"}}})
    return AliyunVoiceChannel("ai_call", settings)


def bot_channel(url: str, secret: str = SECRET, timeout: float = 5.0) -> AliyunOutboundBotChannel:
    settings = AliyunOutboundBotSettings.model_validate({
        "adapter": "aliyun_outbound_bot", "access_key_id": KEY_ID, "access_key_secret": secret,
        "instance_id": "inst-fake", "base_url": url, "timeout": timeout,
        "scenarios": {"lapsed_recall": {"job_group_id": "jg-lapsed", "script_id": "script-1"}}})
    return AliyunOutboundBotChannel("ai_call", settings)


# --- aliyun_voice ---------------------------------------------------------------------------------------

def test_voice__send_has_documented_shape(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """Each touch is one signed SingleCallByTts with one callee and OutId = touch id."""
    channel = voice_channel(voice_server[1].url)
    assert isinstance(channel, Channel) and isinstance(channel, ReceiptSource)
    outcomes = asyncio.run(channel.send([touch("t1"), touch("t2", PHONE2)]))
    assert sorted(o.kind for o in outcomes) == [OutcomeKind.sent] * 2
    assert all(o.vendor_id in voice.calls for o in outcomes)
    sent = sorted((c["params"] for c in voice.calls.values()), key=lambda p: p["OutId"])
    assert [(p["OutId"], p["CalledNumber"]) for p in sent] == [("t1", PHONE), ("t2", PHONE2)]
    assert sent[0]["Action"] == "SingleCallByTts" and sent[0]["Version"] == "2017-05-25"
    assert sent[0]["TtsCode"] == "TTS_100001" and sent[0]["CalledShowNumber"] == "057100000000"
    assert json.loads(sent[0]["TtsParam"]) == {"name": "王女士", "discount": "8"}


def test_voice__wrong_secret_is_channel_fatal(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """The fake checks the RPC signature; a wrong secret pauses the channel."""
    [outcome] = asyncio.run(voice_channel(voice_server[1].url, secret="wrong").send([touch()]))
    assert (outcome.kind, outcome.code) == (OutcomeKind.channel_fatal, "SignatureDoesNotMatch")
    assert voice.calls == {}


@pytest.mark.parametrize(("code", "kind"), sorted(voice_mod._CODES.items()))
def test_voice__each_code_has_its_outcome(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer],
                                          code: str, kind: OutcomeKind) -> None:
    """Every classified vendor code, answered by the fake, becomes its OutcomeKind."""
    voice.failures.append(Failure(code=code))
    [outcome] = asyncio.run(voice_channel(voice_server[1].url).send([touch()]))
    assert (outcome.kind, outcome.code) == (kind, code)


def test_voice__invalid_number_fails_member(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """The fake validates the callee; a malformed number is failed for the member."""
    [outcome] = asyncio.run(voice_channel(voice_server[1].url).send([touch(phone="12345")]))
    assert outcome.kind == OutcomeKind.failed_member


def test_voice__dropped_connection_is_unknown(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """Accepted then dropped: unknown, and lookup stays unknown (no query by OutId) until a push names it."""
    voice.failures.append(Failure(drop=True))
    channel = voice_channel(voice_server[1].url)
    [outcome] = asyncio.run(channel.send([touch()]))
    assert outcome.kind == OutcomeKind.unknown and len(voice.calls) == 1
    assert [o.kind for o in asyncio.run(channel.lookup([touch()]))] == [OutcomeKind.unknown]
    channel.note_receipts(parse_voice_report(json.dumps(voice.voice_report())))
    [settled] = asyncio.run(channel.lookup([touch()]))
    assert settled.kind == OutcomeKind.sent and settled.vendor_id in voice.calls


def test_voice__slow_answer_is_unknown(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """A read timeout after the request was written is unknown, never retry."""
    voice.failures.append(Failure(slow_s=1.0))
    [outcome] = asyncio.run(voice_channel(voice_server[1].url, timeout=0.2).send([touch()]))
    assert outcome.kind == OutcomeKind.unknown


def test_voice__refused_connection_is_retry() -> None:
    """Nothing listening: the request never left, so it may be sent again."""
    [outcome] = asyncio.run(voice_channel(f"http://127.0.0.1:{free_port()}").send([touch()]))
    assert outcome.kind == OutcomeKind.retry


def test_voice__parse_voice_report(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """The fake's VoiceReport push parses into receipts with call outcome details."""
    voice.outcomes[PHONE2] = CallResult(status_code="200003", duration_s=0, hangup_direction="机器")
    asyncio.run(voice_channel(voice_server[1].url).send([touch("t1"), touch("t2", PHONE2)]))
    receipts = {r.touch_id: r for r in parse_voice_report(json.dumps(voice.voice_report()).encode())}
    assert receipts["t1"].delivered and receipts["t1"].status == "200000"
    assert receipts["t1"].details["answered"] is True and receipts["t1"].details["duration_s"] == 23
    assert receipts["t1"].details["hangup_by"] == "user" and receipts["t1"].at is not None
    assert not receipts["t2"].delivered and receipts["t2"].details["answered"] is False
    assert receipts["t2"].details["hangup_by"] == "robot"
    assert voice_mod.VOICE_REPORT_ACK == {"code": 0, "msg": "接收成功"}


def test_voice__pull_reads_call_details(voice: VoiceFake, voice_server: tuple[VoiceFake, FakeServer]) -> None:
    """pull asks QueryCallDetailByCallId for touches with a CallId and returns call outcomes."""
    channel = voice_channel(voice_server[1].url)
    [sent] = asyncio.run(channel.send([touch()]))
    inbound = asyncio.run(channel.pull([touch()], SINCE))
    [receipt] = inbound.receipts
    assert (receipt.touch_id, receipt.vendor_id, receipt.delivered) == ("t0000000000001", sent.vendor_id, True)
    assert receipt.details["duration_s"] == 23 and receipt.details["answered"] is True
    assert any(r["Action"] == "QueryCallDetailByCallId" for r in voice.requests)


# --- aliyun_outbound_bot --------------------------------------------------------------------------------

def test_bot__send_groups_a_scenario_into_one_assignjobs(bot: BotFake,
                                                        bot_server: tuple[BotFake, FakeServer]) -> None:
    """Touches of one scenario go in one AssignJobs; each job has one contact with referenceId = touch id."""
    channel = bot_channel(bot_server[1].url)
    outcomes = asyncio.run(channel.send([touch("t1"), touch("t2", PHONE2)]))
    assert [o.kind for o in outcomes] == [OutcomeKind.sent] * 2
    [call] = bot.assign_calls
    assert (call["InstanceId"], call["JobGroupId"], call["ScriptId"]) == ("inst-fake", "jg-lapsed", "script-1")
    job = json.loads(call["JobsJson.1"])
    assert job["contacts"] == [{"phoneNumber": PHONE, "referenceId": "t1"}]
    assert {"key": "name", "value": "王女士"} in job["extras"]
    assert [j["Contact"]["ReferenceId"] for j in bot.jobs] == ["t1", "t2"]
    assert {o.vendor_id for o in outcomes} == {j["Id"] for j in bot.jobs}


def test_bot__more_than_25_touches_split(bot: BotFake, bot_server: tuple[BotFake, FakeServer]) -> None:
    """The vendor takes at most 25 jobs per AssignJobs."""
    touches = [touch(f"t{n}", f"138{n:08d}") for n in range(30)]
    outcomes = asyncio.run(bot_channel(bot_server[1].url).send(touches))
    assert len(outcomes) == 30 and {o.kind for o in outcomes} == {OutcomeKind.sent}
    assert len(bot.assign_calls) == 2 and len(bot.jobs) == 30


def test_bot__wrong_secret_is_channel_fatal(bot: BotFake, bot_server: tuple[BotFake, FakeServer]) -> None:
    """A wrong secret gets SignatureDoesNotMatch: the channel pauses."""
    [outcome] = asyncio.run(bot_channel(bot_server[1].url, secret="wrong").send([touch()]))
    assert (outcome.kind, outcome.code) == (OutcomeKind.channel_fatal, "SignatureDoesNotMatch")
    assert bot.jobs == []


@pytest.mark.parametrize(("code", "kind"), sorted(bot_mod._CODES.items()))
def test_bot__each_code_has_its_outcome(bot: BotFake, bot_server: tuple[BotFake, FakeServer],
                                        code: str, kind: OutcomeKind) -> None:
    """Every classified code, answered by the fake, becomes its OutcomeKind for the whole batch."""
    bot.failures.append(Failure(code=code))
    outcomes = asyncio.run(bot_channel(bot_server[1].url).send([touch("t1"), touch("t2", PHONE2)]))
    assert [(o.kind, o.code) for o in outcomes] == [(kind, code)] * 2


def test_bot__dropped_connection_is_settled_by_lookup(bot: BotFake, bot_server: tuple[BotFake, FakeServer]) -> None:
    """Accepted then dropped: unknown; lookup finds the job by referenceId, with no second AssignJobs."""
    bot.failures.append(Failure(drop=True))
    channel = bot_channel(bot_server[1].url)
    [outcome] = asyncio.run(channel.send([touch()]))
    assert outcome.kind == OutcomeKind.unknown
    [found, absent] = asyncio.run(channel.lookup([touch(), touch("t-never", PHONE2)]))
    assert (found.kind, found.vendor_id) == (OutcomeKind.sent, bot.jobs[0]["Id"])
    assert absent.kind == OutcomeKind.not_sent
    assert len(bot.assign_calls) == 1
    assert [r["Action"] for r in bot.requests].count("AssignJobs") == 1


def test_bot__lookup_without_answer_is_unknown() -> None:
    """When the query API cannot be reached, lookup says unknown, never not_sent."""
    [outcome] = asyncio.run(bot_channel(f"http://127.0.0.1:{free_port()}").lookup([touch()]))
    assert outcome.kind == OutcomeKind.unknown


def test_bot__pull_gives_call_outcomes(bot: BotFake, bot_server: tuple[BotFake, FakeServer]) -> None:
    """Finished jobs come back as receipts with answered, duration, who hung up and the intent label."""
    bot.outcomes[PHONE2] = JobResult(answered=False, intent=None)
    channel = bot_channel(bot_server[1].url)
    asyncio.run(channel.send([touch("t1"), touch("t2", PHONE2)]))
    assert asyncio.run(channel.pull([touch("t1"), touch("t2", PHONE2)], SINCE)).receipts == []  # still scheduling
    bot.finish()
    receipts = {r.touch_id: r for r in asyncio.run(channel.pull([touch("t1"), touch("t2", PHONE2)], SINCE)).receipts}
    assert receipts["t1"].delivered and receipts["t1"].status == "Succeeded"
    assert {k: receipts["t1"].details[k] for k in ("answered", "duration_s", "hangup_by", "intent")} == {
        "answered": True, "duration_s": 41, "hangup_by": "robot", "intent": "interested"}
    assert not receipts["t2"].delivered and receipts["t2"].details["answered"] is False
    assert receipts["t2"].details["failure_reason"] == "NoAnswer"
