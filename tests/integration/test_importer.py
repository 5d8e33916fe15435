"""`import_directory` on SQLite and PostgreSQL: upserts by id, whole-file rejection, located problems."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, Table, event, func, select

from engine.errors import UsageError
from engine.store import importer
from engine.store.importer import ImportReport, import_directory
from engine.store.schema import coupons, events, member_tags, members, order_items, orders

SHANGHAI = ZoneInfo("Asia/Shanghai")
SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "acceptance" / "data"

MEMBERS = """\
member_id,nickname,phone,origin_platform,tier,points,points_expiring,points_expire_at,city,joined_at,tags,wecom_external_userid,wecom_staff_userid,oa_openid,oa_subscribed,sms_opt_out,call_opt_out
H1,Amy,13700000001,tmall,gold,120,20,2026-12-01T00:00:00+08:00,杭州,2025-01-02T10:00:00+08:00,vip|dog_owner,wm1,staff1,o1,1,0,1
H2,Bo,,,,,,,,,,,,,,,
"""
ORDERS = """\
order_id,member_id,platform,created_at,paid_at,amount,status
O1,H1,tmall,2026-11-21T23:00:00+08:00,2026-11-21T23:30:00+08:00,199.99,paid
O2,H2,jd,2026-11-20T10:00:00+08:00,,50,created
"""
ITEMS = """\
order_id,sku,category,quantity,amount,trial
O1,milk-std,pet_milk,2,150,0
O1,milk-trial,pet_milk,1,49.99,1
O2,gut-std,gut_care,,50,
"""
COUPONS = """\
coupon_id,member_id,threshold,discount,issued_at,expires_at,redeemed_at
C1,H1,250,50,2026-11-02T10:00:00+08:00,2026-11-25T23:59:00+08:00,
"""
EVENTS = """\
event_id,member_id,type,occurred_at,attributes
E1,H1,fair_visit,2026-11-19T08:00:00+08:00,"{""fair"": ""guangzhou""}"
E2,H2,app_open,2026-11-19T09:00:00+08:00,
"""
VALID = {"members.csv": MEMBERS, "orders.csv": ORDERS, "order_items.csv": ITEMS,
         "coupons.csv": COUPONS, "events.csv": EVENTS}


def write(directory: Path, files: dict[str, str], bom: bool = False) -> Path:
    directory.mkdir(exist_ok=True)
    for name, body in files.items():
        (directory / name).write_text(body, encoding="utf-8-sig" if bom else "utf-8")
    return directory


def run(db: Engine, directory: Path) -> ImportReport:
    return import_directory(db, directory, SHANGHAI, progress=False)


def rows(db: Engine, table: Table, *order_by: Any) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table).order_by(*order_by))]


def count(db: Engine, table: Table) -> int:
    with db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def snapshot(db: Engine) -> dict[str, list[dict[str, Any]]]:
    return {
        "members": rows(db, members, members.c.member_id),
        "member_tags": rows(db, member_tags, member_tags.c.member_id, member_tags.c.tag),
        "orders": rows(db, orders, orders.c.order_id),
        "order_items": rows(db, order_items, order_items.c.order_id, order_items.c.line_no),
        "coupons": rows(db, coupons, coupons.c.coupon_id),
        "events": rows(db, events, events.c.event_id),
    }


def messages(report: ImportReport) -> list[str]:
    return [str(problem) for problem in report.problems]


def test_import_directory__imports_a_small_valid_set(db: Engine, tmp_path: Path) -> None:
    """Every file of a valid set is imported, with typed values, tags and numbered items."""
    report = run(db, write(tmp_path / "data", VALID))

    assert report.problems == []
    assert [(Path(f.file).name, f.rows) for f in report.files] == [
        ("members.csv", 2), ("orders.csv", 2), ("order_items.csv", 3), ("coupons.csv", 1), ("events.csv", 2)]
    amy, bo = rows(db, members, members.c.member_id)
    assert amy == {
        "member_id": "H1", "nickname": "Amy", "phone": "13700000001", "origin_platform": "tmall",
        "tier": "gold", "points": 120, "points_expiring": 20,
        "points_expire_at": datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "city": "杭州",
        "joined_at": datetime(2025, 1, 2, 2, 0, tzinfo=UTC), "wecom_external_userid": "wm1",
        "wecom_staff_userid": "staff1", "oa_openid": "o1", "oa_subscribed": True, "sms_opt_out": False,
        "call_opt_out": True,
    }
    assert bo["points"] is None and bo["phone"] is None and bo["oa_subscribed"] is False
    assert [(r["member_id"], r["tag"]) for r in rows(db, member_tags, member_tags.c.tag)] == [
        ("H1", "dog_owner"), ("H1", "vip")]
    assert [(r["order_id"], r["line_no"], r["quantity"], r["amount_fen"], r["trial"])
            for r in rows(db, order_items, order_items.c.order_id, order_items.c.line_no)] == [
        ("O1", 1, 2, 15000, False), ("O1", 2, 1, 4999, True), ("O2", 1, 1, 5000, False)]
    (coupon,) = rows(db, coupons)
    assert (coupon["threshold_fen"], coupon["discount_fen"], coupon["redeemed_at"]) == (25000, 5000, None)
    assert [r["status"] for r in rows(db, orders, orders.c.order_id)] == ["paid", "created"]


def test_import_directory__reads_timestamps_without_offset_in_the_given_zone(db: Engine, tmp_path: Path) -> None:
    """A paid_at of 2026-11-21T23:30:00 without an offset is Shanghai time, stored as 15:30 UTC."""
    local = ORDERS.replace("2026-11-21T23:30:00+08:00", "2026-11-21T23:30:00")
    report = run(db, write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": local}))

    assert report.problems == []
    assert rows(db, orders, orders.c.order_id)[0]["paid_at"] == datetime(2026, 11, 21, 15, 30, tzinfo=UTC)


def test_import_directory__reimport_changes_nothing(db: Engine, tmp_path: Path) -> None:
    """Importing the same files twice leaves every row and value as after the first import."""
    data = write(tmp_path / "data", VALID)
    run(db, data)
    first = snapshot(db)

    report = run(db, data)

    assert report.problems == []
    assert snapshot(db) == first
    assert count(db, order_items) == 3 and count(db, member_tags) == 2


def test_import_directory__reimport_replaces_items_and_tags(db: Engine, tmp_path: Path) -> None:
    """A later file's items and tags replace the stored ones; orders it does not list keep theirs."""
    run(db, write(tmp_path / "data", VALID))
    fewer_items = "order_id,sku,category,quantity,amount,trial\nO1,milk-big,pet_milk,3,300,0\n"
    new_tags = MEMBERS.replace("vip|dog_owner", "cat_owner")

    report = run(db, write(tmp_path / "again", {"members.csv": new_tags, "order_items.csv": fewer_items}))

    assert report.problems == []
    assert [(r["order_id"], r["line_no"], r["sku"])
            for r in rows(db, order_items, order_items.c.order_id, order_items.c.line_no)] == [
        ("O1", 1, "milk-big"), ("O2", 1, "gut-std")]
    assert [(r["member_id"], r["tag"]) for r in rows(db, member_tags, member_tags.c.tag)] == [("H1", "cat_owner")]


def test_import_directory__absent_optional_column_keeps_stored_values(db: Engine, tmp_path: Path) -> None:
    """A file without the phone and tags columns updates the others and leaves phone and tags as stored."""
    run(db, write(tmp_path / "data", {"members.csv": MEMBERS}))

    report = run(db, write(tmp_path / "again", {"members.csv": "member_id,tier\nH1,platinum\nH3,normal\n"}))

    assert report.problems == []
    amy, _, new = rows(db, members, members.c.member_id)
    assert (amy["tier"], amy["phone"], amy["oa_subscribed"]) == ("platinum", "13700000001", True)
    assert (new["member_id"], new["phone"], new["sms_opt_out"]) == ("H3", None, False)
    assert count(db, member_tags) == 2


def test_import_directory__bad_order_row_rejects_only_orders_csv(db: Engine, tmp_path: Path) -> None:
    """A paid order without paid_at imports nothing from orders.csv, while members.csv still imports."""
    bad = ORDERS.replace("jd,2026-11-20T10:00:00+08:00,,50,created", "jd,2026-11-20T10:00:00+08:00,,50,paid")
    data = write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": bad})

    report = run(db, data)

    assert messages(report) == [f"{data}/orders.csv:3: paid_at: status is paid but paid_at is empty"]
    assert [(Path(f.file).name, f.rows) for f in report.files] == [("members.csv", 2), ("orders.csv", 0)]
    assert count(db, members) == 2 and count(db, orders) == 0


def test_import_directory__reports_every_bad_row_with_its_line(db: Engine, tmp_path: Path) -> None:
    """Each bad row is reported at its physical line (quoted newlines counted) with the column and why."""
    body = (
        "order_id,member_id,platform,created_at,paid_at,amount,status\n"
        'O1,H1,"tm\nall",2026-11-21T23:00:00,2026-11-21T23:30:00,12.345,paid\n'
        "O2,H1,jd,yesterday,,-5,created\n"
        "O1,H1,jd,,,1,shipped\n"
        "O4,H1,jd\n"
        ",H1,jd,,,abc,created\n"
    )
    data = write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": body})

    report = run(db, data)

    assert [message.removeprefix(f"{data}/orders.csv:") for message in messages(report)] == [
        "2: amount: '12.345' has more than 2 decimals (write yuan, e.g. 199.99)",
        "4: created_at: bad date/time 'yesterday': use ISO 8601, e.g. 2026-11-22T10:00:00+08:00",
        "4: amount: '-5' is negative",
        "5: status: 'shipped' is not a status (use created, paid, refunded)",
        "5: order_id: 'O1' appears more than once in this file",
        "6: row: has 3 values but the header has 7 columns",
        "7: order_id: is empty",
        "7: amount: 'abc' is not a number (write yuan, e.g. 199.99)",
    ]
    assert count(db, orders) == 0


def test_import_directory__reports_bad_booleans_and_numbers(db: Engine, tmp_path: Path) -> None:
    """A boolean other than 0/1 and points that are not a whole number are bad rows."""
    body = "member_id,points,sms_opt_out\nH1,1.5,0\nH2,3,yes\n"
    data = write(tmp_path / "data", {"members.csv": body})

    report = run(db, data)

    assert messages(report) == [
        f"{data}/members.csv:2: points: '1.5' is not a whole number of 0 or more",
        f"{data}/members.csv:3: sms_opt_out: 'yes' must be 0 or 1",
    ]
    assert count(db, members) == 0


def test_import_directory__unknown_member_is_a_bad_row(db: Engine, tmp_path: Path) -> None:
    """An order for a member neither stored nor in members.csv is reported and its file is not imported."""
    body = ORDERS + "O3,H404,jd,,,10,created\n"
    data = write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": body, "coupons.csv": COUPONS})

    report = run(db, data)

    assert messages(report) == [
        f"{data}/orders.csv:4: member_id: unknown member 'H404' (not in the database or in members.csv)"]
    assert count(db, orders) == 0 and count(db, coupons) == 1


def test_import_directory__unknown_order_of_an_item_is_a_bad_row(db: Engine, tmp_path: Path) -> None:
    """An item whose order is neither stored nor in orders.csv is reported."""
    run(db, write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": ORDERS}))
    data = write(tmp_path / "items", {"order_items.csv": ITEMS + "O9,x,y,1,1,0\n"})

    report = run(db, data)

    assert messages(report) == [
        f"{data}/order_items.csv:5: order_id: unknown order 'O9' (not in the database or in orders.csv)"]
    assert count(db, order_items) == 0


def test_import_directory__checks_members_in_batches(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members and orders are looked up one query per chunk, not one per row, and chunks join up exactly."""
    monkeypatch.setattr(importer, "CHUNK_ROWS", 40)
    member_rows = "".join(f"M{i},\n" for i in range(100))
    order_rows = "".join(f"O{i},M{i % 100},{i}.5,created\n" for i in range(200))
    item_rows = "".join(f"O{i % 7},s{i}\n" for i in range(100))
    data = write(tmp_path / "data", {"members.csv": "member_id,tags\n" + member_rows,
                                     "orders.csv": "order_id,member_id,amount,status\n" + order_rows,
                                     "order_items.csv": "order_id,sku\n" + item_rows})
    lookups: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            lookups.append(statement)

    event.listen(db, "before_cursor_execute", record)
    report = run(db, data)
    event.remove(db, "before_cursor_execute", record)

    assert report.problems == []
    assert sum("FROM members" in s for s in lookups) == 5 and sum("FROM orders" in s for s in lookups) == 3
    assert count(db, orders) == 200
    assert [r["line_no"] for r in rows(db, order_items, order_items.c.line_no)
            if r["order_id"] == "O3"] == list(range(1, 15))


def test_import_directory__unknown_extra_column_is_a_header_problem(db: Engine, tmp_path: Path) -> None:
    """A header naming a column the contract does not know rejects the file at line 1."""
    body = MEMBERS.replace("call_opt_out\n", "call_opt_out,foo\n", 1).replace(",0,1\n", ",0,1,x\n")
    data = write(tmp_path / "data", {"members.csv": body})

    report = run(db, data)

    expected = ("member_id, nickname, phone, origin_platform, tier, points, points_expiring, points_expire_at, "
                "city, joined_at, tags, wecom_external_userid, wecom_staff_userid, oa_openid, oa_subscribed, "
                "sms_opt_out, call_opt_out")
    assert messages(report) == [f"{data}/members.csv:1: header: unknown column 'foo' (expected one of {expected})"]
    assert count(db, members) == 0


def test_import_directory__duplicated_or_missing_header_column_is_a_problem(db: Engine, tmp_path: Path) -> None:
    """A column named twice, or a required column left out, rejects the file at line 1."""
    data = write(tmp_path / "data", {"members.csv": "member_id,tier,tier\nH1,a,b\n",
                                     "orders.csv": "order_id,member_id,status\nO1,H1,created\n"})

    report = run(db, data)

    assert messages(report) == [
        f"{data}/members.csv:1: header: column 'tier' appears more than once",
        f"{data}/orders.csv:1: header: required column 'amount' is missing",
    ]


def test_import_directory__stores_yuan_as_exact_fen(db: Engine, tmp_path: Path) -> None:
    """An amount of 199.99 yuan is stored as exactly 19999 fen."""
    run(db, write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": ORDERS}))

    assert [r["amount_fen"] for r in rows(db, orders, orders.c.order_id)] == [19999, 5000]


def test_import_directory__stores_event_attributes_and_reports_bad_json(db: Engine, tmp_path: Path) -> None:
    """Attributes are stored as a JSON object (empty means {}); broken JSON or a non-object is a bad row."""
    run(db, write(tmp_path / "data", {"members.csv": MEMBERS, "events.csv": EVENTS}))
    bad = EVENTS + 'E3,H1,x,2026-11-19T09:00:00+08:00,"{""fair"": "\nE4,H1,x,2026-11-19T09:00:00+08:00,[1]\n'
    data = write(tmp_path / "bad", {"events.csv": bad})

    report = run(db, data)

    assert [r["attributes"] for r in rows(db, events, events.c.event_id)] == [{"fair": "guangzhou"}, {}]
    assert messages(report) == [
        f"{data}/events.csv:4: attributes: is not valid JSON (Expecting value at character 9)",
        f'{data}/events.csv:5: attributes: must be a JSON object such as {{"fair": "guangzhou"}}, not \'[1]\'',
    ]


def test_import_directory__tolerates_a_bom(db: Engine, tmp_path: Path) -> None:
    """Files saved with a UTF-8 byte-order mark import like files without one."""
    report = run(db, write(tmp_path / "data", VALID, bom=True))

    assert report.problems == []
    assert count(db, members) == 2 and count(db, events) == 2


def test_import_directory__reports_a_file_that_is_not_utf8(db: Engine, tmp_path: Path) -> None:
    """A file in another encoding is one problem for that file, and rows that need it say why."""
    data = write(tmp_path / "data", {"orders.csv": ORDERS})
    (data / "members.csv").write_bytes(MEMBERS.encode("gb18030"))

    report = run(db, data)

    assert [(p.file, p.line) for p in report.problems] == [
        (f"{data}/members.csv", None), (f"{data}/orders.csv", 2), (f"{data}/orders.csv", 3)]
    assert "is not UTF-8 text" in report.problems[0].message
    assert report.problems[1].message == (
        "member_id: unknown member 'H1' (members.csv has problems and was not imported)")
    assert count(db, members) == 0


def test_import_directory__refuses_a_directory_without_csv_files(db: Engine, tmp_path: Path) -> None:
    """A directory holding none of the five files, or no directory at all, is a usage error."""
    with pytest.raises(UsageError, match="no CSV file to import"):
        run(db, tmp_path)
    with pytest.raises(UsageError, match="cannot read the directory"):
        run(db, tmp_path / "missing")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"no acceptance sample at {SAMPLE}")
def test_import_directory__imports_the_acceptance_sample(db: Engine, tmp_path: Path) -> None:
    """The public sample imports without problems: every row, tag and fen of it."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)

    report = run(db, data)

    assert report.problems == []
    assert {Path(f.file).name: f.rows for f in report.files} == {
        "members.csv": 837, "orders.csv": 2596, "order_items.csv": 2596, "coupons.csv": 253, "events.csv": 165}
    with (data / "members.csv").open(encoding="utf-8-sig", newline="") as handle:
        tags = sum(len(set(filter(None, r["tags"].split("|")))) for r in csv.DictReader(handle))
    with (data / "orders.csv").open(encoding="utf-8-sig", newline="") as handle:
        fen = sum(int(Decimal(r["amount"]) * 100) for r in csv.DictReader(handle))
    assert count(db, members) == 837 and count(db, member_tags) == tags
    assert (count(db, orders), count(db, order_items), count(db, coupons), count(db, events)) == (
        2596, 2596, 253, 165)
    with db.connect() as conn:
        assert conn.scalar(select(func.sum(orders.c.amount_fen))) == fen


def test_import_directory__paid_orders_need_a_paid_at_column(db: Engine, tmp_path: Path) -> None:
    """Without a paid_at column a paid order is a bad row, while unpaid ones would import."""
    body = "order_id,member_id,amount,status\nO1,H1,10,created\nO2,H1,10,paid\n"
    data = write(tmp_path / "data", {"members.csv": MEMBERS, "orders.csv": body})

    report = run(db, data)

    assert messages(report) == [f"{data}/orders.csv:3: paid_at: status is paid but the file has no paid_at column"]
    assert count(db, orders) == 0
