"""The `siyu` CLI in subprocesses: no database password, phone number or statement row in what it prints,
and the files it creates readable by their owner only.

An internal error is one short line (its type and first line, masked) and exit 70; `SIYU_DEBUG=1`
adds the traceback, masked as well. A database URL's password never appears in any output, whether
the command works or fails.
"""

from __future__ import annotations

import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import PHONE, SCHEDULED_PLAYBOOK, Daemons, seed_members, siyu, write_setup
from sqlalchemy import text
from sqlalchemy.engine import make_url
from testdb import new_database_url

from engine.store.connect import open_engine

PASSWORD = "Sup3rSecretPw"
"""The database password in the URLs below (the test server trusts local connections: any password works)."""

# The minutely playbook, sending each member's phone number in the message (`siyu check` warns about that).
PHONE_PLAYBOOK = SCHEDULED_PLAYBOOK.replace("{{ member.nickname }}，您好", "{{ member.nickname }} {{ member.phone }}")


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    """An isolated, migrated PostgreSQL database (its URL has no password)."""
    yield from new_database_url("postgresql", tmp_path)


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def refuse_touches(db_url: str) -> None:
    """A trigger that makes every insert into `touches` fail (PostgreSQL's message quotes the whole row)."""
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON touches "
                                  "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))
            else:
                conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                                  "$$ BEGIN RAISE EXCEPTION 'refused: %', NEW; END $$"))
                conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON touches FOR EACH ROW EXECUTE FUNCTION refuse()"))
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_cli__a_database_password_never_appears_in_any_output(pg_url: str, tmp_path: Path, daemons: Daemons) -> None:
    """Commands that work and commands that fail, with the password in `--db` or in the config (from
    the environment): the password is in none of their outputs, nor in the daemon's log."""
    url = with_password(pg_url)
    user = f"{make_url(pg_url).username}@"
    config = write_setup(tmp_path, pg_url.replace(user, user[:-1] + ":${SIYU_TEST_DB_PASSWORD}@", 1),
                         {"hello.yaml": PHONE_PLAYBOOK})
    seed_members(pg_url, 3, tagged=3)
    env = {"SIYU_TEST_DB_PASSWORD": PASSWORD}
    unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)
    runs = [
        (0, ["db", "upgrade", "--db", url]),
        (0, ["check", "--db", url, str(tmp_path / "playbooks")]),
        (0, ["check", "--config", str(config)]),
        (0, ["values", "--db", url]),
        (0, ["compile", str(tmp_path / "playbooks" / "hello.yaml"), "--db", url]),
        (0, ["dry-run", "--db", url, "--at", "2026-11-22 10:00", str(tmp_path / "playbooks")]),
        (0, ["tick", "--config", str(config)]),
        (0, ["status", "--config", str(config)]),
        (0, ["suppress", "list", "--config", str(config)]),
        (1, ["check", "--db", make_url(url).set(database="no_such_db").render_as_string(hide_password=False),
             str(tmp_path / "playbooks")]),
        (1, ["values", "--db", unreachable]),
        (1, ["db", "upgrade", "--db", url.replace("postgresql+psycopg", "mysql+nosuchdriver")]),
        (1, ["db", "upgrade", "--db", url.replace("127.0.0.1:5432", "127.0.0.1:notaport")]),
    ]
    outputs = []
    for code, argv in runs:
        done = siyu(*argv, cwd=tmp_path, **env)
        assert done.returncode == code, (argv, done.stderr)
        outputs.append(done.stdout + done.stderr)
    daemons.env = env
    daemon = daemons.start()
    daemon.wait_ready()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    outputs += list(daemons.log_lines())
    assert all(outputs[:9]) and len(outputs) > len(runs)  # every command said something: the grep is not vacuous
    assert [o for o in outputs if PASSWORD in o] == []


def test_tick__an_internal_error_is_one_short_line_without_rows(db_url: str, tmp_path: Path) -> None:
    """A tick whose ledger writes fail prints one line (the type and a masked first line, no statement and
    no rows) and exits 70; SIYU_DEBUG=1 adds the traceback, with every phone masked and no parameters."""
    write_setup(tmp_path, db_url, {"hello.yaml": PHONE_PLAYBOOK})
    seed_members(db_url, 200, tagged=200)
    refuse_touches(db_url)
    done = siyu("tick", "--config", "config.yaml", cwd=tmp_path)
    assert done.returncode == 70, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("siyu: internal error: ") and line.endswith(" (run with SIYU_DEBUG=1 for details)")
    assert len(line) <= 300
    assert "refused" in line and "[SQL" not in line and "INSERT" not in line
    assert not PHONE.search(done.stdout + done.stderr)

    debug = siyu("tick", "--config", "config.yaml", cwd=tmp_path, SIYU_DEBUG="1")
    assert debug.returncode == 70
    assert "Traceback (most recent call last)" in debug.stderr and "refused" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line
    assert not PHONE.search(debug.stdout + debug.stderr)
    assert "[parameters:" not in debug.stderr


def test_dry_run__out_file_is_created_readable_by_its_owner_only(db_url: str, tmp_path: Path) -> None:
    """`dry-run --out FILE` lists members and their messages: a new file is 0600 (created so, never chmod-ed)."""
    write_setup(tmp_path, db_url, {"hello.yaml": SCHEDULED_PLAYBOOK})
    seed_members(db_url, 3, tagged=3)
    out = tmp_path / "decisions.jsonl"
    done = siyu("dry-run", "--db", db_url, "--at", "2026-11-22 10:00", "--format", "jsonl", "--out", str(out),
                "playbooks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_run__an_existing_world_readable_sqlite_database_is_warned_at_start(sqlite_url: str, tmp_path: Path,
                                                                            daemons: Daemons) -> None:
    """A database file every user can read gets `store.world_readable` with its path at start; the daemon
    does not change its mode."""
    write_setup(tmp_path, sqlite_url, {"hello.yaml": SCHEDULED_PLAYBOOK})
    database = Path(make_url(sqlite_url).database or "")
    database.chmod(0o644)
    daemon = daemons.start()
    daemon.wait_ready()
    (warning,) = daemon.events("store.world_readable")
    assert (warning["level"], warning["path"]) == ("warning", str(database))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert stat.S_IMODE(database.stat().st_mode) == 0o644


def test_run__a_private_or_postgresql_database_is_not_warned(db_url: str, tmp_path: Path, daemons: Daemons) -> None:
    """A SQLite file Siyu created (0600) or a PostgreSQL database: no `store.world_readable`."""
    write_setup(tmp_path, db_url, {"hello.yaml": SCHEDULED_PLAYBOOK})
    daemon = daemons.start()
    daemon.wait_ready()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert daemon.events("daemon.ready") and daemon.events("store.world_readable") == []
