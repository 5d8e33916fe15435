"""`ensure_demo`: deterministic, reusable demo data whose shape feeds every kind of playbook."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, update
from testdb import new_database_url

from engine.errors import DatabaseError, UsageError
from engine.store import demo
from engine.store.connect import open_engine, upgrade
from engine.store.demo import DATA_TABLES, DemoSpec, ensure_demo
from engine.store.schema import coupons, events, member_tags, members, order_items, orders, store_meta

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 22)


def _spec(members: int, seed: int = 7) -> DemoSpec:
    return DemoSpec(members, seed, today=TODAY, tz=SHANGHAI)


def _local(days_ago: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour, minute), tzinfo=SHANGHAI).astimezone(UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def _digest(engine: Engine) -> str:
    """sha256 over the sorted, backend-neutral rows of every demo table and of store_meta."""
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in (*DATA_TABLES, store_meta):
            rows = sorted(repr(tuple(_plain(v) for v in row)) for row in conn.execute(select(table)))
            digest.update(f"{table.name}:{len(rows)}\n".encode())
            for row in rows:
                digest.update(row.encode() + b"\n")
    return digest.hexdigest()


@pytest.fixture
def other_sqlite(tmp_path: Path) -> Iterator[Engine]:
    """A second, empty, migrated SQLite database."""
    engine = open_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def test_ensure_demo__same_spec_gives_identical_rows_in_two_databases(db: Engine, other_sqlite: Engine) -> None:
    """The same spec written into this backend and into a separate SQLite file gives identical row sets."""
    assert ensure_demo(db, _spec(500), progress=False)
    assert ensure_demo(other_sqlite, _spec(500), progress=False)
    assert _digest(db) == _digest(other_sqlite)


def test_ensure_demo__smaller_demo_is_a_prefix_of_a_larger_one(db: Engine, other_sqlite: Engine) -> None:
    """Members are drawn one by one, so member M0000042 is the same whether the demo has 100 or 300 members."""
    ensure_demo(db, _spec(100), progress=False)
    ensure_demo(other_sqlite, _spec(300), progress=False)
    query = select(orders).where(orders.c.member_id <= "M0000100").order_by(orders.c.order_id)
    with db.connect() as small, other_sqlite.connect() as large:
        assert [tuple(r) for r in small.execute(query)] == [tuple(r) for r in large.execute(query)]


def test_ensure_demo__same_spec_is_reused(db: Engine) -> None:
    """A second call with the same spec returns False and changes nothing."""
    assert ensure_demo(db, _spec(200), progress=False) is True
    before = _digest(db)
    assert ensure_demo(db, _spec(200), progress=False) is False
    assert _digest(db) == before


def test_ensure_demo__different_seed_regenerates(db: Engine) -> None:
    """Another seed replaces the demo (same member count, other rows) and records the new seed."""
    ensure_demo(db, _spec(200), progress=False)
    before = _digest(db)
    assert ensure_demo(db, _spec(200, seed=8), progress=False) is True
    assert _digest(db) != before
    with db.connect() as conn:
        meta = dict(conn.execute(select(store_meta.c.key, store_meta.c.value)).all())
        assert conn.execute(select(func.count()).select_from(members)).scalar_one() == 200
    assert meta["demo.seed"] == "8"
    assert meta["demo.members"] == "200"
    assert meta["demo.today"] == "2026-11-22"
    assert meta["demo.state"] == "complete"


def test_ensure_demo__interrupted_generation_is_redone(db: Engine) -> None:
    """A demo whose generation never finished is not reused: it is generated again, identically."""
    ensure_demo(db, _spec(100), progress=False)
    before = _digest(db)
    with db.begin() as conn:
        conn.execute(update(store_meta).where(store_meta.c.key == "demo.state").values(value="generating"))
        conn.execute(orders.delete().where(orders.c.member_id == "M0000001"))
    assert ensure_demo(db, _spec(100), progress=False) is True
    assert _digest(db) == before


def test_ensure_demo__refuses_members_it_did_not_write(db: Engine) -> None:
    """A database holding imported members and no demo record is refused and left as it was."""
    with db.begin() as conn:
        conn.execute(insert(members).values(member_id="H1", nickname="真实会员"))
    with pytest.raises(DatabaseError, match="not a Siyu demo"):
        ensure_demo(db, _spec(10), progress=False)
    with db.connect() as conn:
        assert conn.execute(select(members.c.member_id)).scalars().all() == ["H1"]


def test_demo_spec__refuses_a_member_count_out_of_range() -> None:
    """Zero members, or more than seven-digit ids allow, is a usage error naming --members."""
    with pytest.raises(UsageError, match="--members"):
        _spec(0)
    with pytest.raises(UsageError, match="--members"):
        _spec(10_000_000)


def test_ensure_demo__keeps_the_cut_off_on_a_daylight_saving_changeover(db: Engine) -> None:
    """In New York on the morning clocks spring forward, nothing is dated after 10:00 local either."""
    new_york = ZoneInfo("America/New_York")
    spec = DemoSpec(300, 7, today=date(2026, 3, 8), tz=new_york)
    ensure_demo(db, spec, progress=False)
    with db.connect() as conn:
        latest = max(conn.execute(select(func.max(orders.c.created_at))).scalar_one(),
                     conn.execute(select(func.max(events.c.occurred_at))).scalar_one())
    assert spec.as_of == datetime(2026, 3, 8, 14, 0, tzinfo=UTC)
    assert latest.astimezone(new_york).date() == date(2026, 3, 8)
    assert latest <= spec.as_of


@pytest.fixture
def world(db: Engine) -> Engine:
    """The 2,000-member demo as of 2026-11-22 10:00 Shanghai."""
    ensure_demo(db, _spec(2_000), progress=False)
    return db


def test_demo_world__has_a_realistic_shape(world: Engine) -> None:
    """About eight orders per member, half reachable on WeCom, a few percent refunded, nothing after 10:00."""
    cutoff = _local(0, 10)
    with world.connect() as conn:
        n_members = conn.execute(select(func.count()).select_from(members)).scalar_one()
        statuses = Counter(dict(conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all()))
        wecom = conn.execute(select(func.count()).where(members.c.wecom_external_userid.is_not(None))).scalar_one()
        staff = conn.execute(select(func.count()).where(members.c.wecom_staff_userid.is_not(None))).scalar_one()
        no_phone = conn.execute(select(func.count()).where(members.c.phone.is_(None))).scalar_one()
        tags = Counter(dict(conn.execute(select(member_tags.c.tag, func.count()).group_by(member_tags.c.tag)).all()))
        mismatched = conn.execute(
            select(func.count()).select_from(
                select(orders.c.order_id).join(order_items, order_items.c.order_id == orders.c.order_id)
                .group_by(orders.c.order_id, orders.c.amount_fen)
                .having(func.sum(order_items.c.amount_fen) != orders.c.amount_fen).subquery())).scalar_one()
        platforms = set(conn.execute(select(orders.c.platform).distinct()).scalars())
        latest = [conn.execute(select(func.max(column))).scalar_one()
                  for column in (orders.c.created_at, orders.c.paid_at, events.c.occurred_at, members.c.joined_at,
                                 coupons.c.issued_at, coupons.c.redeemed_at)]
        early_payments = conn.execute(select(func.count()).where(orders.c.paid_at < orders.c.created_at)).scalar_one()
    assert n_members == 2_000
    assert 6 <= statuses.total() / n_members <= 10
    assert 0.02 <= statuses["refunded"] / statuses.total() <= 0.06
    assert 0 < statuses["created"] / statuses.total() <= 0.03
    assert 0.45 <= wecom / n_members <= 0.65
    assert staff == wecom
    assert 0.02 <= no_phone / n_members <= 0.08
    assert 0.01 <= tags["do_not_disturb"] / n_members <= 0.06
    assert tags["dog_owner"] > 0 and tags["cat_owner"] > 0
    assert mismatched == 0
    assert platforms == {"tmall", "douyin", "jd", "channels", "offline"}
    assert all(moment is not None and moment <= cutoff for moment in latest), latest
    assert early_payments == 0


def _purchase_facts(world: Engine) -> dict[str, Any]:
    """What the audience checks below need, read once."""
    with world.connect() as conn:
        milk = conn.execute(
            select(orders.c.member_id, orders.c.created_at, orders.c.paid_at, orders.c.status)
            .join(order_items, order_items.c.order_id == orders.c.order_id)
            .where(order_items.c.category == "pet_milk", order_items.c.trial.is_(False))
            .order_by(orders.c.member_id, orders.c.created_at)).all()
        morning = conn.execute(select(events.c.occurred_at, events.c.attributes).where(
            events.c.type == "order_created", events.c.occurred_at >= _local(0, 8),
            events.c.occurred_at < _local(0, 10))).all()
        today = {r.order_id: r for r in conn.execute(select(orders).where(orders.c.created_at >= _local(0, 8)))}
        per_member = conn.execute(
            select(orders.c.member_id, func.max(orders.c.paid_at).label("last"),
                   func.avg(orders.c.amount_fen).label("aov"))
            .where(orders.c.status == "paid").group_by(orders.c.member_id)).all()
    return {"milk": milk, "morning": morning, "today": today, "per_member": per_member}


def test_demo_world__holds_members_for_each_kind_of_playbook(world: Engine) -> None:
    """Pet milk bought 21 days ago, lapsed big spenders, unpaid orders this morning, expiring coupons, points, trials."""
    facts = _purchase_facts(world)
    last_milk: dict[str, datetime] = {}
    for row in facts["milk"]:
        if row.status == "paid":
            last_milk[row.member_id] = row.paid_at
    assert sum(1 for paid_at in last_milk.values() if _local(21) <= paid_at < _local(20)) >= 5

    milk = facts["milk"]
    gaps = [(b.created_at - a.created_at).days for a, b in itertools.pairwise(milk)
            if a.member_id == b.member_id]
    assert len(gaps) > 1_000
    assert sum(1 for g in gaps if 23 <= g <= 35) / len(gaps) >= 0.85

    lapsed = [m for m in facts["per_member"] if _local(180) <= m.last < _local(89)]
    assert 0.10 <= len(lapsed) / 2_000 <= 0.35
    assert sum(1 for m in lapsed if m.aov >= 15_000) >= 0.25 * len(lapsed)

    morning, today = facts["morning"], facts["today"]
    unpaid = [e for e in morning if today[e.attributes["order_id"]].status == "created"]
    paid = [e for e in morning if today[e.attributes["order_id"]].status == "paid"]
    assert len(unpaid) >= 3 and len(paid) >= 3
    assert all(today[e.attributes["order_id"]].created_at == e.occurred_at for e in morning)
    assert all(today[e.attributes["order_id"]].amount_fen == round(float(e.attributes["amount"]) * 100)
               for e in morning)

    cutoff = _local(0, 10)
    with world.connect() as conn:
        soon = conn.execute(select(func.count()).where(
            coupons.c.redeemed_at.is_(None), coupons.c.expires_at > cutoff,
            coupons.c.expires_at < _local(-4))).scalar_one()
        redeemed = conn.execute(select(func.count()).where(coupons.c.redeemed_at.is_not(None))).scalar_one()
        expired = conn.execute(select(func.count()).where(coupons.c.expires_at < cutoff)).scalar_one()
        points = conn.execute(select(func.count()).where(
            members.c.points_expiring >= 500, members.c.points_expire_at < _local(-31))).scalar_one()
        trials = conn.execute(
            select(func.count(orders.c.member_id.distinct()))
            .join(order_items, order_items.c.order_id == orders.c.order_id)
            .where(order_items.c.sku == "joint_care-trial", order_items.c.trial.is_(True),
                   orders.c.status == "paid", orders.c.paid_at >= _local(7), orders.c.paid_at < _local(6))
        ).scalar_one()
    assert soon >= 10 and redeemed >= 10 and expired >= 10
    assert points >= 3
    assert trials >= 1


def _stored(engine: Engine) -> tuple[list[str], dict[str, str]]:
    """The demo tables' rows exactly as the driver returns them (no Core types), and their indexes."""
    with engine.connect() as conn:
        rows = [repr(conn.exec_driver_sql(f"SELECT * FROM {table.name} ORDER BY 1, 2").all())
                for table in DATA_TABLES]
        if engine.dialect.name == "sqlite":
            indexes = dict(conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").all())
        else:
            indexes = dict(conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "UNION ALL SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = current_schema()::regnamespace").all())
    return rows, indexes


def test_ensure_demo__bulk_load_stores_what_core_inserts_store(db_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """COPY / raw executemany, with indexes made after the load, store the very values and types that
    Core's insert() stores (SQLite compares instants as text), and leave the same indexes and constraints."""
    @contextmanager
    def core_inserts(conn: Connection) -> Iterator[demo._Loader]:
        yield demo._Loader(conn)

    bulk = open_engine(db_url)
    ensure_demo(bulk, _spec(300), progress=False)
    monkeypatch.setattr(demo._Loader, "open", staticmethod(core_inserts))
    (tmp_path / "core").mkdir()
    urls = new_database_url(bulk.dialect.name, tmp_path / "core")
    core = open_engine(next(urls))
    try:
        ensure_demo(core, _spec(300), progress=False)
        assert _stored(bulk) == _stored(core)
    finally:
        core.dispose()
        bulk.dispose()
        next(urls, None)


def test_ensure_demo__interrupted_load_leaves_the_schema_and_connection_as_they_were(db: Engine) -> None:
    """A failure in the middle of replacing a demo rolls back the emptied tables and the dropped indexes,
    puts SQLite's pragmas back on the pooled connection, and the next call replaces the old rows."""
    ensure_demo(db, _spec(120, seed=8), progress=False)
    before = _stored(db)

    def failing(index: int, *args: Any) -> None:
        if index == 50:
            raise KeyboardInterrupt
        real(index, *args)

    real = demo._member
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "_member", failing)
        with pytest.raises(KeyboardInterrupt):
            ensure_demo(db, _spec(100), progress=False)
    assert _stored(db) == before
    with db.connect() as conn:
        assert conn.execute(select(store_meta.c.value).where(store_meta.c.key == "demo.state")).scalar_one() \
            == "generating"
        if db.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    assert ensure_demo(db, _spec(100), progress=False) is True
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(members)).scalar_one() == 100
        assert conn.execute(select(func.max(members.c.member_id))).scalar_one() == "M0000100"


def test_ensure_demo__loads_while_another_sqlite_connection_is_open(sqlite_url: str) -> None:
    """With another connection open SQLite cannot leave WAL for the load; it loads in WAL instead."""
    engine = open_engine(sqlite_url)
    try:
        with engine.connect() as other:
            other.exec_driver_sql("SELECT 1").all()
            other.commit()
            assert ensure_demo(engine, _spec(100), progress=False) is True
            assert other.execute(select(func.count()).select_from(members)).scalar_one() == 100
            assert other.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        engine.dispose()
