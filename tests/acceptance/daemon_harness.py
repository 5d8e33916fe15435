"""Running `siyu run` as a real subprocess: config and playbooks on disk, members and events due now,
the daemon's JSON log, the `log` channel's file, the ledger, and a notify socket standing in for systemd.

Used by test_daemon.py and test_crash.py only. Every wait has a timeout; `Daemons` kills whatever
a test leaves running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, insert, select
from sqlalchemy.engine import RowMapping

from engine.store.connect import open_engine
from engine.store.schema import events, member_tags, members, orders, runs, touches

ROOT = Path(__file__).resolve().parents[2]
PHONE = re.compile(r"(?:(?<!\d)|(?<=\+86))1[3-9]\d{9}(?!\d)")
"""A full mainland mobile number, alone or after +86 (E.164, +8613812345678): never in a log line."""
SETTLED = ("sent", "failed", "unknown", "holdout", "suppressed")
"""Ledger states a row may end in once everything due is dispatched."""

# An order nudge with no delay: every unpaid order_created event is due as soon as it is inserted.
EVENT_PLAYBOOK = """\
id: order-nudge
name: 未付款订单立即提醒
priority: 80
trigger: {event: order_created}
audience:
  all:
    - triggering_order: {paid: false}
channels:
  - sms:
      template_code: SMS_1
      params: {name: "{{ member.nickname }}", order: "{{ event.attributes.order_id }}"}
"""

# Fires every minute on the members tagged `minutely`: a new occurrence (and run row) each minute.
SCHEDULED_PLAYBOOK = """\
id: minutely-hello
name: 每分钟问候
trigger: {schedule: "* * * * *"}
audience:
  all:
    - tag: minutely
channels:
  - wecom:
      text: "{{ member.nickname }}，您好"
"""

# A second event playbook on another event type, added by SIGHUP in the reload test.
SIGNUP_PLAYBOOK = """\
id: signup-welcome
name: 注册欢迎
trigger: {event: signed_up}
audience:
  all:
    - reachable: sms
channels:
  - sms: {template_code: SMS_9, params: {name: "{{ member.nickname }}"}}
"""

# Valid YAML, invalid playbook: a misspelt key on line 4 and an unknown channel entry on line 8.
BROKEN_PLAYBOOK = """\
id: broken-one
name: 坏的
trigger: {event: signed_up}
audiance:
  all:
    - reachable: sms
channels:
  - fax: {text: hello}
"""


def config_yaml(db_url: str, *, latency_ms: int = 50, batch_size: int = 20, channel_batch: int = 5,
                concurrency: int = 4, rate_per_second: float | None = None, lease: str = "3s", grace: str = "5s",
                misfire_grace: str = "5m", sms: str | None = None) -> str:
    """A config for the daemon tests: every channel on the slow `log` sink (or `sms` as given, as YAML),
    no caps, no quiet hours."""
    sink = (f"{{adapter: log, path: touches.jsonl, latency_ms: {latency_ms}, batch_size: {channel_batch}, "
            f"concurrency: {concurrency}"
            + (f", rate_per_second: {rate_per_second}" if rate_per_second else "") + "}")
    return (f'database: {{url: "{db_url}"}}\n'
            "timezone: Asia/Shanghai\n"
            "playbooks: playbooks/\n"
            f"channels:\n  sms: {sms or sink}\n  wecom: {sink}\n"
            "policies: {frequency: [], quiet_hours: {}, budgets: {}}\n"
            f"dispatch: {{lease: {lease}, batch_size: {batch_size}, grace: {grace}, retry_wait: 1s}}\n"
            "log: {format: json}\n"
            "poll_interval: 1s\n"
            'http: {listen: "127.0.0.1:0"}\n'  # several daemons at once: each takes a free port
            f"misfire_grace: {misfire_grace}\n"
            + ("allow_literal_secrets: true\n" if sms else ""))


def write_setup(tmp_path: Path, db_url: str, playbooks: dict[str, str], **config: Any) -> Path:
    """config.yaml and playbooks/*.yaml in `tmp_path`; returns the config path."""
    folder = tmp_path / "playbooks"
    folder.mkdir(exist_ok=True)
    for name, text in playbooks.items():
        (folder / name).write_text(text, encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(db_url, **config), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data

def phone_of(n: int) -> str:
    return f"138{n:08d}"


def seed_members(db_url: str, count: int, *, tagged: int = 0, start: int = 0) -> list[str]:
    """`count` members M00000… with phones 138…, WeCom ids, and the first `tagged` tagged `minutely`."""
    engine = open_engine(db_url)
    ids = [f"M{n:05d}" for n in range(start, start + count)]
    try:
        with engine.begin() as conn:
            conn.execute(insert(members), [
                {"member_id": m, "nickname": f"会员{n}", "phone": phone_of(n), "wecom_external_userid": f"wx{n}",
                 "wecom_staff_userid": "staff1"} for n, m in enumerate(ids, start=start)])
            if tagged:
                conn.execute(insert(member_tags), [{"member_id": m, "tag": "minutely"} for m in ids[:tagged]])
    finally:
        engine.dispose()
    return ids


def seed_unpaid_orders(db_url: str, member_ids: list[str], *, prefix: str = "E") -> list[str]:
    """One unpaid order and its order_created event per member, occurred a second ago; the event ids."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(orders), [
                {"order_id": f"O{prefix}{i}", "member_id": m, "platform": "tmall", "created_at": now,
                 "paid_at": None, "amount_fen": 9900, "status": "created"} for i, m in enumerate(member_ids)])
            conn.execute(insert(events), [
                {"event_id": f"{prefix}{i}", "member_id": m, "type": "order_created", "occurred_at": now,
                 "attributes": {"order_id": f"O{prefix}{i}"}} for i, m in enumerate(member_ids)])
    finally:
        engine.dispose()
    return [f"{prefix}{i}" for i in range(len(member_ids))]


def seed_events(db_url: str, member_ids: list[str], type_: str, *, prefix: str) -> list[str]:
    """One event of `type_` per member, occurred a second ago."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(events), [
                {"event_id": f"{prefix}{i}", "member_id": m, "type": type_, "occurred_at": now, "attributes": {}}
                for i, m in enumerate(member_ids)])
    finally:
        engine.dispose()
    return [f"{prefix}{i}" for i in range(len(member_ids))]


def ledger(db_url: str) -> list[RowMapping]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(touches)).mappings())
    finally:
        engine.dispose()


def run_rows(db_url: str) -> list[RowMapping]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(runs)).mappings())
    finally:
        engine.dispose()


def state_counts(db_url: str) -> dict[str, int]:
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(
                select(touches.c.state, func.count()).group_by(touches.c.state))}
    finally:
        engine.dispose()


def sink_lines(path: Path) -> list[dict[str, Any]]:
    """The `log` channel's file: one JSON object per touch (a torn last line would fail here)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a daemon's stdout (anything else is skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


# --------------------------------------------------------------------------- waiting

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --------------------------------------------------------------------------- processes

def siyu_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIYU_DEBUG", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def siyu(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=siyu_env(**env),
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout, check=False)


@dataclass
class Daemon:
    """One `siyu run` process; stdout and stderr go to files so nothing blocks on a full pipe."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def records(self) -> list[dict[str, Any]]:
        return log_records(self.stdout)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"siyu run exited {self.proc.returncode} before it was ready:\n"
                                     f"{self.stderr.read_text(errors='replace')}")
            return bool(self.events("daemon.ready"))
        wait_for(ready, timeout, "daemon.ready", every=0.05)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Daemons:
    """Starts `siyu run` processes in one directory and kills every one still alive at the end."""

    cwd: Path
    config: Path
    env: dict[str, str] = field(default_factory=dict)
    started: list[Daemon] = field(default_factory=list)

    def start(self, **env: str) -> Daemon:
        n = len(self.started)
        stdout, stderr = self.cwd / f"daemon-{n}.out", self.cwd / f"daemon-{n}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(self.config)],
                                    cwd=self.cwd, env=siyu_env(**{**self.env, **env}), stdout=out, stderr=err)
        daemon = Daemon(proc, stdout, stderr, time.monotonic())
        self.started.append(daemon)
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            daemon.kill()

    def log_lines(self) -> Iterator[str]:
        """Every line any of the daemons wrote, stdout and stderr."""
        for daemon in self.started:
            for path in (daemon.stdout, daemon.stderr):
                if path.exists():
                    yield from path.read_text(encoding="utf-8", errors="replace").splitlines()


# --------------------------------------------------------------------------- systemd's side

class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET; collects what arrives.

    Bound in a short temporary directory: socket paths are limited to about 107 bytes, and
    pytest's tmp_path can be longer.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="siyu-notify-"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read whatever has arrived; every datagram's lines, in order."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.messages
            self.messages.extend(data.decode().splitlines())

    def wait_for(self, line: str, timeout: float, count: int = 1) -> None:
        wait_for(lambda: self.drain().count(line) >= count, timeout, f"{count}× {line!r} on NOTIFY_SOCKET",
                 every=0.0)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()
