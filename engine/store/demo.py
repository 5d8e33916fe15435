"""A deterministic synthetic brand for `siyu demo`: a pet-nutrition shop's members and history.

The world stands at `today` 10:00 local (`DemoSpec.as_of`): nothing in it happens later, except
the coupon and points expiry dates. Each member draws from its own `random.Random` seeded by
(seed, member number), so a spec always gives the same rows, whatever the chunking, and the first
500 members of a 1M demo are those of a 500-member demo. `ensure_demo` records the spec in
`store_meta` and reuses a finished demo with the same spec.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sqlite3
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, date, datetime, time, timedelta
from operator import itemgetter
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import JSON, Connection, Engine, Table, delete, insert, select, text, update

from engine.clock import day_start
from engine.errors import DatabaseError, UsageError
from engine.store.schema import (
    UtcDateTime,
    coupons,
    events,
    member_tags,
    members,
    order_items,
    orders,
    store_meta,
)

GENERATOR = "1"
"""Bumped whenever the generated world changes, so that older demos are regenerated."""
CHUNK_MEMBERS = 5_000
MAX_MEMBERS = 9_999_999  # ids are M + 7 digits

Row = tuple[Any, ...]
T = TypeVar("T")

# Columns written, by name, so a column added to the schema later keeps its default.
_COLUMNS: dict[Table, tuple[str, ...]] = {
    members: ("member_id", "nickname", "phone", "origin_platform", "tier", "points", "points_expiring",
              "points_expire_at", "city", "joined_at", "wecom_external_userid", "wecom_staff_userid",
              "oa_openid", "oa_subscribed", "sms_opt_out", "call_opt_out"),
    member_tags: ("member_id", "tag"),
    orders: ("order_id", "member_id", "platform", "created_at", "paid_at", "amount_fen", "status"),
    order_items: ("order_id", "line_no", "sku", "category", "quantity", "amount_fen", "trial"),
    coupons: ("coupon_id", "member_id", "threshold_fen", "discount_fen", "issued_at", "expires_at",
              "redeemed_at"),
    events: ("event_id", "member_id", "type", "occurred_at", "attributes"),
}
DATA_TABLES: tuple[Table, ...] = tuple(_COLUMNS)
"""The tables the demo owns, parents first; regeneration empties them."""


@dataclass(frozen=True)
class DemoSpec:
    """What `siyu demo` generates: how many members, from which seed, as of which local day."""

    members: int = 20_000
    seed: int = 7
    _: KW_ONLY
    today: date  #: the reference date, local to `tz`; the world stands at 10:00 that day
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if not 1 <= self.members <= MAX_MEMBERS:
            raise UsageError(f"the demo needs 1 to {MAX_MEMBERS:,} members, not {self.members:,}",
                             location="--members")

    @property
    def as_of(self) -> datetime:
        """The instant the demo world stands at: `today` 10:00 local, in UTC."""
        return datetime.combine(self.today, time(10), tzinfo=self.tz).astimezone(UTC)

    def meta(self) -> dict[str, str]:
        """The `store_meta` rows that identify this demo."""
        return {"demo.members": str(self.members), "demo.seed": str(self.seed),
                "demo.today": self.today.isoformat(), "demo.tz": self.tz.key, "demo.generator": GENERATOR}


def ensure_demo(engine: Engine, spec: DemoSpec, progress: bool = True) -> bool:
    """Make the database hold the demo of `spec`; False if it already did, True if it was (re)generated.

    A demo with another spec, or one whose generation was interrupted, is replaced. A
    database with members that no demo wrote is refused (DatabaseError), never emptied.

    The spec is first recorded with `demo.state` "generating". One transaction (`_Loader`) then
    empties the demo tables, writes every row and marks the demo complete: interrupted, it
    leaves the state "generating", so the next call replaces whatever the tables hold.
    """
    wanted = spec.meta()
    with engine.begin() as conn:
        recorded: dict[str, str] = dict(conn.execute(
            select(store_meta.c.key, store_meta.c.value).where(store_meta.c.key.like("demo.%"))).all())
        if recorded == {**wanted, "demo.state": "complete"}:
            return False
        if not recorded and conn.execute(select(members.c.member_id).limit(1)).first() is not None:
            raise DatabaseError(f"{engine.url.render_as_string(hide_password=True)} holds members that are "
                                "not a Siyu demo; use an empty database for `siyu demo`", location="--db")
        conn.execute(delete(store_meta).where(store_meta.c.key.like("demo.%")))
        conn.execute(insert(store_meta), [{"key": k, "value": v}
                                          for k, v in {**wanted, "demo.state": "generating"}.items()])
    calendar = _Calendar.build(spec)
    bar = Progress(TextColumn("demo data"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar, engine.connect() as conn, _Loader.open(conn) as loader:
        task = bar.add_task("members", total=spec.members)
        conn.execution_options(sqlite_begin="IMMEDIATE")  # SQLite: the write lock up front (engine.store.connect)
        with conn.begin():
            loader.prepare()
            loader.clear()
            for first in range(1, spec.members + 1, CHUNK_MEMBERS):
                last = min(first + CHUNK_MEMBERS, spec.members + 1)
                rows: dict[Table, list[Row]] = {table: [] for table in DATA_TABLES}
                for index in range(first, last):
                    _member(index, spec.seed, calendar, rows)
                for table in DATA_TABLES:
                    loader.append(table, rows[table])
                bar.advance(task, last - first)
            finishing = bar.add_task("indexes and statistics", total=loader.steps + 1)
            for _ in loader.finish():
                bar.advance(finishing)
            conn.execute(update(store_meta).where(store_meta.c.key == "demo.state").values(value="complete"))
            _refresh_statistics(conn)
            bar.advance(finishing)
    return True


class _Loader:
    """Appends the demo's rows within one transaction, the fastest way each backend allows.

    Secondary indexes (and, on PostgreSQL, foreign keys) are dropped inside that transaction and
    made again from their own stored definitions before it commits: building an index once from
    sorted runs is several times faster than updating it row by row, and DDL is transactional on
    both backends, so an interrupted load rolls the schema back with the rows.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.deferred: list[str] = []  #: the DDL that `finish` runs, in order

    @staticmethod
    @contextmanager
    def open(conn: Connection) -> Iterator[_Loader]:
        """The loader for `conn`'s backend, set up outside any transaction (and restored after)."""
        if conn.dialect.name == "postgresql":
            yield _PostgresLoader(conn)
        elif conn.dialect.name == "sqlite":
            with _SqliteLoader.pragmas(conn):
                yield _SqliteLoader(conn)
        else:
            yield _Loader(conn)

    def prepare(self) -> None:
        """Defer index maintenance to `finish` (nothing, on backends with no bulk path)."""

    def clear(self) -> None:
        """Empty the demo tables, children first."""
        for table in reversed(DATA_TABLES):
            self.conn.execute(delete(table))

    def append(self, table: Table, rows: list[Row]) -> None:
        """Append `rows` (tuples in `_COLUMNS` order) to `table`."""
        if rows:
            names = _COLUMNS[table]
            self.conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])

    @property
    def steps(self) -> int:
        """How many times `finish` yields."""
        return len(self.deferred)

    def finish(self) -> Iterator[str]:
        """Run the deferred DDL, yielding after each statement (for the progress display)."""
        for statement in self.deferred:
            self.conn.execute(text(statement))
            yield statement

    def _quoted(self, table: Table) -> tuple[str, str]:
        """The table's quoted name and its quoted `_COLUMNS` list."""
        quote = self.conn.dialect.identifier_preparer
        return quote.format_table(table), ", ".join(quote.quote(name) for name in _COLUMNS[table])


class _PostgresLoader(_Loader):
    """Binary COPY, with the data tables' secondary indexes and foreign keys made after the load.

    Binary COPY is several times faster than text COPY, whose per-value formatting is Python;
    foreign keys checked row by row cost more than the COPY itself, while adding one back checks
    all rows in one join. Dropping takes ACCESS EXCLUSIVE locks until the commit: others cannot
    read the demo tables meanwhile. Without ownership of every table involved (DDL needs it), the
    indexes and foreign keys stay and are maintained as rows arrive.
    """

    _TABLES = "CAST(:tables AS regclass[])"

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._types: dict[Table, list[int]] = {}  #: each table's column type OIDs, in `_COLUMNS` order
        self._owned = False  #: whether this role owns the tables, which DDL and TRUNCATE need

    def prepare(self) -> None:
        tables = {"tables": [self._quoted(table)[0] for table in DATA_TABLES]}
        foreign_keys = self.conn.execute(text(
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE contype = 'f' AND (conrelid = ANY({self._TABLES}) OR confrelid = ANY({self._TABLES})) "
            "ORDER BY 1, 2"), tables).all()
        indexes = self.conn.execute(text(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            f"WHERE i.indrelid = ANY({self._TABLES}) AND NOT i.indisunique AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid "
            "AND c.contype IN ('p', 'u', 'x')) ORDER BY 1"), tables).all()
        owned = self.conn.execute(text(
            f"SELECT bool_and(pg_has_role(relowner, 'USAGE')) FROM pg_class WHERE oid = ANY({self._TABLES}) "
            "OR oid IN (SELECT conrelid FROM pg_constraint "
            f"WHERE contype = 'f' AND confrelid = ANY({self._TABLES}))"), tables).scalar_one()
        if not owned:
            return
        self._owned = True
        for name, _ in indexes:
            self.conn.execute(text(f"DROP INDEX {name}"))
        for table, name, _ in foreign_keys:
            self.conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
        self.deferred = [definition for _, definition in indexes] + [
            f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in foreign_keys]
        # An index build sorts in memory up to maintenance_work_mem (64 MB by default), then on disk.
        self.conn.execute(text("SELECT set_config('maintenance_work_mem', '256MB', true) "
                               "WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < 256 * 1024 * 1024"))

    def clear(self) -> None:
        """TRUNCATE: DELETE would fire a foreign-key trigger per row and leave every row dead in the table."""
        if self._owned:
            self.conn.execute(text(f"TRUNCATE {', '.join(self._quoted(table)[0] for table in DATA_TABLES)}"))
        else:
            super().clear()

    def append(self, table: Table, rows: list[Row]) -> None:
        if not rows:
            return
        name, columns = self._quoted(table)
        if table not in self._types:  # binary COPY sends each value as the column's own type
            oids: dict[str, int] = dict(self.conn.execute(text(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"),
                {"table": name}).all())
            self._types[table] = [oids[column] for column in _COLUMNS[table]]
        driver = self.conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(self._types[table])
            for row in rows:
                copy.write_row(row)


class _SqliteLoader(_Loader):
    """executemany on the raw sqlite3 connection, values converted column by column.

    Core builds a dict and runs bind processors for every row, which cost more than SQLite's
    own work. The values are stored exactly as Core stores them: instants as naive UTC text
    (`_SqliteInstants`), JSON through json.dumps, booleans as 0/1.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._instant = _SqliteInstants()

    @staticmethod
    @contextmanager
    def pragmas(conn: Connection) -> Iterator[None]:
        """Set the connection up for one large write transaction; put everything back afterwards.

        - foreign_keys OFF: the generator writes parents before children and only ids it made;
          `finish` still runs foreign_key_check before the commit. With foreign keys on, a
          DELETE without WHERE on a parent or child table deletes row by row, checking each;
          off, SQLite drops the table's pages at once.
        - a 256 MiB page cache (2 MiB by default), which also lets CREATE INDEX sort in memory.
        - journal_mode DELETE instead of WAL: a rollback journal keeps the original content of
          the pages that existed before the transaction only, so new pages are written once,
          where WAL writes each twice (log, then checkpoint) and grows the log to the size of
          the data. It is as crash-safe as WAL, and synchronous is left as it is. Leaving WAL
          needs the only connection to the file: with others open, the load stays in WAL.
        The first two belong to the connection, the journal mode to the file. They are set
        outside any transaction (SQLite ignores foreign_keys within one). If they cannot all be
        put back, the connection is invalidated rather than returned to the pool as it is.
        """
        driver = conn.connection.driver_connection
        assert driver is not None
        saved = {name: driver.execute(f"PRAGMA {name}").fetchone()[0]
                 for name in ("foreign_keys", "cache_size", "journal_mode")}
        try:
            driver.execute("PRAGMA foreign_keys=OFF")
            driver.execute("PRAGMA cache_size=-262144")
            with suppress(sqlite3.OperationalError):  # "database is locked": another connection is open
                driver.execute("PRAGMA journal_mode=DELETE")
            yield
        finally:
            try:
                for name, value in saved.items():
                    driver.execute(f"PRAGMA {name}={value}")
            except BaseException:
                conn.invalidate()
                raise

    def prepare(self) -> None:
        """Drop the demo tables' CREATE INDEX indexes (not those of PRIMARY KEY or UNIQUE)."""
        tables = [table.name for table in DATA_TABLES]
        indexes = self.conn.execute(text(
            "SELECT m.name, m.sql FROM sqlite_master m JOIN pragma_index_list(m.tbl_name) i ON i.name = m.name "
            f"WHERE m.type = 'index' AND i.origin = 'c' AND NOT i.\"unique\" AND m.tbl_name IN "
            f"({', '.join(f':t{n}' for n in range(len(tables)))}) ORDER BY m.name"),
            {f"t{n}": name for n, name in enumerate(tables)}).all()
        quote = self.conn.dialect.identifier_preparer.quote
        for name, _ in indexes:
            self.conn.execute(text(f"DROP INDEX {quote(name)}"))
        self.deferred = [definition for _, definition in indexes]

    def append(self, table: Table, rows: list[Row]) -> None:
        if not rows:
            return
        name, columns = self._quoted(table)
        values: Iterable[Sequence[Any]] = rows
        converters = [(n, self._instant if isinstance(table.c[column].type, UtcDateTime) else json.dumps)
                      for n, column in enumerate(_COLUMNS[table])
                      if isinstance(table.c[column].type, (UtcDateTime, JSON))]
        if converters:  # column by column: one map() per column, no Python loop per row
            by_column: list[Iterable[Any]] = [map(itemgetter(n), rows) for n in range(len(_COLUMNS[table]))]
            for n, convert in converters:
                by_column[n] = map(convert, by_column[n])
            values = zip(*by_column, strict=True)
        driver = self.conn.connection.driver_connection
        assert driver is not None
        driver.executemany(f"INSERT INTO {name} ({columns}) VALUES ({', '.join('?' * len(_COLUMNS[table]))})",
                           values)

    @property
    def steps(self) -> int:
        return len(self.deferred) + 1

    def finish(self) -> Iterator[str]:
        yield from super().finish()
        # What foreign_keys OFF did not check as rows went in and out, in every table.
        broken = self.conn.execute(text("PRAGMA foreign_key_check")).first()
        if broken is not None:
            raise DatabaseError(f"after the demo load, a {broken[0]} row refers to a missing {broken[2]} row")
        yield "PRAGMA foreign_key_check"


class _SqliteInstants:
    """Aware instants as Core stores a UtcDateTime in SQLite: naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.

    The texts of the day and of the second within it are looked up: a third of the cost of
    isoformat() on an aware datetime, for two or so instants in every row.
    """

    def __init__(self) -> None:
        self.days: dict[int, str] = {}  #: days since the epoch → "YYYY-MM-DD "
        self.clock = [f"{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}." for n in range(86_400)]

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        since = value - _EPOCH
        day = self.days.get(since.days)
        if day is None:
            midnight = _EPOCH + timedelta(days=since.days)
            day = self.days[since.days] = f"{midnight.year:04d}-{midnight.month:02d}-{midnight.day:02d} "
        return day + self.clock[since.seconds] + (f"{since.microseconds:06d}" if since.microseconds else "000000")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _refresh_statistics(conn: Connection) -> None:
    """Give the planner statistics now, so the dry-run that follows a demo gets good plans.

    SQLite's ANALYZE reads whole indexes unless `analysis_limit` bounds it; PostgreSQL samples.
    """
    if conn.dialect.name == "sqlite":
        conn.execute(text("PRAGMA analysis_limit=2000"))
    for table in DATA_TABLES:
        conn.execute(text(f"ANALYZE {table.name}"))


# --------------------------------------------------------------------------- the brand's calendar

_FUTURE_DAYS = 70  # midnights are kept from 70 days ahead (expiry dates) to 1,100 days back
_PAST_DAYS = 1_100


@dataclass(frozen=True)
class _Calendar:
    """Local midnights as UTC instants, and the brand's fairs and live streams, for one spec."""

    today: date
    tz: ZoneInfo
    as_of: datetime
    midnights: tuple[datetime, ...]  #: index = days ago + _FUTURE_DAYS
    fairs: tuple[tuple[int, str], ...]  #: (days ago of the fair's first day, fair key), newest first
    lives: tuple[tuple[int, int, str], ...]  #: (days ago, start second of the day, platform)
    seconds: tuple[timedelta, ...]  #: timedelta(seconds=n) for each second of a day: made once, not per row

    @classmethod
    def build(cls, spec: DemoSpec) -> _Calendar:
        rng = random.Random(f"siyu-demo:{spec.seed}:calendar")
        midnights = tuple(day_start(spec.today - timedelta(days=ago), spec.tz)
                          for ago in range(-_FUTURE_DAYS, _PAST_DAYS + 1))
        fairs, ago = [], rng.randint(3, 5)
        for key in itertools.cycle(_FAIR_CITIES):
            if ago > 1_090:
                break
            fairs.append((ago, key))
            ago += rng.randint(45, 75)
        lives = [(ago, rng.choice((19, 20)) * 3600 + 1800, rng.choice(("douyin", "douyin", "tmall")))
                 for ago in range(1, 61) if rng.random() < 0.45]
        return cls(spec.today, spec.tz, spec.as_of, midnights, tuple(fairs), tuple(lives),
                   tuple(timedelta(seconds=n) for n in range(86_400)))

    def at(self, days_ago: int, second: int) -> datetime:
        """The instant `second` (0 to 86,399) seconds after local midnight, `days_ago` days before today.

        Past days add elapsed seconds to midnight, which is fast; on a DST changeover day the
        wall-clock time is an hour off but, with every generated time before 23:00, the local date
        is right. Today is exact wall-clock time, as it is compared with the 10:00 cut-off.
        """
        if days_ago:
            return self.midnights[days_ago + _FUTURE_DAYS] + self.seconds[second]
        return (datetime.combine(self.today, time(0), tzinfo=self.tz) + self.seconds[second]).astimezone(UTC)

    def end_of_day(self, days_ago: int) -> datetime:
        """The last second of a local day (negative `days_ago` is in the future)."""
        return self.midnights[days_ago - 1 + _FUTURE_DAYS] - timedelta(seconds=1)


class _Weighted(Generic[T]):
    """A weighted choice among fixed values (what `rng.choices` does, without its per-call set-up)."""

    def __init__(self, pairs: Sequence[tuple[T, int]]) -> None:
        self.values = [value for value, _ in pairs]
        self.cum_weights = list(itertools.accumulate(weight for _, weight in pairs))
        self.total = self.cum_weights[-1]

    def __call__(self, rng: random.Random) -> T:
        return self.values[bisect_right(self.cum_weights, rng.random() * self.total)]


_PLATFORMS = _Weighted([("tmall", 32), ("douyin", 25), ("jd", 18), ("channels", 13), ("offline", 12)])
_WECOM_SHARE = {"offline": 0.8, "channels": 0.75, "tmall": 0.5, "douyin": 0.45, "jd": 0.45}
_CITIES = _Weighted([("上海", 14), ("北京", 12), ("深圳", 10), ("杭州", 9), ("广州", 9), ("成都", 8), ("南京", 6),
                     ("苏州", 6), ("武汉", 6), ("重庆", 5), ("西安", 4), ("天津", 4), ("长沙", 4), ("厦门", 3)])
_FAIR_CITIES = {"guangzhou": "广州", "shanghai": "上海", "beijing": "北京", "chengdu": "成都", "shenzhen": "深圳",
                "hangzhou": "杭州", "wuhan": "武汉", "nanjing": "南京"}
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁沈姚卢姜"
_GIVEN = ("静", "伟", "芳", "娜", "敏", "磊", "洋", "婷", "杰", "琳", "晨", "悦", "欣怡", "子涵", "浩然", "雨桐", "梓萱",
          "一诺", "思远", "佳怡", "俊杰", "诗涵", "宇轩", "晓雯", "文博", "梦瑶", "嘉怡", "志强", "丽娟", "建华")
_PET_NAMES = ("豆豆", "球球", "可乐", "旺财", "咪咪", "团子", "奶糖", "布丁", "雪球", "橘子", "毛毛", "年糕", "糯米",
              "七七", "元宝", "花卷", "大黄", "煤球", "拿铁", "芝麻")
_HANDLES = ("Coco", "Momo", "Lucky", "Yuki", "阿喵", "柴柴控", "金毛控", "布偶猫家长", "汪星人", "喵星球", "柯基一家")
_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_HOURS = _Weighted([(h, w) for h, w in zip(range(7, 23), (1, 2, 3, 3, 3, 4, 3, 2, 2, 3, 3, 4, 6, 8, 8, 6),
                                           strict=True)])

# --------------------------------------------------------------------------- the catalogue

_SKUS: dict[str, tuple[tuple[str, int], ...]] = {  # (sku, list price in fen), cheapest first
    "pet_milk": (("pet_milk-200g", 4900), ("pet_milk-400g", 8900), ("pet_milk-800g", 15900)),
    "shark_chondroitin": (("shark_chondroitin-120g", 11800), ("shark_chondroitin-340g", 26800)),
    "joint_care": (("joint_care-60tabs", 19900), ("joint_care-120tabs", 35900)),
    "gut_care": (("gut_care-10sachets", 3900), ("gut_care-30sachets", 9900), ("gut_care-60sachets", 17900)),
}
_TRIAL_FEN = {"pet_milk": 990, "gut_care": 990, "joint_care": 1990, "shark_chondroitin": 2900}
_ADDONS = {"pet_milk": ("gut_care", "joint_care"), "shark_chondroitin": ("gut_care", "joint_care"),
           "joint_care": ("gut_care", "shark_chondroitin"), "gut_care": ("joint_care", "shark_chondroitin")}
_PRIMARY = {
    "dog": _Weighted([("pet_milk", 42), ("shark_chondroitin", 18), ("joint_care", 14), ("gut_care", 26)]),
    "cat": _Weighted([("pet_milk", 52), ("shark_chondroitin", 4), ("joint_care", 8), ("gut_care", 36)]),
}
_PETS = _Weighted([("dog", 55), ("cat", 35), ("both", 10)])
_PROMO_PERCENT = _Weighted([(100, 45), (95, 20), (90, 20), (85, 10), (80, 5)])
_ORDER_COUNTS = {"none": _Weighted([(0, 1)]), "light": _Weighted([(1, 50), (2, 30), (3, 20)]),
                 "regular": _Weighted([(n, 1) for n in range(4, 13)]),
                 "loyal": _Weighted([(n, 1) for n in range(18, 41)])}
_FREQUENCY = _Weighted([("none", 5), ("light", 42), ("regular", 37), ("loyal", 16)])
_RECENCY = _Weighted([("active", 50), ("cooling", 10), ("lapsed", 23), ("churned", 17)])
_LOYAL_RECENCY = _Weighted([("active", 75), ("cooling", 10), ("lapsed", 10), ("churned", 5)])
_COUPON_COUNT = _Weighted([(0, 35), (1, 35), (2, 20), (3, 10)])
_COUPON_TERMS = _Weighted([((25000, 5000), 3), ((15000, 2000), 4), ((9900, 1000), 3)])


@dataclass(slots=True)
class _Profile:
    """Who a member is, before any rows are written."""

    index: int
    member_id: str
    pet: str  #: dog, cat or both
    origin: str
    habitual: str
    joined_ago: int
    aov_fen: int  #: the spending level: what a typical basket costs
    primary: str  #: the category the member keeps coming back for
    city: str
    frequency: str  #: none, light, regular or loyal: how many orders the member means to place


@dataclass(slots=True)
class _Order:
    """One planned order; ids, instants and amounts are filled in when it is placed."""

    days_ago: int
    second: int
    kind: str  #: basket, addon, trial, full, today_paid, today_unpaid
    category: str
    order_id: str = ""
    created_at: datetime | None = None
    paid_at: datetime | None = None
    amount_fen: int = 0
    status: str = "paid"


# --------------------------------------------------------------------------- one member

def _member(index: int, seed: int, cal: _Calendar, rows: dict[Table, list[Row]]) -> None:
    """Append every row of member number `index` to `rows`."""
    rng = random.Random(f"siyu-demo:{seed}:{index}")
    profile = _profile(rng, index, cal)
    plan = _plan(rng, profile, cal)
    placed = _place_orders(rng, profile, plan, cal, rows)
    issued = _coupons(rng, profile, placed, cal, rows)
    happened = _events(rng, profile, placed, cal, rows)
    first_seen = min([o.created_at for o in placed if o.created_at] + issued + happened, default=cal.as_of)
    _member_row(rng, profile, placed, cal, first_seen, rows)


def _profile(rng: random.Random, index: int, cal: _Calendar) -> _Profile:
    pet = _PETS(rng)
    origin = _PLATFORMS(rng)
    habitual = origin if rng.random() < 0.8 else _PLATFORMS(rng)
    city = _CITIES(rng)
    frequency = _FREQUENCY(rng)
    earliest = {"loyal": 400, "regular": 120}.get(frequency, 0)  # loyal buyers have been members a while
    if origin == "offline" and rng.random() < 0.7:  # signed up at a fair's booth
        fair_ago, fair = rng.choice([f for f in cal.fairs if f[0] >= earliest + 2])
        joined_ago, city = fair_ago - rng.randint(0, 2), _FAIR_CITIES[fair]
    elif rng.random() < 0.3:
        joined_ago = rng.randint(earliest, earliest + 180)
    else:
        joined_ago = rng.randint(earliest, 1_095)
    aov_fen = int(math.exp(rng.uniform(math.log(4_000), math.log(40_000))))
    primary = _PRIMARY["cat" if pet == "cat" else "dog"](rng)
    if primary == "shark_chondroitin" and aov_fen < 12_000 and rng.random() < 0.8:
        primary = "pet_milk"
    return _Profile(index, f"M{index:07d}", pet, origin, habitual, joined_ago, aov_fen, primary, city, frequency)


def _gap_days(rng: random.Random, category: str) -> int:
    if category == "pet_milk":  # a 400 g tin lasts about four weeks; now and then one is skipped
        return rng.randint(24, 35) if rng.random() < 0.95 else rng.randint(52, 66)
    if category == "shark_chondroitin":  # a 340 g tin lasts about eight weeks
        return rng.randint(50, 63)
    return rng.randint(18, 75)


def _last_order_ago(rng: random.Random, p: _Profile, bound: int) -> int:
    cycle = {"pet_milk": 35, "shark_chondroitin": 63}.get(p.primary, 46)
    recency = (_LOYAL_RECENCY if p.frequency == "loyal" else _RECENCY)(rng)
    if recency == "active":
        ago = rng.randrange(0, cycle)
    elif recency == "cooling":
        ago = rng.randint(cycle, 89)
    elif recency == "lapsed":
        ago = rng.randint(90, 180)
    else:
        ago = rng.randint(181, 700)
    return ago if ago <= bound else rng.randint(0, bound)


def _plan(rng: random.Random, p: _Profile, cal: _Calendar) -> list[_Order]:
    """When the member orders what: a repurchase cycle, add-on orders, trial packs, today's orders."""
    bound = min(p.joined_ago, 730)
    count = _ORDER_COUNTS[p.frequency](rng)
    plan: list[_Order] = []
    if count:
        days = [_last_order_ago(rng, p, bound)]
        while len(days) < count and days[-1] + (gap := _gap_days(rng, p.primary)) <= bound:
            days.append(days[-1] + gap)
        plan = [_Order(ago, _second_of_day(rng, ago), "basket", p.primary) for ago in days]
        extra = min(count - len(days), (days[-1] - days[0]) // 12)
        plan += [_Order(ago, _second_of_day(rng, ago), "addon", rng.choice(_ADDONS[p.primary]))
                 for ago in sorted(rng.randint(days[0], days[-1]) for _ in range(extra))]
        first_trial = days[-1] + rng.randint(2, 21)
        if first_trial <= bound and rng.random() < (0.35 if p.origin == "douyin" else 0.15):
            plan.append(_Order(first_trial, _second_of_day(rng, first_trial), "trial", p.primary))
        if days[0] < 46 and p.primary != "joint_care" and rng.random() < (0.06 if p.pet == "cat" else 0.25):
            trial = rng.randint(0, min(60, bound))  # a joint-care trial pack offered to an active buyer
            plan.append(_Order(trial, _second_of_day(rng, trial), "trial", "joint_care"))
            full = trial - rng.randint(4, 20)
            if full >= 0 and rng.random() < 0.35:
                plan.append(_Order(full, _second_of_day(rng, full), "full", "joint_care"))
    if rng.random() < 0.008:  # an order placed this morning, paid within minutes or not at all
        if rng.random() < 0.45:
            plan.append(_Order(0, rng.randrange(8 * 3600, 9 * 3600 + 50 * 60), "today_paid", p.primary))
        else:
            plan.append(_Order(0, rng.randrange(8 * 3600, 10 * 3600), "today_unpaid", p.primary))
    plan.sort(key=lambda o: (-o.days_ago, o.second))
    return plan


def _second_of_day(rng: random.Random, days_ago: int) -> int:
    """A local time of day for an order: evenings are busiest; today only before the 10:00 cut-off."""
    if days_ago == 0:
        return 7 * 3600 + int(rng.random() * 8_400)
    return _HOURS(rng) * 3600 + int(rng.random() * 3600)


def _lines(rng: random.Random, p: _Profile, order: _Order) -> list[Row]:
    """The order_items rows of one order: (order_id, line_no, sku, category, quantity, amount in fen, trial)."""
    category = order.category
    if order.kind == "trial":
        return [(order.order_id, 1, f"{category}-trial", category, 1, _TRIAL_FEN[category], True)]
    budget = int(p.aov_fen * rng.lognormvariate(0, 0.3))
    skus = _SKUS[category]
    sku, price = skus[0]
    if order.kind != "full":  # the dearest size the budget affords, else the cheapest
        for size in reversed(skus):
            if size[1] <= budget:
                sku, price = size
                break
    quantity = max(1, min(6, round(budget / price)))
    percent = _PROMO_PERCENT(rng)
    lines: list[Row] = [(order.order_id, 1, sku, category, quantity, price * quantity * percent // 100, False)]
    left = budget - price * quantity
    if order.kind != "full" and left > 3_000 and rng.random() < 0.5:
        addon = rng.choice(_ADDONS[category])
        affordable = [s for s in _SKUS[addon] if s[1] <= left]
        if affordable:
            lines.append((order.order_id, 2, affordable[-1][0], addon, 1, affordable[-1][1] * percent // 100, False))
    return lines


def _place_orders(rng: random.Random, p: _Profile, plan: list[_Order], cal: _Calendar,
                  rows: dict[Table, list[Row]]) -> list[_Order]:
    order_rows, item_rows, seconds = rows[orders], rows[order_items], cal.seconds
    for number, order in enumerate(plan, start=1):
        order.order_id = f"O{p.index:07d}{number:03d}"
        order.created_at = cal.at(order.days_ago, order.second)
        roll = rng.random()
        if order.kind == "today_paid":
            order.paid_at = order.created_at + seconds[rng.randint(60, 540)]
        elif order.kind == "today_unpaid" or roll < 0.012:
            order.status = "created"
        else:
            order.status = "refunded" if roll > 0.96 else "paid"
            order.paid_at = order.created_at + seconds[15 + int(rng.random() * 1_500)]
        if order.kind == "trial" and rng.random() < 0.5:
            platform = "douyin"
        else:
            platform = p.habitual if rng.random() < 0.8 else _PLATFORMS(rng)
        lines = _lines(rng, p, order)
        order.amount_fen = lines[0][5] if len(lines) == 1 else sum(line[5] for line in lines)
        order_rows.append((order.order_id, p.member_id, platform, order.created_at, order.paid_at,
                           order.amount_fen, order.status))
        item_rows += lines
    return plan


def _coupons(rng: random.Random, p: _Profile, placed: list[_Order], cal: _Calendar,
             rows: dict[Table, list[Row]]) -> list[datetime]:
    """Coupons issued over the last 120 days; 3 in 4 are redeemed by a qualifying paid order, if one came."""
    issued = []
    for number in range(1, _COUPON_COUNT(rng) + 1):
        ago = rng.randint(0, min(120, p.joined_ago))
        threshold, discount = _COUPON_TERMS(rng)
        issued_at = cal.at(ago, rng.randrange(8 * 3600, 9 * 3600 + 55 * 60) if ago == 0
                           else rng.randrange(10 * 3600, 20 * 3600))
        expires_at = cal.end_of_day(ago - rng.choice((7, 14, 30)))
        redeemed_at = next((o.paid_at for o in placed
                            if o.status == "paid" and o.paid_at and issued_at <= o.paid_at <= expires_at
                            and o.amount_fen >= threshold), None)
        if rng.random() < 0.25:
            redeemed_at = None
        rows[coupons].append((f"C{p.index:07d}{number:02d}", p.member_id, threshold, discount, issued_at,
                              expires_at, redeemed_at))
        issued.append(issued_at)
    return issued


def _events(rng: random.Random, p: _Profile, placed: list[_Order], cal: _Calendar,
            rows: dict[Table, list[Row]]) -> list[datetime]:
    """order_created for the last week's orders, live streams watched, fair visits, product pages."""
    found: list[tuple[datetime, str, dict[str, str]]] = [  # amount: exact yuan text, e.g. "151.30"
        (o.created_at, "order_created",
         {"order_id": o.order_id, "amount": f"{o.amount_fen // 100}.{o.amount_fen % 100:02d}"})
        for o in placed if o.created_at and o.days_ago <= 6]
    if rng.random() < 0.25:
        for ago, start, platform in rng.sample(cal.lives, k=min(len(cal.lives), rng.randint(1, 4))):
            if ago <= p.joined_ago:
                found.append((cal.at(ago, start + rng.randrange(5_400)), "live_watch",
                               {"platform": platform, "minutes": str(rng.randint(1, 90))}))
    fairs = [(ago, fair) for ago, fair in cal.fairs if ago <= p.joined_ago + 2]
    if fairs and (p.origin == "offline" or rng.random() < 0.04):
        ago, fair = min(fairs, key=lambda f: abs(f[0] - p.joined_ago)) if p.origin == "offline" \
            else rng.choice(fairs[:8])
        ago = max(0, ago - rng.randint(0, 2))
        found.append((cal.at(ago, rng.randrange(10 * 3600, 17 * 3600)), "fair_visit", {"fair": fair}))
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 4)):
            ago = rng.randint(0, min(13, p.joined_ago))
            sku = rng.choice(_SKUS[p.primary if rng.random() < 0.7 else rng.choice(_ADDONS[p.primary])])[0]
            found.append((cal.at(ago, _second_of_day(rng, ago)), "page_view", {"sku": sku}))
    found.sort(key=lambda e: (e[0], e[1]))
    rows[events].extend((f"E{p.index:07d}{n:03d}", p.member_id, kind, at, attributes)
                        for n, (at, kind, attributes) in enumerate(found, start=1))
    return [at for at, _, _ in found]


def _nickname(rng: random.Random, p: _Profile) -> str:
    style = rng.random()
    if style < 0.4:
        return rng.choice(_SURNAMES) + rng.choice(_GIVEN)
    if style < 0.7:
        pet = rng.choice(_PET_NAMES)
        pet = pet if rng.random() < 0.6 else "小" + pet[0]
        return pet + rng.choice(("妈妈", "爸爸", "麻麻", "姐姐"))
    if style < 0.85:
        return rng.choice(_HANDLES) + (f"_{rng.randint(80, 99)}" if rng.random() < 0.3 else "")
    return {"tmall": f"tb{rng.randint(10**7, 10**10 - 1)}", "jd": "jd_" + "".join(rng.choices("0123456789abcdef", k=10)),
            "douyin": f"用户{rng.randint(10**9, 10**10 - 1)}"}.get(p.origin, "微信用户")


def _member_row(rng: random.Random, p: _Profile, placed: list[_Order], cal: _Calendar, first_seen: datetime,
                rows: dict[Table, list[Row]]) -> None:
    paid = [o for o in placed if o.status == "paid"]
    year_fen = sum(o.amount_fen for o in paid if o.days_ago <= 365)
    tier = next(t for floor, t in ((600_000, "platinum"), (250_000, "gold"), (80_000, "silver"), (0, "normal"))
                if year_fen >= floor)
    points = int(sum(o.amount_fen for o in paid) // 100 * rng.uniform(0.3, 1.0))
    expiring, expire_at = 0, None
    if points >= 50 and rng.random() < 0.2:
        expiring, expire_at = int(points * rng.uniform(0.2, 0.8)), cal.end_of_day(-rng.randint(0, 60))
    # Unique, random-looking phone numbers: 3^18 is invertible modulo 10^9, so no two members share one.
    phone = f"1{rng.choice('3456789')}{(p.index * 387_420_489 + 123_456_789) % 10**9:09d}"
    wecom = rng.random() < _WECOM_SHARE[p.origin]
    oa = rng.random() < 0.35
    joined_at = min(cal.at(p.joined_ago, _second_of_day(rng, p.joined_ago)), first_seen - timedelta(minutes=5))
    rows[members].append((
        p.member_id, _nickname(rng, p), phone if rng.random() >= 0.05 else None, p.origin, tier, points,
        expiring, expire_at, p.city, joined_at,
        "wm" + "".join(rng.choices(_ALPHANUMERIC, k=30)) if wecom else None,
        f"staff{rng.randint(1, 40):02d}" if wecom else None,
        "oMDS5" + "".join(rng.choices(_ALPHANUMERIC + "-_", k=23)) if oa else None,
        oa and rng.random() < 0.8, rng.random() < 0.04, rng.random() < 0.06))
    tags = []
    if p.pet in ("dog", "both"):
        tags.append("dog_owner")
    if p.pet in ("cat", "both"):
        tags.append("cat_owner")
    if p.primary in ("shark_chondroitin", "joint_care") and rng.random() < 0.6:
        tags.append("senior_pet")
    if p.joined_ago <= 90 and rng.random() < 0.7:
        tags.append("new_parent")
    if tier in ("gold", "platinum"):
        tags.append("vip")
    if rng.random() < 0.03:
        tags.append("do_not_disturb")
    rows[member_tags].extend((p.member_id, tag) for tag in tags)
