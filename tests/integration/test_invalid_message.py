"""Vendor limits decided before sending: a message its channel's vendor would refuse is
`suppressed/invalid_message` in the dry-run and in `tick` (the adapter's own check, applied when
deciding), and never reaches the vendor; an SMS template the `fallback:` cannot send is a config error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenario import AT, add_member
from sqlalchemy import select

from channels import message_checks
from channels.fakes.server import FakeServer
from channels.fakes.wechat_template import WechatFake
from engine.cli import main
from engine.config import load_config
from engine.decide.preview import dry_run
from engine.errors import ConfigError
from engine.grammar.loader import load_playbooks
from engine.run.service import Service
from engine.store.connect import open_engine
from engine.store.schema import touches

TEMPLATE = "TPL_points_expiry"
LONG_NICKNAME = "一二三四五六七八九十一二三四五"  # 15 characters: with 积分即将过期 (6), 21 in all
PLAYBOOK = f"""\
id: points
name: 积分提醒
trigger: {{schedule: "0 10 * * *"}}
audience:
  all:
    - reachable: template
channels:
  - template: {{template_id: {TEMPLATE}, data: {{thing1: "{{{{ member.nickname }}}}积分即将过期", time2: "2026-11-30"}}}}
"""


@pytest.fixture
def fake() -> Iterator[tuple[WechatFake, FakeServer]]:
    state = WechatFake(templates={TEMPLATE})
    with FakeServer(state.app) as server:
        state.url = server.url
        yield state, server


def _members(db_url: str) -> None:
    engine = open_engine(db_url)
    with engine.begin() as conn:
        add_member(conn, "M1", nickname=LONG_NICKNAME, oa_openid="oLONG_0123456789abcdef", oa_subscribed=True)
        add_member(conn, "M2", nickname="小林", oa_openid="oSHORT_0123456789abcdef", oa_subscribed=True)
    engine.dispose()


def _config(tmp_path: Path, db_url: str, template: dict[str, Any]) -> Path:
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "points.yaml").write_text(PLAYBOOK, encoding="utf-8")
    config = {"database": {"url": db_url}, "playbooks": str(tmp_path / "playbooks"),
              "channels": {"template": template},
              "policies": {"frequency": [], "quiet_hours": {}}, "dispatch": {"retry_wait": "0s"}}
    path = tmp_path / "siyu.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _wechat(fake: WechatFake) -> dict[str, Any]:
    return {"adapter": "wechat_template", "app_id": fake.app_id, "app_secret": fake.app_secret,
            "base_url": fake.url, "timeout": 2.0}


def test_dry_run__21_character_keyword_is_invalid_message(db_url: str, tmp_path: Path,
                                                           fake: tuple[WechatFake, FakeServer]) -> None:
    """The dry-run applies the configured adapter's check: 21 characters is suppressed/invalid_message
    with the rule in `why`; 8 characters is a send. Nothing is asked of the vendor."""
    _members(db_url)
    settings, _ = load_config(_config(tmp_path, db_url, _wechat(fake[0])))
    books = [item.playbook for item in load_playbooks([tmp_path / "playbooks"])]
    engine = open_engine(db_url)
    try:
        got = {d.member_id: d for d in dry_run(engine, books, AT, default_timezone="Asia/Shanghai", links={},
                                               event_window=settings.misfire_grace_td, policies=settings.policies,
                                               checks=message_checks(dict(settings.channels)))}
    finally:
        engine.dispose()
    assert (got["M1"].decision, got["M1"].reason, got["M1"].channel) == ("suppressed", "invalid_message", None)
    assert got["M1"].why["invalid_message"] == "data.thing1: 21 characters, at most 20 allowed"
    assert (got["M2"].decision, got["M2"].reason, got["M2"].channel) == ("send", None, "template")
    assert fake[0].received == [] and fake[0].token_calls == 0


def test_dry_run_cli__without_config_the_settings_free_wechat_limit_applies(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu dry-run --db` alone has no channel settings; the `template` channel's 20-character limit
    needs none, so it applies there too."""
    _members(db_url)
    (tmp_path / "points.yaml").write_text(PLAYBOOK, encoding="utf-8")
    assert main(["dry-run", str(tmp_path / "points.yaml"), "--db", db_url, "--at", AT.isoformat(),
                 "--format", "jsonl"]) == 0
    records = {r["member_id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (records["M1"]["decision"], records["M1"]["reason"]) == ("suppressed", "invalid_message")
    assert "21 characters" in records["M1"]["why"]["invalid_message"]
    assert (records["M2"]["decision"], records["M2"]["reason"]) == ("send", None)


def test_tick__21_character_keyword_is_invalid_message_and_never_reaches_the_vendor(
        db_url: str, tmp_path: Path, fake: tuple[WechatFake, FakeServer]) -> None:
    """`tick` decides what the dry-run showed: the ledger row is suppressed/invalid_message, and the fake
    account receives only the other member's message."""
    _members(db_url)
    service = Service.load(_config(tmp_path, db_url, _wechat(fake[0])))
    try:
        result = asyncio.run(service.tick(AT))
        assert result.decided == {"suppressed/invalid_message": 1, "send": 1}
        with service.engine.connect() as conn:
            rows = {r.member_id: r for r in conn.execute(select(touches))}
    finally:
        service.engine.dispose()
    assert (rows["M1"].state, rows["M1"].reason, rows["M1"].channel) == ("suppressed", "invalid_message", None)
    assert rows["M1"].why["invalid_message"] == "data.thing1: 21 characters, at most 20 allowed"
    assert rows["M2"].state == "sent"
    assert [b["touser"] for b in fake[0].received] == ["oSHORT_0123456789abcdef"]


def test_tick__an_adapter_without_rules_checks_nothing(db_url: str, tmp_path: Path) -> None:
    """A `template` channel configured with the `log` adapter has no vendor rules: both are sent."""
    _members(db_url)
    service = Service.load(_config(tmp_path, db_url, {"adapter": "log", "path": str(tmp_path / "t.jsonl")}))
    try:
        assert asyncio.run(service.tick(AT)).decided == {"send": 2}
    finally:
        service.engine.dispose()


# -- an SMS fallback that cannot send a template ---------------------------------------------------------

def _fallback_config(tmp_path: Path, db_url: str, mapped: list[str], primary_templates: dict[str, list[str]],
                     template_code: str = "SMS_1") -> Path:
    tencent = {"adapter": "tencent_sms", "secret_id": "AKID", "secret_key": "key", "sdk_app_id": "1400000000",
               "sign_name": "麦德氏", "templates": {code: {"id": "1234567", "params": ["name"]} for code in mapped}}
    sms = {"adapter": "aliyun_sms", "access_key_id": "LTAI", "access_key_secret": "secret", "sign_name": "麦德氏",
           "templates": primary_templates, "fallback": tencent}
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "hello.yaml").write_text(
        'id: hello\nname: 测试\ntrigger: {schedule: "0 10 * * *"}\naudience:\n  all:\n    - reachable: sms\n'
        f"channels:\n  - sms: {{template_code: {template_code}, params: {{name: 小林}}}}\n", encoding="utf-8")
    config = {"allow_literal_secrets": True, "database": {"url": db_url}, "playbooks": str(tmp_path / "playbooks"),
              "channels": {"sms": sms}}
    path = tmp_path / "siyu.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line)


def test_config__a_template_the_fallback_cannot_map_is_a_config_error_at_its_line(sqlite_url: str,
                                                                                   tmp_path: Path) -> None:
    """The primary lists SMS_2, which the Tencent fallback does not map: a config error located at SMS_2."""
    path = _fallback_config(tmp_path, sqlite_url, ["SMS_1"], {"SMS_1": ["name"], "SMS_2": ["name"]})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(path), _line_of(path, "SMS_2:"))
    assert "'SMS_2'" in problem.message and "fallback" in problem.message


def test_config__every_template_mapped_by_the_fallback_loads(sqlite_url: str, tmp_path: Path) -> None:
    settings, _ = load_config(_fallback_config(tmp_path, sqlite_url, ["SMS_1"], {"SMS_1": ["name"]}))
    assert set(settings.channels) == {"sms"}


def test_start__a_playbook_template_the_fallback_cannot_map_is_a_config_error(sqlite_url: str,
                                                                               tmp_path: Path) -> None:
    """The primary lists no templates (Aliyun sends any code): the playbook's code is checked at start
    against the fallback, located at the playbook's template_code."""
    path = _fallback_config(tmp_path, sqlite_url, ["SMS_1"], {}, template_code="SMS_9")
    with pytest.raises(ConfigError) as caught:
        Service.load(path, migrate=False)
    [problem] = caught.value.problems
    book = tmp_path / "playbooks" / "hello.yaml"
    assert (problem.file, problem.line) == (str(book), _line_of(book, "SMS_9"))
    assert "'SMS_9'" in problem.message and "tencent_sms" in problem.message


def test_checks__with_a_fallback_the_primary_providers_rules_apply(sqlite_url: str, tmp_path: Path) -> None:
    """Aliyun (primary) allows 35-character parameters, Tencent (fallback) 12: a 20-character name
    is sent, since the primary's rules are the ones applied."""
    path = _fallback_config(tmp_path, sqlite_url, ["SMS_1"], {})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["channels"]["sms"]["fallback"]["param_max_length"] = 12
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    settings, _ = load_config(path)
    check = message_checks(dict(settings.channels))["sms"]
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 20}}, {"phone": "13800138000"}) is None
    assert check({"template_code": "SMS_1", "params": {"name": "一" * 36}}, {"phone": "13800138000"}) == \
        "template SMS_1: parameters name longer than 35 characters"
