"""Opening the store: URL normalisation, engines, and schema upgrades through Alembic.

SQLite is the embedded default (one process writes); PostgreSQL is production (many
replicas on one primary). `postgresql://` URLs use psycopg 3.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from engine.errors import DatabaseError
from engine.logs import mask_url_password
from engine.store.schema import SCHEMA_REVISION

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """`postgresql://…` and `postgres://…` → `postgresql+psycopg://…`; others unchanged."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # SQLAlchemy's message repeats the URL, password and all
        raise DatabaseError(f"bad database URL {mask_url_password(url)!r}: write e.g. sqlite:///siyu.db or "
                            "postgresql://user@host/db", location="--db") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: object, _record: ConnectionPoolEntry) -> None:
    # pysqlite's own transaction handling is switched off: `_sqlite_begin` emits BEGIN itself,
    # so that ledger writes can take the write lock up front (BEGIN IMMEDIATE).
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _create_private_sqlite_file(url: URL) -> None:
    """A SQLite file Siyu creates is readable by its owner only (0600): it holds members' phones and
    vendors' access tokens. SQLite gives its -wal and -shm files the database file's mode. An existing
    file is left as it is."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return
    path = Path(database)
    if not path.exists() and path.parent.is_dir():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def world_readable(engine: Engine) -> Path | None:
    """The SQLite file of `engine` when every user of the host may read it (an existing file made
    before Siyu created its files 0600, or copied), else None. Left as it is: the daemon warns."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    try:
        return path if path.stat().st_mode & stat.S_IROTH else None
    except OSError:  # not there (yet)
        return None


def open_engine(url: str) -> Engine:
    """An Engine for `url`, with SQLite set up for a long-running writer (WAL, FKs). Statement
    parameters (phones, tokens) never appear in its error messages."""
    url = normalise_url(url)
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_engine(url, future=True, hide_parameters=True)
    except (ArgumentError, ImportError) as exc:
        raise DatabaseError(f"cannot open database {shown!r}: {exc}", location="--db") from None
    if engine.dialect.name == "sqlite":
        # created when a connection first needs it, not when the engine is made (a read-only command
        # such as `check --db` on an absent file creates nothing)
        event.listen(engine, "do_connect", lambda *_: _create_private_sqlite_file(parsed))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes the ledger: on SQLite it takes the write lock at BEGIN
    (BEGIN IMMEDIATE), so what it reads cannot change before it writes. PostgreSQL callers
    lock what they read explicitly (FOR UPDATE, advisory locks: engine/ledger/)."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def _alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot upgrade database: {exc.orig}") from None


alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))
"""Alembic's own bookkeeping table (not part of Siyu's schema metadata)."""


def is_current(engine: Engine) -> bool:
    """True when the schema is at the newest revision (SCHEMA_REVISION)."""
    return schema_revisions(engine) == {SCHEMA_REVISION}


def schema_revisions(engine: Engine) -> set[str] | None:
    """The revisions recorded in `alembic_version`, or None when the table cannot be read.
    Read directly: importing Alembic and its scripts would cost every command a third of a second."""
    try:
        with engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(select(alembic_version.c.version_num))}
    except DBAPIError:
        return None


def require_schema(engine: Engine) -> None:
    """Refuse to read a database that has no Siyu schema (say how to create it); create nothing."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:") and not Path(database).exists():
        raise DatabaseError(f"no database file {database!r}: run `siyu import DIR --db URL` or "
                            "`siyu db upgrade --db URL` first", location="--db")
    revisions = schema_revisions(engine)
    if revisions == {SCHEMA_REVISION}:
        return
    try:
        tables = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise DatabaseError(f"cannot connect to database: {exc.orig}") from None
    where = engine.url.render_as_string(hide_password=True)
    if "members" not in tables:
        raise DatabaseError(f"{where} has no Siyu tables: run `siyu import DIR --db URL` or "
                            "`siyu db upgrade --db URL` first")
    raise DatabaseError(f"{where} has an older Siyu schema: run `siyu db upgrade --db URL` first")


_TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "08000", "08003", "08006"}
"""PostgreSQL: serialization failure, deadlock, lock not available, admin shutdown, connection errors."""


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying on the next loop (deadlock, lost connection, busy SQLite)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)  # SQLite: busy past busy_timeout
