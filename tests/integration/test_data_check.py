"""`siyu check --db` and `siyu values`: the values a playbook names, checked against the data.

The brand holds the demo's spellings (`do_not_disturb`, `gold`, `上海`, `shark_chondroitin`,
`order_created`); each scenario is a typo a new user made on the demo brand (issue 13).
"""

from __future__ import annotations

import asyncio
import textwrap
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from daemonkit import Brand, scheduled
from scenario import AT, add_event, add_member, add_order
from sqlalchemy import Engine
from structlog.testing import capture_logs

from engine import examples
from engine.cli import main
from engine.decide.data_check import check_data
from engine.errors import Problem
from engine.grammar.loader import load_playbooks
from engine.run.daemon import Daemon
from engine.store.catalogue import read_catalogue
from engine.store.demo import DemoSpec, ensure_demo


def _brand_data(engine: Engine) -> None:
    with engine.begin() as conn:
        for i in range(3):
            add_member(conn, f"Q{i}", tags=["do_not_disturb", "vip"], tier="gold", city="上海", origin_platform="tmall")
        add_member(conn, "S1", tags=["vip"], tier="silver", city="北京", origin_platform="jd")
        add_order(conn, "Q0", paid_at=AT, platform="tmall", items=[("shark_chondroitin", "shark-340g", False)])
        add_order(conn, "S1", paid_at=AT, platform="douyin", items=[("pet_milk", "milk-400g", False)])
        add_event(conn, "Q1", "order_created", AT, {"order_id": "O1", "amount": 199})
        add_event(conn, "S1", "fair_visit", AT, {"fair": "gz", "paid": True})


def _write(tmp_path: Path, audience: str, *, params: str = "{}") -> Path:
    path = tmp_path / "typo.yaml"
    path.write_text("id: back-to-tmall\nname: 回购\ntrigger: {schedule: \"0 10 * * *\"}\naudience:\n"
                    + textwrap.indent(textwrap.dedent(audience).strip(), "  ")
                    + f"\nchannels:\n  - sms: {{template_code: SMS_1, params: {params}}}\n")
    return path


def _check(db: Engine, path: Path, links: dict[str, str] | None = None) -> list[Problem]:
    _brand_data(db)
    return check_data(db, load_playbooks([path]), links if links is not None else {"tmall": "t", "jd": "j",
                                                                                       "douyin": "d"})


def test_check_db__do_not_disturb_typo_inside_none_is_an_error(db: Engine, tmp_path: Path) -> None:
    """`none: [{tag: do-not-disturb}]` excludes nobody (the data says do_not_disturb): the audience grows, an error."""
    path = _write(tmp_path, "all: [{tag: vip}]\nnone: [{tag: do-not-disturb}]")
    (problem,) = _check(db, path)
    assert problem.severity == "error"
    assert (problem.file, problem.line, problem.column) == (str(path), 6, 16)
    assert problem.message.startswith(
        "tag 'do-not-disturb' occurs nowhere in the data; did you mean 'do_not_disturb' (3 members)?")


def test_check_db__the_same_value_with_ne_is_an_error(db: Engine, tmp_path: Path) -> None:
    """`tier: {ne: 金卡}` holds for every member with a tier when nobody has 金卡: an error."""
    path = _write(tmp_path, "all: [{member: {tier: {ne: 金卡}}}]")
    (problem,) = _check(db, path)
    assert problem.severity == "error"
    assert problem.line == 5
    assert problem.message.startswith("tier '金卡' occurs nowhere in the data; the data has 'gold' (3)")


def test_check_db__ne_under_one_none_narrows_so_it_is_a_warning(db: Engine, tmp_path: Path) -> None:
    """`none: [{member: {tier: {ne: x}}}]` negates twice: an absent x excludes everyone with a tier (a warning)."""
    (problem,) = _check(db, _write(tmp_path, "none: [{member: {tier: {not_in: [金卡]}}}]"))
    assert problem.severity == "warning"


def test_check_db__the_typo_inside_all_is_a_warning(db: Engine, tmp_path: Path) -> None:
    """Inside `all:` an absent tag only empties the audience: a warning with the did-you-mean."""
    path = _write(tmp_path, "all: [{tag: do-not-disturb}]")
    (problem,) = _check(db, path)
    assert str(problem) == (f"{path}:5:15: warning: tag 'do-not-disturb' occurs nowhere in the data; "
                            "did you mean 'do_not_disturb' (3 members)?")


def test_check_db__tier_city_category_and_event_type_warn_with_hints(db: Engine, tmp_path: Path) -> None:
    """`tier: 金卡`, `city: 上海市`, `category: shark-chondroitin`, `event: {type: order_create}` each warn."""
    path = _write(tmp_path, """
        all:
          - member: {tier: 金卡, city: 上海市}
          - purchased: {category: shark-chondroitin, within_days: 30}
          - event: {type: order_create, within_days: 7}
    """)
    problems = _check(db, path)
    assert all(p.severity == "warning" for p in problems)
    assert [(p.line, p.message) for p in problems] == [
        (6, "tier '金卡' occurs nowhere in the data; the data has 'gold' (3), 'silver' (1)"),
        (6, "city '上海市' occurs nowhere in the data; did you mean '上海' (3 members)?"),
        (7, "category 'shark-chondroitin' occurs nowhere in the data; did you mean 'shark_chondroitin' (1 member)?"),
        (8, "event type 'order_create' occurs nowhere in the data; did you mean 'order_created' (1 member)?"),
    ]


def test_check_db__where_attribute_names_and_values_come_from_the_events(db: Engine, tmp_path: Path) -> None:
    """A `where` attribute the events never carry, and a value they never hold, are named; JSON scalars match."""
    path = _write(tmp_path, """
        any:
          - event: {type: fair_visit, where: {fair: sh, paid: "true"}}
          - event: {type: order_created, where: {amount: "199", order: O1}}
    """)
    problems = _check(db, path)
    assert [p.message.split(";")[0] for p in problems] == [
        "event 'fair_visit' attribute 'fair' value 'sh' occurs nowhere in the data",
        "event 'order_created' attribute 'order' occurs nowhere in the data",
    ]
    assert "did you mean 'order_id'" in problems[1].message


def test_check_db__platform_without_links_warns_when_a_template_uses_links(db: Engine, tmp_path: Path) -> None:
    """A platform in the data with no `links` entry makes `links[...]` fail to render for its members."""
    path = _write(tmp_path, "all: [{tag: vip}]", params='{u: "{{ links[member.habitual_platform] }}"}')
    (problem,) = _check(db, path, links={"tmall": "t"})
    assert problem.severity == "warning"
    assert "no links entry for 'douyin' (1 member), 'jd' (1 member)" in problem.message


def test_catalogue__counts_members_per_value(db: Engine) -> None:
    """Each value counts its members once; platforms join orders and origins; events carry attribute names."""
    _brand_data(db)
    catalogue = read_catalogue(db)
    assert catalogue.tags == {"vip": 4, "do_not_disturb": 3}
    assert catalogue.platforms == {"tmall": 3, "douyin": 1, "jd": 1}
    assert catalogue.categories == {"pet_milk": 1, "shark_chondroitin": 1}
    assert catalogue.events["order_created"].attributes == {"order_id": {"O1": 1}, "amount": {"199": 1}}
    assert catalogue.events["fair_visit"].attributes["paid"] == {"true": 1}


def test_cli_check_db__exit_1_on_an_error_and_0_with_warnings(db: Engine, db_url: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu check --db` prints every finding; an error exits 1, warnings alone exit 0; offline it stays quiet."""
    _brand_data(db)
    path = _write(tmp_path, "none: [{tag: do-not-disturb}]")
    assert main(["check", str(path), "--db", db_url]) == 1
    assert "typo.yaml:5:16: tag 'do-not-disturb' occurs nowhere" in capsys.readouterr().err
    path = _write(tmp_path, "all: [{tag: do-not-disturb}]")
    assert main(["check", str(path), "--db", db_url]) == 0
    assert "warning: tag 'do-not-disturb'" in capsys.readouterr().err
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_values__lists_tags_with_member_counts(db: Engine, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`siyu values tags` prints each tag with its members, most first, aligned."""
    _brand_data(db)
    assert main(["values", "tags", "--db", db_url]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines == [["tag", "members"], ["vip", "4"], ["do_not_disturb", "3"]]
    assert main(["values", "events", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "order_created" in out and "amount, order_id" in out


def test_daemon__logs_each_finding_at_start(db_url: str, tmp_path: Path) -> None:
    """The daemon runs the data check at start and logs the finding; it starts and stops as usual."""
    brand = Brand(tmp_path, db_url)
    brand.configure()
    config = yaml.safe_load(brand.config_path.read_text())
    brand.config_path.write_text(yaml.safe_dump({**config, "http": {"listen": None}}, allow_unicode=True))
    brand.add_playbook(scheduled("p", "0 10 * * *", tag="do-not-disturb"))
    _brand_data(brand.engine)
    daemon = Daemon(brand.config_path, clock=lambda: AT)

    async def start_and_stop() -> int:
        running = asyncio.create_task(daemon.run(install_signal_handlers=False))
        for _ in range(1000):  # the check starts once the daemon is ready
            if daemon.data_check is not None:
                break
            await asyncio.sleep(0.02)
        assert daemon.data_check is not None
        await daemon.data_check
        daemon.stop_event.set()
        return await running

    with capture_logs() as logs:
        assert asyncio.run(start_and_stop()) == 0
    brand.close()
    (finding,) = [entry for entry in logs if entry["event"] == "data_check.finding"]
    assert finding["log_level"] == "warning"
    assert "tag 'do-not-disturb' occurs nowhere in the data; did you mean 'do_not_disturb'" in finding["problem"]


def test_daemon__logs_findings_after_a_reload_and_keeps_the_new_set(db_url: str, tmp_path: Path) -> None:
    """A SIGHUP reload with a typo'd playbook is done (findings never block it) and the finding is logged."""
    brand = Brand(tmp_path, db_url)
    brand.configure()
    brand.add_playbook(scheduled("p", "0 10 * * *"))
    _brand_data(brand.engine)
    daemon = Daemon(brand.config_path, clock=lambda: AT)
    first = daemon.service.engine
    brand.add_playbook(scheduled("q", "0 10 * * *", tag="do-not-disturb"))

    async def reload() -> None:
        await daemon._reload()
        assert daemon.data_check is not None
        await daemon.data_check
        await daemon.dispatcher.aclose()

    with capture_logs() as logs:
        asyncio.run(reload())
    assert sorted(p.id for p in daemon.service.playbooks) == ["p", "q"]
    for engine in {first, daemon.service.engine, daemon.dispatcher.engine}:  # a reload opens its own
        engine.dispose()
    brand.close()
    events = [entry["event"] for entry in logs]
    assert "reload.done" in events
    (finding,) = [entry for entry in logs if entry["event"] == "data_check.finding"]
    assert "q.yaml" in finding["problem"] and "'do-not-disturb'" in finding["problem"]


def test_cli_check_config__a_database_not_created_yet_is_a_warning(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`check --config` whose database does not exist yet validates the playbooks and says the data went unchecked."""
    config = tmp_path / "siyu.yaml"
    (tmp_path / "playbooks").mkdir()
    config.write_text(f"database: {{url: 'sqlite:///{tmp_path / 'absent.db'}'}}\nplaybooks: {tmp_path / 'playbooks'}\n")
    _write(tmp_path / "playbooks", "all: [{tag: vip}]")
    assert main(["check", "--config", str(config)]) == 0
    assert f"{config}: warning: data values not checked: no database file" in capsys.readouterr().err


def test_demo_brand__back_to_tmall_typo_is_an_error_and_the_examples_are_clean(db: Engine, tmp_path: Path) -> None:
    """On the demo brand the bundled playbooks (with the example config's links) name only values the data
    holds; back-to-tmall with `none: [{tag: do-not-disturb}]` is an error pointing at do_not_disturb."""
    ensure_demo(db, DemoSpec(2_000, 7, today=date(2026, 11, 22), tz=ZoneInfo("Asia/Shanghai")), progress=False)
    links = yaml.safe_load(examples.config_example().read_text(encoding="utf-8"))["links"]
    bundled = load_playbooks([examples.playbooks()])
    assert check_data(db, bundled, links) == []
    original = (examples.playbooks() / "back-to-tmall.yaml").read_text(encoding="utf-8")
    typo = tmp_path / "back-to-tmall.yaml"
    typo.write_text(original.replace("- tag: do_not_disturb", "- tag: do-not-disturb"), encoding="utf-8")
    (problem,) = check_data(db, load_playbooks([typo]), links)
    assert problem.severity == "error"
    assert problem.message.startswith("tag 'do-not-disturb' occurs nowhere in the data; did you mean 'do_not_disturb' (")
