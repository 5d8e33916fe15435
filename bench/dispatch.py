"""Dispatch throughput (issue 6, "Dispatch"): how fast Siyu empties a queue of touches through a
real adapter, against the limit of a bare HTTP loop posting the same payloads.

    uv run --group bench python -m bench.dispatch --touches 100000 --db sqlite,postgres --channels sms,wecom

For each database and channel: a fresh database holding N members and N `queued` touches, and
the adapter's fake vendor (channels/fakes/) in a process of its own (`python -m bench.fake_vendor`), so the
CPU measured here is the sender's alone. Two senders, each to a freshly started fake:

- `bare_httpx`, the limit: one `httpx.AsyncClient` posting the same payloads to the same fake,
  the channel's `concurrency` requests in flight, no database. Aliyun requests are signed per
  request as the adapter signs them; WeCom gets one token, then the same `add_msg_template`
  tasks the adapter makes (a claimed batch's touches put side by side per staff member and
  text, then grouped within each slice). More requests in flight do not make it faster: httpx
  spends more CPU per request as its connection pool grows (40 in flight cost about twice the
  CPU of 8 here).
- `siyu`: the real adapter built from a config through `engine.run.service.Service`, drained by
  its `Dispatcher` as `siyu tick` does: every claim and every outcome committed to the ledger,
  every touch logged (JSON lines to bench/.data/dispatch-DB-CHANNEL.log, as journald would
  take them).

Both must deliver all N touches (the ledger says `sent`, the fake counts N recipients), or the
run stops: a benchmark that silently sends fewer is wrong. Targets (issue 6): Siyu reaches at
least half the bare loop's throughput, and at least 1,500 touches/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import httpx
import structlog
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, insert

from bench.fake_vendor import STATS_PATH, channel_settings
from bench.measure import DATA, ROOT, Row, empty_database, peak_rss_mb, row, timed
from channels.aliyun.signing import signed_params
from channels.aliyun.sms import API_VERSION, AliyunSmsSettings
from channels.wechat.wecom import WecomSettings
from engine import ledger
from engine.clock import now as clock_now
from engine.config import Settings
from engine.logs import configure
from engine.run.dispatch import Dispatcher
from engine.run.service import Service
from engine.store.connect import open_engine, upgrade
from engine.store.schema import members, touches

ADAPTERS = {"sms": "aliyun_sms", "wecom": "wecom"}
"""Channel name → the adapter measured on it."""
PLAYBOOK = "bench_dispatch"
PG_DATABASE = "siyu_bench_dispatch"
STAFF_MEMBERS = 200
"""WeCom: the members' friendships are spread over this many staff members (one task per staff
member and text within each slice the adapter gets, after the dispatcher has put each staff
member's touches of a claimed batch side by side)."""
CONCURRENCY = 8
"""The channel's `concurrency` (slices in flight; the SMS adapter also sends this many requests per slice)."""
RATE_PER_SECOND = 5000
"""High enough that the rate limit is never what is measured."""
SEED_CHUNK = 5000
TEMPLATE_CODE = "SMS_4820931"
WECOM_TEXT = "会员日：全场满299减50，今晚24点截止，点我领券"
TARGET_RATIO = 0.5
TARGET_PG_TOUCHES_PER_SECOND = 1500

console = Console()


# --------------------------------------------------------------------------- the audience

@dataclass(frozen=True)
class Audience:
    """N members and one queued touch each (`touches[i]` is for `members[i]`), as inserted."""

    members: list[dict[str, Any]]
    touches: list[dict[str, Any]]


def audience(size: int, channel: str, at: datetime) -> Audience:
    """Members with a phone and a WeCom friendship, and one rendered, queued touch each on `channel`."""
    people = [{"member_id": f"M{i:07d}", "nickname": f"会员{i}", "phone": f"139{i:08d}",
               "wecom_external_userid": f"wmBench{i:07d}", "wecom_staff_userid": f"staff{i % STAFF_MEMBERS:03d}"}
              for i in range(size)]
    occurrence = at.isoformat()
    queued = []
    for person in people:
        if channel == "sms":
            message: dict[str, Any] = {"template_code": TEMPLATE_CODE,
                                       "params": {"name": person["nickname"], "discount": "50"}}
        else:
            message = {"text": WECOM_TEXT}
        queued.append({
            "touch_id": ledger.touch_id_for(PLAYBOOK, person["member_id"], occurrence), "playbook": PLAYBOOK,
            "member_id": person["member_id"], "occurrence": occurrence, "event_id": None, "state": "queued",
            "reason": None, "channel": channel, "priority": 50, "offer": None, "message": message, "why": {},
            "cost_e4": 450 if channel == "sms" else 0, "decided_at": at, "touch_at": at, "not_before": None,
            "expires_at": None})
    return Audience(people, queued)


def fresh_database(db: str) -> str:
    """An empty database for one measurement."""
    return empty_database(db, DATA / "dispatch-sqlite.db", PG_DATABASE)


def seed(engine: Engine, people: Audience, progress: Progress) -> None:
    """Insert the audience in chunks (executemany), then gather planner statistics, as autovacuum
    would soon after a playbook run; on PostgreSQL also vacuum, so it does not start mid-measurement."""
    for table, rows, what in ((members, people.members, "members"), (touches, people.touches, "queued touches")):
        task = progress.add_task(f"seeding {what}", total=len(rows))
        with engine.begin() as conn:
            for start in range(0, len(rows), SEED_CHUNK):
                chunk = rows[start:start + SEED_CHUNK]
                conn.execute(insert(table), chunk)
                progress.advance(task, len(chunk))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


# --------------------------------------------------------------------------- the fake vendor

class Vendor:
    """`python -m bench.fake_vendor` serving one fake in a child process, from start to SIGTERM."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.fake_vendor", self.adapter],
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if ready[:1] != ["ready"]:
            self.__exit__()
            raise SystemExit(f"the fake {self.adapter} did not start (see its error above)")
        self.url = ready[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def stats(self) -> dict[str, float]:
        """What the fake accepted so far, and its CPU seconds (bench/fake_vendor.py)."""
        answer = httpx.get(self.url + STATS_PATH, timeout=30)
        answer.raise_for_status()
        return {k: float(v) for k, v in answer.json().items()}


@dataclass(frozen=True)
class Run:
    """One sender's pass over the queue."""

    seconds: float
    cpu_seconds: float
    delivered: int  #: touches the sender counts as accepted (Siyu: `sent` in the ledger)
    vendor: dict[str, float]  #: what the fake accepted during the run, and the CPU it spent

    def per_second(self) -> float:
        return self.delivered / self.seconds


@contextmanager
def vendor_run(adapter: str) -> Iterator[tuple[Vendor, dict[str, float]]]:
    """A freshly started fake and, filled in when the block ends, what it did during the block."""
    with Vendor(adapter) as vendor:
        before = vendor.stats()
        during: dict[str, float] = {}
        yield vendor, during
        during.update({k: v - before[k] for k, v in vendor.stats().items()})


@asynccontextmanager
async def showing(progress: Progress, task: TaskID, done: Callable[[], int]) -> AsyncIterator[None]:
    """Refresh `task` from `done()` five times a second while the block sends: a cost outside the
    send path, the same for both senders."""

    async def refresh() -> None:
        while True:
            progress.update(task, completed=done())
            await asyncio.sleep(0.2)

    refreshing = asyncio.create_task(refresh())
    try:
        yield
    finally:
        refreshing.cancel()
        progress.update(task, completed=done())


# --------------------------------------------------------------------------- the config

def config(db_url: str, channel: str, vendor_url: str, concurrency: int) -> dict[str, Any]:
    """A production config with one channel on the fake. Quiet hours and the SMS send window are
    off, so the benchmark measures the same at any hour; frequency caps keep their defaults."""
    playbooks = DATA / "dispatch-playbooks"  # none: the queued touches are given, not decided
    playbooks.mkdir(parents=True, exist_ok=True)
    adapter = {**channel_settings(ADAPTERS[channel], vendor_url), "rate_per_second": RATE_PER_SECOND,
               "concurrency": concurrency}
    if channel == "sms":
        adapter["send_window"] = None
    return {"database": {"url": db_url}, "playbooks": str(playbooks), "channels": {channel: adapter},
            "policies": {"quiet_hours": {}}, "log": {"format": "json", "level": "info"}, "http": {"listen": None}}


# --------------------------------------------------------------------------- the limit: a bare loop

def sms_requests(people: Audience, cfg: AliyunSmsSettings) -> list[dict[str, str]]:
    """The `SendSms` parameters the adapter sends, one per touch (signed when sent)."""
    return [{"PhoneNumbers": m["phone"], "SignName": cfg.sign_name, "TemplateCode": t["message"]["template_code"],
             "TemplateParam": json.dumps(t["message"]["params"], ensure_ascii=False), "OutId": t["touch_id"]}
            for m, t in zip(people.members, people.touches, strict=True)]


def wecom_tasks(people: Audience, settings: Settings, channel: str) -> list[dict[str, Any]]:
    """The `add_msg_template` bodies the adapter makes: touches in claim order (the ledger's:
    priority, decision time, touch id; all equal but the id here), cut into claimed batches; in
    each batch the touches of one staff member and text put side by side (in the order each
    first appears), as the dispatcher does, then cut into slices, and within a slice one task
    per staff member and text."""
    address = {m["member_id"]: m for m in people.members}
    queue = sorted(people.touches, key=lambda t: t["touch_id"])
    batch, size = settings.dispatch.batch_size, settings.channels[channel].batch_size

    def key(touch: dict[str, Any]) -> tuple[str, str]:
        return address[touch["member_id"]]["wecom_staff_userid"], touch["message"]["text"]

    tasks: list[dict[str, Any]] = []
    for claimed in (queue[i:i + batch] for i in range(0, len(queue), batch)):
        together: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for touch in claimed:
            together.setdefault(key(touch), []).append(touch)
        grouped = [touch for same in together.values() for touch in same]
        for piece in (grouped[i:i + size] for i in range(0, len(grouped), size)):
            groups: dict[tuple[str, str], list[str]] = {}
            for touch in piece:
                groups.setdefault(key(touch), []).append(address[touch["member_id"]]["wecom_external_userid"])
            tasks += [{"chat_type": "single", "external_userid": sorted(ids), "sender": sender,
                       "text": {"content": content}} for (sender, content), ids in groups.items()]
    return tasks


async def bare_sms(cfg: AliyunSmsSettings, requests: Sequence[dict[str, str]], workers: int,
                   answers: Counter[str]) -> None:
    """`workers` coroutines share one client and post signed `SendSms` calls until none is left."""
    url = cfg.base_url.rstrip("/") + "/"
    pending = iter(requests)
    async with httpx.AsyncClient(timeout=cfg.timeout) as client:

        async def work() -> None:
            for params in pending:
                form = signed_params("SendSms", API_VERSION, params, cfg.access_key_id, cfg.access_key_secret,
                                     region=cfg.region)
                response = await client.post(url, data=form)
                answers["accepted" if response.status_code == 200 and response.json().get("Code") == "OK"
                        else "refused"] += 1

        await asyncio.gather(*(work() for _ in range(workers)))


async def bare_wecom(cfg: WecomSettings, tasks: Sequence[dict[str, Any]], workers: int,
                     answers: Counter[str]) -> None:
    """One `gettoken`, then `workers` coroutines post the tasks until none is left."""
    async with httpx.AsyncClient(base_url=(cfg.base_url or "").rstrip("/"), timeout=cfg.timeout) as client:
        token = (await client.get("/cgi-bin/gettoken", params={"corpid": cfg.corp_id, "corpsecret": cfg.secret})
                 ).json()["access_token"]
        pending = iter(tasks)

        async def work() -> None:
            for body in pending:
                response = await client.post("/cgi-bin/externalcontact/add_msg_template",
                                             params={"access_token": token}, json=body)
                answers["accepted" if response.json().get("errcode") == 0 else "refused"] += \
                    len(body["external_userid"])

        await asyncio.gather(*(work() for _ in range(workers)))


def run_bare(channel: str, people: Audience, db_url: str, concurrency: int, progress: Progress) -> Run:
    """The bare loop against a fresh fake, `concurrency` requests in flight."""
    with vendor_run(ADAPTERS[channel]) as (vendor, during):
        settings = Settings.model_validate(config(db_url, channel, vendor.url, concurrency))
        cfg = settings.channels[channel]
        answers: Counter[str] = Counter()
        if isinstance(cfg, AliyunSmsSettings):
            sending: Any = bare_sms(cfg, sms_requests(people, cfg), concurrency, answers)
        else:
            assert isinstance(cfg, WecomSettings)
            sending = bare_wecom(cfg, wecom_tasks(people, settings, channel), concurrency, answers)
        task = progress.add_task(f"bare_httpx: sending ({concurrency} in flight)", total=len(people.touches))

        async def send() -> None:
            async with showing(progress, task, lambda: sum(answers.values())):
                await sending

        with timed() as clock:
            asyncio.run(send())
    return Run(clock.seconds, clock.cpu_seconds, answers["accepted"], during)


# --------------------------------------------------------------------------- Siyu

async def drain(dispatcher: Dispatcher, channel: str, progress: Progress, task: TaskID) -> None:
    """Drain as `siyu tick` does, again while queued touches are left (none should be after one
    drain); a drain that sends nothing while some are still due means the channel stopped."""
    def settled() -> int:
        return sum(dispatcher.counts.values())

    def due() -> int:
        with dispatcher.engine.connect() as conn:
            return ledger.due_count(conn, channel, clock_now())

    async with showing(progress, task, settled):
        while True:
            before = settled()
            await dispatcher.drain()
            left = await asyncio.to_thread(due)
            if not left:
                return
            if settled() == before:
                raise SystemExit(f"siyu: {left} touches still due, but the dispatcher sends none "
                                 f"(paused: {dispatcher.paused or 'no'}; see {dispatcher.engine.url})")


def run_siyu(db: str, channel: str, people: Audience, db_url: str, concurrency: int,
             progress: Progress) -> Run:
    """Siyu against a fresh fake: the adapter built from a config file, the dispatcher drained, the
    ledger counted afterwards."""
    with vendor_run(ADAPTERS[channel]) as (vendor, during):
        config_path = DATA / f"dispatch-{db}-{channel}.yaml"
        config_path.write_text(yaml.safe_dump(config(db_url, channel, vendor.url, concurrency),
                                              allow_unicode=True, sort_keys=False), encoding="utf-8")
        service = Service.load(config_path, migrate=False)
        try:
            with config_path.with_suffix(".log").open("w", encoding="utf-8") as log_file:
                with redirect_stdout(log_file):  # the JSON lines go where journald would take them
                    configure(service.settings.log.format, service.settings.log.level)
                dispatcher = service.dispatcher()
                task = progress.add_task("siyu: sending", total=len(people.touches))
                with timed() as clock:
                    asyncio.run(drain(dispatcher, channel, progress, task))
            with service.engine.connect() as conn:
                sent = ledger.state_counts(conn).get("sent", 0)
        finally:
            structlog.reset_defaults()
            service.engine.dispose()
    return Run(clock.seconds, clock.cpu_seconds, sent, during)


# --------------------------------------------------------------------------- one measurement

def verify(approach: str, channel: str, expected: int, run: Run) -> None:
    """Every touch accepted once by the fake: N recipients, N distinct; else stop."""
    got = {"accepted": run.delivered, "recipients": int(run.vendor["recipients"]),
           "distinct recipients": int(run.vendor["distinct_recipients"])}
    wrong = {k: v for k, v in got.items() if v != expected}
    if wrong:
        raise SystemExit(f"{approach} on {channel}: expected {expected:,} touches, got "
                         + ", ".join(f"{k} {v:,}" for k, v in wrong.items()))


def measure(db: str, touches: int, channel: str, *, concurrency: int = CONCURRENCY) -> list[Row]:
    """Siyu and the bare loop sending `touches` queued touches on `channel` (sms, wecom), the
    ledger on `db` (sqlite, postgres): one row each."""
    if channel not in ADAPTERS:
        raise SystemExit(f"--channels: unknown channel {channel!r} ({', '.join(ADAPTERS)})")
    playbook = f"dispatch:{ADAPTERS[channel]}"
    people = audience(touches, channel, clock_now())
    with Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        console.print(f"[bold]{playbook} on {db}[/bold]: {touches:,} touches")
        db_url = fresh_database(db)
        engine = open_engine(db_url)
        try:
            upgrade(engine)
            seed(engine, people, progress)
        finally:
            engine.dispose()
        bare = run_bare(channel, people, db_url, concurrency, progress)
        verify("bare_httpx", channel, touches, bare)
        bare_rss = peak_rss_mb()
        siyu = run_siyu(db, channel, people, db_url, concurrency, progress)
        verify("siyu", channel, touches, siyu)

    def measured(approach: str, run: Run, rss: float, **extra: Any) -> Row:
        return row(approach, playbook, db, touches, run.seconds, rss, run.delivered,
                   touches_per_second=round(run.per_second(), 1),
                   cpu_ms_per_touch=round(run.cpu_seconds * 1000 / touches, 4),
                   vendor_cpu_ms_per_touch=round(run.vendor["cpu_seconds"] * 1000 / touches, 4),
                   requests=int(run.vendor["requests"]), concurrency=concurrency, **extra)

    ratio = siyu.per_second() / bare.per_second()
    meets = ratio >= TARGET_RATIO and (db != "postgres" or siyu.per_second() >= TARGET_PG_TOUCHES_PER_SECOND)
    return [measured("siyu", siyu, peak_rss_mb(), ratio_to_bare=round(ratio, 3), meets_target=meets),
            measured("bare_httpx", bare, bare_rss)]


# --------------------------------------------------------------------------- the report

def render(rows: Sequence[Row]) -> Table:
    table = Table(title="dispatch throughput (targets: siyu ≥ 50 % of bare_httpx, ≥ 1,500 touches/s on PostgreSQL)")
    for name in ("db", "playbook", "approach", "touches", "seconds", "touches/s", "CPU ms/touch",
                 "vendor CPU ms/touch", "requests", "concurrency", "ratio to bare", "target", "peak RSS MB"):
        table.add_column(name, justify="left" if name in ("db", "playbook", "approach") else "right")
    for r in rows:
        ratio = r.get("ratio_to_bare")
        target = "" if "meets_target" not in r else ("met" if r["meets_target"] else "[red]missed[/red]")
        table.add_row(r["db"], r["playbook"], r["approach"], f"{r['members']:,}", f"{r['seconds']:.2f}",
                      f"{r['touches_per_second']:,.0f}", f"{r['cpu_ms_per_touch']:.3f}",
                      f"{r['vendor_cpu_ms_per_touch']:.3f}", f"{r['requests']:,}", str(r["concurrency"]),
                      "" if ratio is None else f"{ratio:.0%}", target, f"{r['peak_rss_mb']:.0f}")
    return table


def _names(value: str, known: Sequence[str], option: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"{option}: choose from {', '.join(known)} (got {value!r})")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch",
                                     description="dispatch throughput: Siyu through a real adapter to its "
                                                 "loopback fake, against a bare httpx loop (issue 6)")
    parser.add_argument("--touches", type=int, default=100_000, help="queued touches per measurement")
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--channels", default="sms,wecom", help="comma-separated: sms (Aliyun), wecom")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="the channels' `concurrency`")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the rows as one JSON array")
    args = parser.parse_args(argv)
    dbs = _names(args.db, ("sqlite", "postgres"), "--db")
    channels = _names(args.channels, tuple(ADAPTERS), "--channels")
    started = time.perf_counter()
    rows = [r for db in dbs for channel in channels
            for r in measure(db, args.touches, channel, concurrency=args.concurrency)]
    report = Console(width=None if console.is_terminal else 200)  # a file or a pipe gets the whole table
    report.print(render(rows))
    report.print(f"measured in {time.perf_counter() - started:.0f} s; Siyu's log lines: {DATA}/dispatch-*.log")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
