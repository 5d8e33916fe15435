"""The `siyu` CLI in subprocesses: check, import, compile, dry-run and explain, as a user runs them.

Errors come out as `file:line:col: message` (or `file:line: column: message` for CSV rows)
with the documented exit codes and never a traceback. The public acceptance sample
(../shared/acceptance) is imported from CSV and dry-run on SQLite; the result must be
exactly `expected.jsonl` under the README's comparison rule, and `siyu explain` must agree
with the dry-run member by member.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "acceptance"
AT = "2026-11-22T10:00:00+08:00"
LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$", re.MULTILINE)

GOOD_PLAYBOOK = """\
id: pet-milk-refill
name: 宠物奶粉第21天复购提醒
trigger:
  schedule: "0 10 * * *"
audience:
  all:
    - last_purchase: {category: pet_milk, days_ago: 21}
    - reachable: [wecom, sms]
  none:
    - tag: do_not_disturb
offer:
  by: avg_order_value
  tiers:
    - {min: 200, coupon: {threshold: 250, discount: 50, valid_days: 7}}
    - {min: 100, coupon: {threshold: 150, discount: 20, valid_days: 7}}
channels:
  - wecom:
      text: "{{ member.nickname }}，送您满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}券"
  - sms:
      template_code: SMS_4820931
      params: {name: "{{ member.nickname }}", discount: "{{ offer.coupon.discount }}"}
limits: {cooldown_days: 28}
holdout: 10
"""
EVENT_PLAYBOOK = """\
id: unpaid-order-nudge
name: 未付款订单提醒
trigger: {event: order_created, delay: 30m}
audience:
  all:
    - triggering_order: {paid: false}
    - reachable: sms
channels:
  - sms: {template_code: SMS_2, params: {order: "{{ event.attributes.order_id }}"}}
"""


def siyu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine ARGS` (the `siyu` console script) in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k != "SIYU_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=240, check=False)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


# --------------------------------------------------------------------------- siyu check


def test_check__good_directory_exits_0(tmp_path: Path) -> None:
    """`siyu check DIR` on valid playbooks exits 0 and says how many it checked."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "refill.yaml").write_text(GOOD_PLAYBOOK, encoding="utf-8")
    (tmp_path / "playbooks" / "unpaid.yml").write_text(EVENT_PLAYBOOK, encoding="utf-8")
    result = siyu("check", "playbooks", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 playbook(s) valid" in result.stdout
    assert result.stderr == ""


def test_check__broken_playbooks_exit_1_with_located_lines(tmp_path: Path) -> None:
    """Every problem of every file is one `file:line:col: message` line; exit 1; no traceback."""
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "a-cron.yaml").write_text(GOOD_PLAYBOOK.replace('"0 10 * * *"', '"0 25 * * *"'), encoding="utf-8")
    (folder / "b-key.yaml").write_text(GOOD_PLAYBOOK.replace("id: pet-milk-refill", "id: b-key")
                                       .replace("holdout: 10", "holdot: 10"), encoding="utf-8")
    (folder / "c-dup.yaml").write_text(GOOD_PLAYBOOK, encoding="utf-8")
    (folder / "d-copy.yaml").write_text(GOOD_PLAYBOOK, encoding="utf-8")
    (folder / "e-yaml.yaml").write_text("id: x\nname: [unclosed\n", encoding="utf-8")
    (folder / "f-binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / "g-empty.yaml").write_bytes(b"")
    (folder / "h-gbk.yaml").write_bytes(GOOD_PLAYBOOK.encode("gbk"))
    result = siyu("check", "playbooks", cwd=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    located = {(Path(m["file"]).name, int(m["line"]), int(m["col"])): m["message"]
               for m in LOCATED.finditer(result.stderr)}
    assert "hour: 25 is out of range" in located[("a-cron.yaml", 4, 13)]
    assert "did you mean 'holdout'?" in located[("b-key.yaml", 23, 1)]
    assert "duplicate playbook id 'pet-milk-refill'" in located[("d-copy.yaml", 1, 5)]
    assert "c-dup.yaml" in located[("d-copy.yaml", 1, 5)]
    assert any(name == "e-yaml.yaml" and "malformed YAML" in msg for (name, _, _), msg in located.items())
    lines = result.stderr.splitlines()
    assert any(line.startswith("playbooks/f-binary.yaml") and "binary" in line for line in lines)
    assert any(line.startswith("playbooks/g-empty.yaml") and "empty playbook" in line for line in lines)
    assert any(line.startswith("playbooks/h-gbk.yaml:2") and "UTF-8" in line for line in lines)
    assert result.stdout == ""


# --------------------------------------------------------------------------- siyu import


MEMBERS_CSV = (
    "member_id,nickname,phone,origin_platform,tier,points,points_expiring,points_expire_at,city,joined_at,tags,"
    "wecom_external_userid,wecom_staff_userid,oa_openid,oa_subscribed,sms_opt_out,call_opt_out\n"
    "M1,小明,13700000001,tmall,gold,10,,,杭州,2025-01-02T10:00:00,vip,,,,,0,0\n"
)
ORDERS_CSV = (
    "order_id,member_id,platform,created_at,paid_at,amount,status\n"
    "O1,M1,tmall,2026-11-01T10:00:00,2026-11-01T10:05:00,12.50,paid\n"
    "O2,M1,tmall,2026-11-02T10:00:00,,abc,paid\n"
    "O3,NOPE,jd,2026-11-03T10:00:00,2026-11-03T10:00:00,1,paid\n"
)


def test_import__bad_rows_exit_1_with_file_line_column(tmp_path: Path) -> None:
    """A file with bad rows imports nothing and reports `orders.csv:N: column: message` for each."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "members.csv").write_text(MEMBERS_CSV, encoding="utf-8")
    (data / "orders.csv").write_text(ORDERS_CSV, encoding="utf-8")
    result = siyu("import", "data", "--db", "sqlite:///shop.db", cwd=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    problems = re.findall(r"^\S*orders\.csv:(\d+): (\w+): (.+)$", result.stderr, re.MULTILINE)
    by_place = {(int(line), column): message for line, column, message in problems}
    assert "not a number" in by_place[(3, "amount")]
    assert "paid_at" in by_place[(3, "paid_at")]
    assert "unknown member 'NOPE'" in by_place[(4, "member_id")]
    assert "members.csv: 1 row(s) imported" in result.stdout
    # three problems, but on two rows (lines 3 and 4)
    assert "orders.csv: nothing imported (2 bad row(s))" in result.stdout


# --------------------------------------------------------------------------- siyu compile


INJECTION = "x'); DROP TABLE members; --"
ODD_KEY = 'fair"); DELETE FROM orders; --'


def test_compile__prints_sql_with_bound_parameters(tmp_path: Path) -> None:
    """`siyu compile` prints a SELECT for the dialect; YAML text only ever appears as parameters."""
    playbook = tmp_path / "odd.yaml"
    playbook.write_text(f"""\
id: odd-values
name: 奇怪的值
trigger: {{schedule: "0 10 * * *"}}
audience:
  all:
    - purchased: {{category: "{INJECTION}", within_days: 30}}
    - event: {{type: fair_visit, days_ago: 3, where: {{'{ODD_KEY}': guangzhou}}}}
    - member: {{city: 上海}}
  none:
    - tag: "zz-odd-tag"
channels:
  - sms: {{template_code: SMS_1}}
""", encoding="utf-8")
    for url, dialect in (("sqlite:///x.db", "sqlite"), ("postgresql+psycopg://nobody@127.0.0.1:1/none", "postgresql")):
        result = siyu("compile", "odd.yaml", "--db", url, "--at", AT, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        no_traceback(result)
        sql, _, parameters = result.stdout.partition("-- parameters:")
        assert f"({dialect})" in sql
        assert "SELECT" in sql and "FROM members" in sql
        for text in (INJECTION, "DROP TABLE", "DELETE FROM", "上海", "fair_visit", "guangzhou", "zz-odd-tag"):
            assert text not in sql, f"{text!r} spliced into the {dialect} SQL"
        assert "DROP TABLE" in parameters and "上海" in parameters


# --------------------------------------------------------------------------- the acceptance sample


@dataclass(frozen=True)
class Sample:
    directory: Path
    db: str
    got: list[dict[str, Any]]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    """The public sample imported into SQLite and dry-run at 2026-11-22 10:00 Shanghai (jsonl)."""
    if not (SAMPLE / "data").is_dir() or not (SAMPLE / "playbooks").is_dir():
        pytest.skip(f"no acceptance sample at {SAMPLE}")
    directory = tmp_path_factory.mktemp("sample")
    shutil.copytree(SAMPLE / "data", directory / "data")
    shutil.copytree(SAMPLE / "playbooks", directory / "playbooks")
    db = "sqlite:///sample.db"
    imported = siyu("import", "data", "--db", db, cwd=directory)
    assert imported.returncode == 0, imported.stderr
    no_traceback(imported)
    result = siyu("dry-run", "playbooks", "--db", db, "--at", AT, "--format", "jsonl", "--out", "got.jsonl",
                  cwd=directory)
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    lines = (directory / "got.jsonl").read_text(encoding="utf-8").splitlines()
    yield Sample(directory, db, [json.loads(line) for line in lines if line.strip()])


def expected_rows() -> list[dict[str, Any]]:
    path = SAMPLE / "expected.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def coupon_of(record: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    offer = record.get("offer")
    if not offer:
        return None
    coupon = offer["coupon"]
    return Decimal(str(coupon["threshold"])), Decimal(str(coupon["discount"]))


def verdict(record: dict[str, Any]) -> tuple[Any, ...]:
    """What the README's comparison rule compares."""
    return record["decision"], record["reason"], record["channel"], coupon_of(record)


def test_dry_run__sample_matches_expected(sample: Sample) -> None:
    """Every expected line appears with the same decision, reason, channel and coupon; no other pairs."""
    expected = expected_rows()
    got: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in sample.got:
        got.setdefault((record["playbook"], record["member_id"]), []).append(record)
    expected_pairs = {(row["playbook"], row["member_id"]) for row in expected}
    assert set(got) - expected_pairs == set(), "members decided that expected.jsonl does not list"
    assert expected_pairs - set(got) == set(), "members of expected.jsonl missing from the dry-run"
    wrong = [(row["playbook"], row["member_id"], verdict(row), [verdict(r) for r in got[row["playbook"],
                                                                                       row["member_id"]]])
             for row in expected if verdict(row) not in [verdict(r) for r in got[row["playbook"], row["member_id"]]]]
    assert wrong == []


def test_dry_run__records_carry_the_contract_fields(sample: Sample) -> None:
    """Each jsonl object has the contract's fields; sends carry a rendered message."""
    fields = {"playbook", "member_id", "occurrence", "decision", "reason", "channel", "offer", "message", "why"}
    for record in sample.got:
        assert fields <= set(record)
        assert record["decision"] in ("send", "holdout", "suppressed")
        if record["decision"] == "send":
            assert record["channel"] and record["message"] is not None and "{{" not in json.dumps(record["message"])


def test_dry_run__bad_at_exits_2_naming_the_flag(sample: Sample) -> None:
    """`--at yesterday` is a usage error: exit 2, a one-line message naming --at, no traceback."""
    result = siyu("dry-run", "playbooks", "--db", sample.db, "--at", "yesterday", cwd=sample.directory)
    assert result.returncode == 2
    no_traceback(result)
    assert "--at" in result.stderr and "yesterday" in result.stderr
    assert result.stdout == ""


EXPLAINED = "p-gut-refill"


def explain_decision(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("decision: ")]
    return line.removeprefix("decision: ").strip()


def dry_run_decision(record: dict[str, Any]) -> str:
    return record["decision"] + (f"/{record['reason']}" if record["reason"] else "")


def test_explain__agrees_with_the_dry_run_for_every_member(sample: Sample, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """For every member the dry-run decided in one playbook, `siyu explain` states the same decision.

    Run in-process through `engine.cli.main` (the same code path as the console script) to stay fast;
    the subprocess test below covers the real process for a sample of members.
    """
    monkeypatch.chdir(sample.directory)
    records = [r for r in sample.got if r["playbook"] == EXPLAINED]
    assert {r["decision"] for r in records} >= {"send", "holdout", "suppressed"}
    for record in records:
        code = main(["explain", record["member_id"], f"playbooks/{EXPLAINED}.yaml", "--db", sample.db, "--at", AT])
        out = capsys.readouterr().out
        assert code == 0
        assert explain_decision(out) == dry_run_decision(record), (record["member_id"], out)
    outsider = next(r["member_id"] for r in sample.got if r["playbook"] != EXPLAINED
                    and r["member_id"] not in {x["member_id"] for x in records})
    assert main(["explain", outsider, EXPLAINED, "--db", sample.db, "--at", AT]) == 0
    out = capsys.readouterr().out
    assert "audience → not matched" in out
    assert explain_decision(out) == "not in the audience (no touch)"


def test_explain__subprocess_agrees(sample: Sample) -> None:
    """The real `siyu explain` process, by playbook id, agrees with the dry-run on a send and a suppression."""
    records = [r for r in sample.got if r["playbook"] == EXPLAINED]
    chosen = [next(r for r in records if r["decision"] == "send"),
              next(r for r in records if r["decision"] == "suppressed")]
    for record in chosen:
        result = siyu("explain", record["member_id"], EXPLAINED, "--db", sample.db, "--at", AT,
                      cwd=sample.directory)
        assert result.returncode == 0, result.stderr
        no_traceback(result)
        assert explain_decision(result.stdout) == dry_run_decision(record)
        assert "last_purchase" in result.stdout
