"""What every benchmark in bench/ shares: the result row, timing a child process with its peak
RSS, timing a block in this process, and the databases a size of the demo lives in.

A row is one measurement: `approach`, `playbook`, `db`, `members`, `seconds`, `peak_rss_mb`,
`rows`, plus whatever else the measurement knows (`extrapolated`, `touches_per_second`, …).
`bench/run.py --json FILE` writes them as one JSON array so runs can be compared.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"
"""Generated databases, Parquet exports and configs (git-ignored; reused between runs)."""
PG_SERVER = os.environ.get("SIYU_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
"""The PostgreSQL server the bench creates its databases on (one per demo size)."""


Row = dict[str, Any]


def row(approach: str, playbook: str, db: str, members: int, seconds: float, peak_rss_mb: float | None,
        rows: int | None, **extra: Any) -> Row:
    """One measured row, with the contract's keys first."""
    return {"approach": approach, "playbook": playbook, "db": db, "members": members,
            "seconds": round(seconds, 4), "peak_rss_mb": None if peak_rss_mb is None else round(peak_rss_mb, 1),
            "rows": rows, **extra}


@dataclass
class Child:
    """A finished child process: wall time, its own peak RSS, its exit status and stderr."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str
    cpu_seconds: float = 0.0


def run_child(argv: Sequence[str], *, stdout: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> Child:
    """Run `argv` to completion: its wall time, CPU time and peak RSS.

    The peak is the child's own VmHWM (its address space's high-water mark since exec), read
    from /proc while it runs. wait4's ru_maxrss would not do: Linux carries the parent's
    high-water mark into a forked child across exec, so a big parent would inflate every child.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=cwd)
    peak = _HighWater(proc.pid)
    peak.start()
    assert proc.stderr is not None
    err = proc.stderr.read()  # read before waiting: a full pipe would block the child
    peak.done = True
    peak.join()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(seconds, peak.kb / 1024, proc.returncode, err.decode("utf-8", "replace"),
                 usage.ru_utime + usage.ru_stime)


class _HighWater(threading.Thread):
    """Polls a process's VmHWM (kB) every 20 ms until told to stop or the process is gone."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.kb = 0
        self.done = False

    def run(self) -> None:
        while not self.done:
            try:
                for line in self.path.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except (OSError, ValueError):
                return
            time.sleep(0.02)


def siyu_argv(*args: str) -> list[str]:
    """`python -m engine ARGS` with this interpreter (the project's environment)."""
    return [sys.executable, "-m", "engine", *args]


@dataclass
class Timed:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def timed() -> Iterator[Timed]:
    """Wall and CPU time of a block run in this process."""
    result = Timed()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - wall
        result.cpu_seconds = time.process_time() - cpu


def peak_rss_mb() -> float:
    """This process's peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def database_url(db: str, members: int) -> str:
    """Where the demo of `members` lives on `db` (sqlite: a file under bench/.data; postgres: one
    database per size on PG_SERVER, created when missing)."""
    if db == "sqlite":
        DATA.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DATA / f'demo-{members}.db'}"
    if db == "postgres":
        name = f"siyu_bench_{members}"
        _create_pg_database(name)
        return f"{PG_SERVER}/{name}"
    raise SystemExit(f"--db: unknown database {db!r} (sqlite, postgres)")


def empty_database(db: str, sqlite_path: Path, pg_name: str) -> str:
    """An empty database for one measurement: the SQLite file (and its WAL) deleted, or the
    PostgreSQL database dropped and created again."""
    if db == "sqlite":
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (sqlite_path, sqlite_path.with_name(f"{sqlite_path.name}-wal"),
                         sqlite_path.with_name(f"{sqlite_path.name}-shm")):
            leftover.unlink(missing_ok=True)
        return f"sqlite:///{sqlite_path}"
    if db == "postgres":
        from sqlalchemy import create_engine, text

        admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'drop database if exists "{pg_name}" with (force)'))
                conn.execute(text(f'create database "{pg_name}"'))
        finally:
            admin.dispose()
        return f"{PG_SERVER}/{pg_name}"
    raise SystemExit(f"--db: unknown database {db!r} (sqlite, postgres)")


def _create_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(text("select 1 from pg_database where datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'create database "{name}"'))
    finally:
        engine.dispose()


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on, for the README."""
    import platform

    import psutil
    import sqlalchemy

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "sqlite": __import__("sqlite3").sqlite_version,
        "sqlalchemy": sqlalchemy.__version__, "os": platform.platform(terse=True),
    }
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(f"{PG_SERVER}/postgres")
        with engine.connect() as conn:
            info["postgresql"] = conn.execute(text("show server_version")).scalar_one()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the machine line says what it could not read
        info["postgresql"] = f"unavailable ({type(exc).__name__})"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
