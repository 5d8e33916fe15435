"""Every phone through one normaliser (issue 13, part 4), on SQLite and PostgreSQL: import stores phones
normalised or empty, opt-outs by phone (`siyu suppress`, 退订/TD/T replies on every reply path) match
the member whatever spelling either came in, and migration 0006 normalises what was stored before."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from daemonkit import NO_POLICIES, Brand, scheduled
from scenario import AT
from sqlalchemy import Engine, insert, select

from channels.aliyun.sms import parse_sms_up
from channels.base import Inbound, Reply
from channels.fakes.aliyun_sms import sms_up_body
from channels.fakes.server import FakeServer
from channels.fakes.tencent_sms import FakeTencentSms
from channels.tencent.sms import TencentSmsChannel, TencentSmsSettings, parse_reply_callback
from engine.run.receipts import ReceiptBook
from engine.store.connect import _alembic_config, is_current, upgrade
from engine.store.importer import import_directory
from engine.store.reachability import reachable
from engine.store.schema import members, suppressions

SHANGHAI = AT.tzinfo
DAILY = "0 10 * * *"
HEADER = "member_id,nickname,phone,tags\n"
EXCEL_WARNING = ("members.csv:{line}: warning: phone: '1.38001E+10' is not a mainland mobile number (Excel turned "
                 "it into a number? format the column as text); the member is unreachable by sms and ai_call")
ABC_WARNING = ("members.csv:{line}: warning: phone: 'abc' is not a mainland mobile number; "
               "the member is unreachable by sms and ai_call")


@pytest.fixture
def brand(db_url: str, tmp_path: Path) -> Iterator[Brand]:
    brand = Brand(tmp_path, db_url)
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("promo", DAILY))
    yield brand
    brand.close()


def members_csv(directory: Path, *rows: tuple[str, str]) -> Path:
    """members.csv with (member_id, phone) rows, every member tagged vip (the `scheduled` audience)."""
    directory.mkdir(exist_ok=True)
    body = "".join(f"{member_id},{member_id},\"{phone}\",vip\n" for member_id, phone in rows)
    (directory / "members.csv").write_text(HEADER + body, encoding="utf-8")
    return directory


def siyu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, check=False,
                          cwd=cwd)


def phones(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(members.c.member_id, members.c.phone)).all())


def sent_to(brand: Brand) -> list[str]:
    return sorted(line["member_id"] for line in brand.logged())


# --------------------------------------------------------------------------- import

def test_import__every_spelling_is_stored_normalised_and_the_rest_empty_with_a_warning(
        db_url: str, tmp_path: Path) -> None:
    """`siyu import`: +86/0086/86, spaces, dashes and full-width digits are stored as the bare number;
    `1.38001E+10` and `abc` import empty with a located warning on stderr, and the import exits 0."""
    members_csv(tmp_path / "data", ("M1", "+86 138 0002 8002"), ("M2", "138-0005-8005"),
                       ("M3", "1.38001E+10"), ("M4", "abc"), ("M5", "００８６　１３８　０００６　６６６６"), ("M6", ""))
    done = siyu("import", "data", "--db", db_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "data/members.csv: 6 row(s) imported" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert warnings == ["data/" + EXCEL_WARNING.format(line=4), "data/" + ABC_WARNING.format(line=5)]
    from engine.store.connect import open_engine
    engine = open_engine(db_url)
    try:
        assert phones(engine) == {"M1": "13800028002", "M2": "13800058005", "M3": None, "M4": None,
                                  "M5": "13800066666", "M6": None}
    finally:
        engine.dispose()


def test_import__strict_makes_a_phone_that_does_not_normalise_a_bad_row(db: Engine, tmp_path: Path) -> None:
    """With `strict` (`siyu import --strict`) the same phones are bad rows: the file imports nothing."""
    data = members_csv(tmp_path / "data", ("M1", "+8613800001111"), ("M3", "1.38001E+10"), ("M4", "abc"))
    report = import_directory(db, data, SHANGHAI, progress=False, strict=True)
    assert [f.rows for f in report.files] == [0]
    assert [(p.line, p.severity, p.message.split(" is not")[0]) for p in report.problems] == [
        (3, "error", "phone: '1.38001E+10'"), (4, "error", "phone: 'abc'")]
    assert report.warnings == []
    assert phones(db) == {}
    lenient = import_directory(db, data, SHANGHAI, progress=False)
    assert (lenient.problems, [w.line for w in lenient.warnings]) == ([], [3, 4])
    assert phones(db) == {"M1": "13800001111", "M3": None, "M4": None}


def test_import__strict_flag_on_the_command_line_refuses_the_row(db_url: str, tmp_path: Path) -> None:
    """`siyu import --strict` exits 1 and names the row; nothing of the file is imported."""
    members_csv(tmp_path / "data", ("M1", "13800001111"), ("M3", "1.38001E+10"))
    done = siyu("import", "data", "--db", db_url, "--strict", cwd=tmp_path)
    assert done.returncode == 1
    assert "data/members.csv: nothing imported (1 bad row(s))" in done.stdout
    assert ("data/members.csv:3: phone: '1.38001E+10' is not a mainland mobile number (Excel turned it into a "
            "number? format the column as text)") in done.stderr


def test_import__a_foreign_number_is_masked_in_the_warning(db: Engine, tmp_path: Path) -> None:
    """A phone that does not normalise is echoed with its digits masked: no full number on stderr."""
    data = members_csv(tmp_path / "data", ("M1", "+1 4155550100"))
    [warning] = import_directory(db, data, SHANGHAI, progress=False).warnings
    assert "'+1 415****0100'" in warning.message and "4155550100" not in str(warning)


# --------------------------------------------------------------------------- opt-outs by phone

def test_replies__opt_outs_in_any_spelling_reach_members_imported_in_any_spelling(brand: Brand,
                                                                                 tmp_path: Path) -> None:
    """The adversarial run of issue 13: members imported as +8613800001111, 8613800002222 and
    008613800003333 reply 退订 (Aliyun SmsUp push), TD (Tencent reply callback) and T (pulled from the
    Tencent fake's PullSmsReplyStatus, which spells it +86…); none of them receives the next SMS."""
    data = members_csv(tmp_path / "data", ("M1", "+8613800001111"), ("M2", "8613800002222"),
                       ("M3", "008613800003333"), ("M4", "13800004444"))
    assert import_directory(brand.engine, data, SHANGHAI, progress=False).problems == []
    tencent = FakeTencentSms()
    tencent.add_reply("+8613800002222", " TD ")
    tencent.add_reply("+8613800003333", "T")
    with FakeServer(tencent.app) as server:
        settings = TencentSmsSettings(adapter="tencent_sms", secret_id=tencent.secret_id,
                                      secret_key=tencent.secret_key, sdk_app_id=tencent.sdk_app_id,
                                      sign_name="麦德氏", base_url=server.url, timeout=2.0, reply_source="queue")
        pulled = asyncio.run(TencentSmsChannel("sms", settings).pull([], datetime.now(UTC) - timedelta(minutes=1)))
    replies = [*parse_sms_up(sms_up_body("13800001111", "退订")),
               *parse_reply_callback(tencent.reply_callback_body(tencent.replies[0])),
               *[reply for reply in pulled.replies if reply.text == "T"]]
    assert [reply.text.strip() for reply in replies] == ["退订", "TD", "T"]
    counts = ReceiptBook(brand.engine).apply(Inbound(replies=replies))
    assert counts["unsubscribed"] == 3
    brand.tick(AT)
    assert sent_to(brand) == ["M4"]
    assert brand.states("promo") == {"M1": ("suppressed", "opted_out"), "M2": ("suppressed", "opted_out"),
                                     "M3": ("suppressed", "opted_out"), "M4": ("sent", None)}


def test_replies__a_foreign_number_is_kept_as_given(db: Engine) -> None:
    """A reply from a number that is not a mainland mobile number is suppressed as the vendor spelled it."""
    ReceiptBook(db).apply(Inbound(replies=[Reply("+14155550100", "退订", datetime(2026, 11, 21, tzinfo=UTC)),
                                           Reply("+86 138 1234 5678", "TD", datetime(2026, 11, 21, tzinfo=UTC))]))
    with db.connect() as conn:
        assert sorted(conn.scalars(select(suppressions.c.phone))) == ["+14155550100", "13812345678"]


def test_suppress__bare_number_matches_the_member_imported_with_spaces(brand: Brand, tmp_path: Path) -> None:
    """`siyu suppress add --phone 13800028002` stops the member imported as `+86 138 0002 8002`, and
    `suppress remove` in yet another spelling lifts it."""
    data = members_csv(tmp_path / "data", ("M1", "+86 138 0002 8002"), ("M2", "138-0005-8005"))
    assert import_directory(brand.engine, data, SHANGHAI, progress=False).problems == []
    config = str(brand.config_path)
    added = siyu("suppress", "add", "--phone", "13800028002", "--channel", "sms", "--config", config, cwd=tmp_path)
    assert (added.returncode, added.stdout.strip()) == (0, "suppression added"), added.stderr
    again = siyu("suppress", "add", "--phone", "+86 138-0002-8002", "--channel", "sms", "--config", config,
                 cwd=tmp_path)
    assert again.stdout.strip() == "already suppressed"
    listed = siyu("suppress", "list", "--config", config, cwd=tmp_path)
    assert "phone 138****8002" in listed.stdout and "13800028002" not in listed.stdout
    brand.tick(AT)
    assert sent_to(brand) == ["M2"]
    removed = siyu("suppress", "remove", "--phone", "0086 13800028002", "--channel", "sms", "--config", config,
                   cwd=tmp_path)
    assert removed.stdout.strip() == "1 suppression(s) removed"


def test_suppress__a_phone_that_is_not_a_mainland_number_is_refused(brand: Brand, tmp_path: Path) -> None:
    """`siyu suppress add --phone` with a number that could never match a member says so (exit 2)."""
    done = siyu("suppress", "add", "--phone", "1.38001E+10", "--config", str(brand.config_path), cwd=tmp_path)
    assert done.returncode != 0
    assert "--phone: '1.38001E+10' is not a mainland mobile number" in done.stderr
    with brand.engine.connect() as conn:
        assert conn.execute(select(suppressions)).all() == []


# --------------------------------------------------------------------------- migration 0006

def test_migration__normalises_members_and_suppressions_and_leaves_a_bad_phone(
        db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Phones stored before 0006 become bare numbers in `members` and `suppressions` (a duplicate
    opt-out collapses into one); a phone that cannot be normalised stays as stored, is reported
    masked, and leaves its member unreachable by sms and ai_call."""
    command.downgrade(_alembic_config(db), "0005")
    with db.begin() as conn:
        conn.execute(insert(members), [
            {"member_id": "M1", "phone": "+86 138 0002 8002"}, {"member_id": "M2", "phone": "13800058005"},
            {"member_id": "M3", "phone": "1.38001E+10"}, {"member_id": "M4", "phone": "+1 4155550100"},
            {"member_id": "M5", "phone": None}])
        conn.execute(insert(suppressions), [
            {"member_id": None, "phone": "+8613800001111", "channel": "sms", "source": "reply", "created_at": AT},
            {"member_id": None, "phone": "13800001111", "channel": "sms", "source": "manual", "created_at": AT},
            {"member_id": None, "phone": "0086-138-0000-2222", "channel": "all", "source": "manual", "created_at": AT},
            {"member_id": None, "phone": "abc", "channel": "sms", "source": "manual", "created_at": AT},
            {"member_id": "M2", "phone": None, "channel": "sms", "source": "manual", "created_at": AT}])
    with caplog.at_level(logging.WARNING, logger="siyu.migrations"):
        upgrade(db)
    assert is_current(db)
    assert phones(db) == {"M1": "13800028002", "M2": "13800058005", "M3": "1.38001E+10", "M4": "+1 4155550100",
                          "M5": None}
    with db.connect() as conn:
        kept = conn.execute(select(suppressions.c.member_id, suppressions.c.phone, suppressions.c.channel)
                            .order_by(suppressions.c.id)).all()
        reach = {m: (bool(sms), bool(call)) for m, sms, call in conn.execute(
            select(members.c.member_id, reachable("sms", members), reachable("ai_call", members)))}
    assert kept == [(None, "13800001111", "sms"), (None, "13800002222", "all"), (None, "abc", "sms"),
                    ("M2", None, "sms")]
    assert reach == {"M1": (True, True), "M2": (True, True), "M3": (False, False), "M4": (False, False),
                     "M5": (False, False)}
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 member phone(s) and 2 suppression phone(s) normalised (1 duplicate(s) removed)" in report
    assert "member M3: phone '1.38001E+10'" in report and "member M4: phone '+1 415****0100'" in report
    assert "suppression 4 (sms): phone 'abc'" in report
    assert "4155550100" not in report
