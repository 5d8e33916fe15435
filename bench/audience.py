"""One audience, computed the ways a brand could compute it, each in its own process.

    python -m bench.audience APPROACH PLAYBOOK --db URL --at ISO [--parquet DIR] [--ids FILE]
                             [--sample-every N]
    python -m bench.audience export --db URL --parquet DIR

APPROACH is one of
- `siyu-ids`: Siyu's compiled audience statement, executed (the member ids before decisions:
  what the other approaches must equal). `siyu dry-run` itself is timed by bench/run.py as the
  CLI users run.
- `sql`: the hand-written query in bench/reference_sql/PLAYBOOK.sql.
- `pandas`: read the needed tables from the database into pandas, compute the audience there.
- `duckdb`: the same hand-written query in DuckDB over a Parquet export of the tables (`--parquet`).
- `export`: write the tables DuckDB reads as Parquet files into `--parquet` (timed apart).
- `loop`: load each member of a sample (every Nth member id) through the SQLAlchemy ORM and
  evaluate the rules in Python, as a home-made rules engine does.

Each approach fetches the columns Siyu needs to decide (reachability fields, order count,
total spend, habitual platform). The child prints one JSON line: seconds of work (after
imports), rows, and for `loop` the sample size; with `--ids` it writes the member ids.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REFERENCE_SQL = Path(__file__).resolve().parent / "reference_sql"
REACH_COLUMNS = ("phone", "sms_opt_out", "call_opt_out", "wecom_external_userid", "wecom_staff_userid",
                 "oa_openid", "oa_subscribed")
PARQUET_TABLES = ("members", "member_tags", "orders", "order_items", "coupons")
TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Moment:
    """The evaluation instant and its local calendar, as the hand-written queries bind it."""

    at: datetime  # aware

    @property
    def today(self) -> date:
        return self.at.astimezone(TZ).date()

    def day(self, days_ago: int) -> datetime:
        """UTC start of the local day `days_ago` days before today (negative: after)."""
        local = datetime.combine(self.today - timedelta(days=days_ago), datetime.min.time(), tzinfo=TZ)
        return local.astimezone(UTC)

    def parameters(self, sql: str) -> dict[str, datetime]:
        """The query's bind parameters: `:at`, `:dN` (start of N days ago), `:dmN` (N days ahead)."""
        found: dict[str, datetime] = {"at": self.at.astimezone(UTC)}
        for name, minus, n in re.findall(r":(d(m?)(\d+))\b", sql):
            found[name] = self.day(-int(n) if minus else int(n))
        return found


def reference_sql(playbook: str) -> str:
    return (REFERENCE_SQL / f"{playbook}.sql").read_text(encoding="utf-8")


# -- Siyu's own statement ------------------------------------------------------------------------

def siyu_ids(url: str, playbook_id: str, moment: Moment) -> list[str]:
    from engine.decide.compiler import Frame, compile_audience
    from engine.grammar.loader import load_file
    from engine.store.connect import open_engine

    playbook = load_file(playbook_path(playbook_id)).playbook
    engine = open_engine(url)
    compiled = compile_audience(playbook, Frame(moment.at, TZ, engine.dialect.name))
    try:
        with engine.connect() as conn:
            return [r.member_id for r in conn.execute(compiled.statement)]
    finally:
        engine.dispose()


def playbook_path(playbook_id: str) -> Path:
    root = Path(__file__).resolve().parents[1]
    for folder in (root / "playbooks", root / "bench" / "playbooks"):
        if (folder / f"{playbook_id}.yaml").is_file():
            return folder / f"{playbook_id}.yaml"
    raise SystemExit(f"no playbook {playbook_id!r} in playbooks/ or bench/playbooks/")


# -- hand-written SQL, on the database and in DuckDB ----------------------------------------------

def sql_ids(url: str, playbook: str, moment: Moment) -> list[str]:
    from sqlalchemy import bindparam, text

    from engine.store.connect import open_engine
    from engine.store.schema import UtcDateTime

    sql = reference_sql(playbook)
    params = moment.parameters(sql)
    statement = text(sql).bindparams(*(bindparam(name, type_=UtcDateTime) for name in params))
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return [r.member_id for r in conn.execute(statement, params)]
    finally:
        engine.dispose()


def duckdb_ids(parquet: Path, playbook: str, moment: Moment) -> list[str]:
    import duckdb

    sql = reference_sql(playbook)
    params = moment.parameters(sql)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in PARQUET_TABLES:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{parquet / f'{table}.parquet'}')")
    rows = con.execute(re.sub(r":(\w+)\b", r"$\1", sql), params).fetchall()
    return [r[0] for r in rows]


def export_parquet(url: str, folder: Path) -> int:
    """The tables the hand-written queries read, as Parquet files (read with pandas, as an analyst
    would export them); the number of rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for table in PARQUET_TABLES:
        frame = read_table(url, table)
        frame.to_parquet(folder / f"{table}.parquet", index=False)
        written += len(frame)
    return written


# -- pandas ---------------------------------------------------------------------------------------

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id", *REACH_COLUMNS, "points_expiring", "points_expire_at"),
    "member_tags": ("member_id", "tag"),
    "orders": ("order_id", "member_id", "platform", "paid_at", "amount_fen", "status"),
    "order_items": ("order_id", "category", "trial"),
    "coupons": ("member_id", "issued_at", "expires_at", "redeemed_at"),
}
TIME_COLUMNS = {"points_expire_at", "paid_at", "issued_at", "expires_at", "redeemed_at"}
BOOL_COLUMNS = {"sms_opt_out", "call_opt_out", "oa_subscribed", "trial"}


def read_table(url: str, table: str) -> Any:
    """What an analyst does: `pd.read_sql` of the columns needed, times made UTC, flags made bool."""
    import pandas as pd
    from sqlalchemy import create_engine

    columns = TABLE_COLUMNS[table]
    engine = create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(f"SELECT {', '.join(columns)} FROM {table}", conn)
    engine.dispose()
    for column in columns:
        if column in TIME_COLUMNS:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        elif column in BOOL_COLUMNS:
            frame[column] = frame[column].astype(bool)
    return frame


def _stats(orders: Any, moment: Moment, members: Any = None) -> Any:
    """Per member: paid order count, total, last purchase and habitual platform (most orders;
    ties: the latest, then the name)."""
    paid = orders[(orders.status == "paid") & orders.paid_at.notna() & (orders.paid_at <= moment.at)]
    if members is not None:
        paid = paid[paid.member_id.isin(members)]
    per = (paid.groupby(["member_id", "platform"], dropna=False, sort=False)
           .agg(n=("amount_fen", "size"), fen=("amount_fen", "sum"), last=("paid_at", "max")).reset_index())
    habitual = (per.sort_values(["member_id", "n", "last", "platform"], ascending=[True, False, False, True])
                .drop_duplicates("member_id").set_index("member_id")["platform"].rename("habitual_platform"))
    totals = per.groupby("member_id").agg(order_count=("n", "sum"), total_fen=("fen", "sum"),
                                          last_purchase_at=("last", "max"))
    return totals.join(habitual)


def _present(series: Any) -> Any:
    return series.notna() & (series != "")


def _reach(m: Any, channels: Iterable[str]) -> Any:
    rules = {"sms": lambda: _present(m.phone) & ~m.sms_opt_out,
             "ai_call": lambda: _present(m.phone) & ~m.call_opt_out,
             "wecom": lambda: _present(m.wecom_external_userid) & _present(m.wecom_staff_userid),
             "template": lambda: _present(m.oa_openid) & m.oa_subscribed}
    result = None
    for channel in channels:
        rule = rules[channel]()
        result = rule if result is None else (result | rule)
    return result


def _paid_lines(orders: Any, items: Any, moment: Moment, category: str, trial: bool | None = None) -> Any:
    lines = items[items.category == category]
    if trial is not None:
        lines = lines[lines.trial == trial]
    paid = orders[(orders.status == "paid") & orders.paid_at.notna() & (orders.paid_at <= moment.at)]
    return paid.merge(lines[["order_id"]].drop_duplicates(), on="order_id")


def _finish(m: Any, ids: Any, moment: Moment, orders: Any, tags: Any) -> list[str]:
    """Members `ids`, minus do_not_disturb, with their stats (the columns Siyu decides on)."""
    disturbed = set(tags.member_id[tags.tag == "do_not_disturb"])
    chosen = m[m.member_id.isin(ids) & ~m.member_id.isin(disturbed)]
    stats = _stats(orders, moment, chosen.member_id)
    out = chosen[["member_id", *REACH_COLUMNS]].join(stats, on="member_id").sort_values("member_id")
    return list(out.member_id)


def pandas_ids(url: str, playbook: str, moment: Moment) -> list[str]:
    tables = PANDAS_TABLES[playbook]
    frames = {t: read_table(url, t) for t in tables}
    return PANDAS[playbook](url, frames, moment)


def _pd_pet_milk(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m, orders = f["members"], f["orders"]
    last = _paid_lines(orders, f["order_items"], moment, "pet_milk").groupby("member_id").paid_at.max()
    due = last[(last >= moment.day(21)) & (last < moment.day(20))].index
    reach = m[_reach(m, ["wecom", "sms"])].member_id
    return _finish(m, set(due) & set(reach), moment, orders, f["member_tags"])


def _pd_back_to_tmall(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m, orders = f["members"], f["orders"]
    s = _stats(orders, moment)
    hit = s[(s.habitual_platform == "tmall") & (s.last_purchase_at >= moment.day(60))
            & (s.last_purchase_at < moment.day(29))].index
    reach = m[_reach(m, ["wecom", "sms"])].member_id
    return _finish(m, set(hit) & set(reach), moment, orders, f["member_tags"])


def _pd_coupon_expiring(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    c = f["coupons"]
    at = moment.at
    live = c[(c.issued_at.isna() | (c.issued_at <= at)) & (c.redeemed_at.isna() | (c.redeemed_at > at))
             & (c.expires_at > at) & (c.expires_at < moment.day(-4))]
    return _finish(f["members"], set(live.member_id), moment, f["orders"], f["member_tags"])


def _pd_lapsed_recall(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m, orders = f["members"], f["orders"]
    s = _stats(orders, moment)
    hit = s[(s.last_purchase_at >= moment.day(180)) & (s.last_purchase_at < moment.day(89))
            & (s.order_count > 0) & (s.total_fen >= 15000 * s.order_count)].index
    reach = m[_reach(m, ["ai_call"])].member_id
    return _finish(m, set(hit) & set(reach), moment, orders, f["member_tags"])


def _pd_points_expiring(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m = f["members"]
    hit = m[m.points_expiring.notna() & (m.points_expiring >= 500) & m.points_expire_at.notna()
            & (m.points_expire_at >= moment.day(0)) & (m.points_expire_at < moment.day(-31))]
    return _finish(m, set(hit.member_id), moment, f["orders"], f["member_tags"])


def _pd_trial_to_full_size(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m, orders, items = f["members"], f["orders"], f["order_items"]
    trial = _paid_lines(orders, items, moment, "joint_care", trial=True)
    trial = trial[(trial.paid_at >= moment.day(7)) & (trial.paid_at < moment.day(6))]
    full = _paid_lines(orders, items, moment, "joint_care", trial=False)
    full = full[(full.paid_at >= moment.day(7)) & (full.paid_at < moment.day(-1))]
    reach = m[_reach(m, ["wecom", "sms"])].member_id
    return _finish(m, (set(trial.member_id) - set(full.member_id)) & set(reach), moment, orders,
                   f["member_tags"])


def _pd_broad_sms(url: str, f: dict[str, Any], moment: Moment) -> list[str]:
    m = f["members"]
    return _finish(m, set(m[_reach(m, ["sms"])].member_id), moment, f["orders"], f["member_tags"])


PANDAS: dict[str, Callable[[str, dict[str, Any], Moment], list[str]]] = {
    "pet-milk-refill": _pd_pet_milk, "back-to-tmall": _pd_back_to_tmall, "coupon-expiring": _pd_coupon_expiring,
    "lapsed-recall": _pd_lapsed_recall, "points-expiring": _pd_points_expiring,
    "trial-to-full-size": _pd_trial_to_full_size, "broad-sms": _pd_broad_sms,
}
_BASE = ("members", "member_tags", "orders")
PANDAS_TABLES: dict[str, tuple[str, ...]] = {
    "pet-milk-refill": (*_BASE, "order_items"), "back-to-tmall": _BASE, "coupon-expiring": (*_BASE, "coupons"),
    "lapsed-recall": _BASE, "points-expiring": _BASE, "trial-to-full-size": (*_BASE, "order_items"),
    "broad-sms": _BASE,
}
PLAYBOOKS = tuple(PANDAS)


# -- the per-member loop -------------------------------------------------------------------------

def loop_ids(url: str, playbook: str, moment: Moment, every: int) -> tuple[list[str], int]:
    """Every `every`-th member id (in id order), loaded through the ORM and judged in Python;
    the matches and the sample size."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.orm import Member
    from engine.store.connect import open_engine

    engine = open_engine(url)
    rule = LOOP_RULES[playbook]
    matched: list[str] = []
    with Session(engine) as session:
        ids = session.scalars(select(Member.member_id).order_by(Member.member_id)).all()[::every]
        for member_id in ids:
            member = session.get(Member, member_id)
            assert member is not None
            if rule(member, moment) and "do_not_disturb" not in {t.tag for t in member.tags}:
                _ = member.stats(moment.at)  # the columns Siyu decides on
                matched.append(member_id)
            session.expunge_all()
    return matched, len(ids)


def _lp_pet_milk(m: Any, moment: Moment) -> bool:
    last = m.last_paid(moment.at, category="pet_milk")
    return (last is not None and moment.day(21) <= last < moment.day(20)
            and (m.reachable("wecom") or m.reachable("sms")))


def _lp_back_to_tmall(m: Any, moment: Moment) -> bool:
    s = m.stats(moment.at)
    return (s["habitual_platform"] == "tmall" and s["last_purchase_at"] is not None
            and moment.day(60) <= s["last_purchase_at"] < moment.day(29)
            and (m.reachable("wecom") or m.reachable("sms")))


def _lp_coupon_expiring(m: Any, moment: Moment) -> bool:
    at = moment.at
    return any((c.issued_at is None or c.issued_at <= at) and (c.redeemed_at is None or c.redeemed_at > at)
               and c.expires_at is not None and at < c.expires_at < moment.day(-4) for c in m.coupons)


def _lp_lapsed_recall(m: Any, moment: Moment) -> bool:
    s = m.stats(moment.at)
    return (s["last_purchase_at"] is not None and moment.day(180) <= s["last_purchase_at"] < moment.day(89)
            and s["order_count"] > 0 and s["total_fen"] >= 15000 * s["order_count"] and m.reachable("ai_call"))


def _lp_points_expiring(m: Any, moment: Moment) -> bool:
    return (m.points_expiring is not None and m.points_expiring >= 500 and m.points_expire_at is not None
            and moment.day(0) <= m.points_expire_at < moment.day(-31))


def _lp_trial_to_full_size(m: Any, moment: Moment) -> bool:
    trial = m.paid_lines(moment.at, category="joint_care", trial=True)
    full = m.paid_lines(moment.at, category="joint_care", trial=False)
    return (any(moment.day(7) <= at < moment.day(6) for at in trial)
            and not any(moment.day(7) <= at < moment.day(-1) for at in full)
            and (m.reachable("wecom") or m.reachable("sms")))


def _lp_broad_sms(m: Any, moment: Moment) -> bool:
    return bool(m.reachable("sms"))


LOOP_RULES: dict[str, Callable[[Any, Moment], bool]] = {
    "pet-milk-refill": _lp_pet_milk, "back-to-tmall": _lp_back_to_tmall, "coupon-expiring": _lp_coupon_expiring,
    "lapsed-recall": _lp_lapsed_recall, "points-expiring": _lp_points_expiring,
    "trial-to-full-size": _lp_trial_to_full_size, "broad-sms": _lp_broad_sms,
}


# -- the child's entry point ----------------------------------------------------------------------

IMPORTS = {
    "siyu-ids": ("sqlalchemy", "engine.decide.compiler", "engine.grammar.loader", "engine.store.connect"),
    "sql": ("sqlalchemy", "engine.store.schema", "engine.store.connect"),
    "pandas": ("pandas", "sqlalchemy"),
    "duckdb": ("duckdb",),
    "loop": ("sqlalchemy.orm", "bench.orm", "engine.store.connect"),
}


def _import_for(approach: str) -> None:
    """Import what `approach` uses before the clock starts: its time is the work's."""
    import importlib

    for module in IMPORTS[approach]:
        importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audience", description=__doc__.split("\n\n")[0])
    parser.add_argument("approach", choices=("siyu-ids", "sql", "pandas", "duckdb", "loop", "export"))
    parser.add_argument("playbook", nargs="?", choices=PLAYBOOKS)
    parser.add_argument("--db", required=True)
    parser.add_argument("--at", help="ISO instant with offset")
    parser.add_argument("--parquet", type=Path)
    parser.add_argument("--ids", type=Path, help="write the member ids here, one per line")
    parser.add_argument("--sample-every", type=int, default=100)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.approach == "export":
        written = export_parquet(args.db, args.parquet)
        print(json.dumps({"seconds": time.perf_counter() - started, "rows": written, "sample": None}))
        return 0
    if args.playbook is None or args.at is None:
        parser.error(f"{args.approach} needs a PLAYBOOK and --at")
    moment = Moment(datetime.fromisoformat(args.at))
    _import_for(args.approach)
    started = time.perf_counter()  # the work, not the interpreter's start and imports
    sample = None
    if args.approach == "siyu-ids":
        ids = siyu_ids(args.db, args.playbook, moment)
    elif args.approach == "sql":
        ids = sql_ids(args.db, args.playbook, moment)
    elif args.approach == "pandas":
        ids = pandas_ids(args.db, args.playbook, moment)
    elif args.approach == "duckdb":
        ids = duckdb_ids(args.parquet, args.playbook, moment)
    else:
        ids, sample = loop_ids(args.db, args.playbook, moment, args.sample_every)
    seconds = time.perf_counter() - started
    if args.ids:
        args.ids.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    print(json.dumps({"seconds": seconds, "rows": len(ids), "sample": sample}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
