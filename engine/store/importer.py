"""CSV import: check each file whole, then upsert it by id inside one transaction.

`import_directory` reads members.csv, orders.csv, order_items.csv, coupons.csv and
events.csv (those present, in that order). Each file is streamed twice: the first pass
checks every row and collects every problem as `file:line: column: message`; only a file
without problems is written, in chunks of `CHUNK_ROWS` rows inside one transaction, so a
file is imported whole or not at all. Rows are upserted by id and an order's items (a
member's tags) are replaced, so importing the same files again changes nothing.

How a cell is read follows its column in `engine.store.schema`: `*_fen` columns take yuan,
`UtcDateTime` columns take ISO 8601 (local to `tz` without an offset), booleans take 0/1,
and strings must fit their length. This module holds the importer's SQL.

A member's phone is stored normalised (`engine.grammar.addresses.mainland_mobile`: `+86 138 0002
8002` → `13800028002`). A phone that does not normalise is stored empty, with a located warning
(the member is unreachable by sms and ai_call), and the row imports: one foreign number never
refuses a million-row file. With `strict`, such a phone is a bad row like any other.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DefaultClause,
    Engine,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from engine.clock import parse_instant, utc
from engine.errors import DatabaseError, Problem, UsageError
from engine.grammar.addresses import mainland_mobile, masked
from engine.store.schema import (
    ORDER_STATUSES,
    UtcDateTime,
    coupons,
    events,
    member_tags,
    members,
    order_items,
    orders,
)

CHUNK_ROWS = 5000
"""Rows per executemany, per existence query and per progress update."""

Row = dict[str, Any]
Parse = Callable[[str, ZoneInfo], object]

_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1
_MAX_YUAN = Decimal(_BIGINT_MAX).scaleb(-2)
_CENT = Decimal("0.01")
_DIGITS = re.compile(r"[0-9]+")
_EXCEL_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?[eE]\+?[0-9]+")  # 1.38001E+10: a phone Excel read as a number


@dataclass(frozen=True)
class FileReport:
    """What happened to one CSV file."""

    file: str  #: the path as given, e.g. `data/orders.csv`
    rows: int  #: rows imported; 0 when the file had problems (then nothing of it was imported)
    problems: list[Problem] = field(default_factory=list)  #: every problem, by line
    warnings: list[Problem] = field(default_factory=list)  #: rows imported with a value left out, by line


@dataclass(frozen=True)
class ImportReport:
    """What happened to each CSV file found, in import order."""

    files: list[FileReport]

    @property
    def problems(self) -> list[Problem]:
        """Every problem of every file; empty when everything was imported."""
        return [problem for report in self.files for problem in report.problems]

    @property
    def warnings(self) -> list[Problem]:
        """Every warning of every file (a phone stored empty); none of them refused a row."""
        return [warning for report in self.files for warning in report.warnings]


@dataclass(frozen=True)
class _Spec:
    """The contract of one CSV file."""

    name: str
    table: Table
    header: tuple[str, ...]  # every column the file may have, in the contract's order
    required: frozenset[str]  # must be in the header and non-empty in every row
    key: str | None  # unique in the file; the upsert key (order_items has none: items are replaced)
    refers: tuple[str, Column[Any], str] | None = None  # (csv column, column it must exist in, its file)

    def target(self, name: str) -> str:
        """The stored column of CSV column `name` (`amount` → `amount_fen`)."""
        return f"{name}_fen" if f"{name}_fen" in self.table.c else name


_SPECS = (
    _Spec("members.csv", members, (
        "member_id", "nickname", "phone", "origin_platform", "tier", "points", "points_expiring",
        "points_expire_at", "city", "joined_at", "tags", "wecom_external_userid", "wecom_staff_userid",
        "oa_openid", "oa_subscribed", "sms_opt_out", "call_opt_out",
    ), frozenset({"member_id"}), "member_id"),
    _Spec("orders.csv", orders,
          ("order_id", "member_id", "platform", "created_at", "paid_at", "amount", "status"),
          frozenset({"order_id", "member_id", "amount", "status"}), "order_id",
          ("member_id", members.c.member_id, "members.csv")),
    _Spec("order_items.csv", order_items, ("order_id", "sku", "category", "quantity", "amount", "trial"),
          frozenset({"order_id"}), None, ("order_id", orders.c.order_id, "orders.csv")),
    _Spec("coupons.csv", coupons,
          ("coupon_id", "member_id", "threshold", "discount", "issued_at", "expires_at", "redeemed_at"),
          frozenset({"coupon_id", "member_id", "threshold", "discount"}), "coupon_id",
          ("member_id", members.c.member_id, "members.csv")),
    _Spec("events.csv", events, ("event_id", "member_id", "type", "occurred_at", "attributes"),
          frozenset({"event_id", "member_id", "type", "occurred_at"}), "event_id",
          ("member_id", members.c.member_id, "members.csv")),
)


def import_directory(engine: Engine, directory: Path, tz: ZoneInfo, progress: bool = True,
                     strict: bool = False) -> ImportReport:
    """Import the CSV files found in `directory`; bad rows are reported, not raised.

    With `strict`, a phone that is not a mainland mobile number makes its row bad instead of
    being stored empty with a warning.

    A file with any bad row imports nothing; the other files still import. Raises
    `UsageError` when `directory` cannot be read or holds none of the files, and
    `DatabaseError` when the database cannot be used.
    """
    try:
        names = {entry.name for entry in directory.iterdir() if entry.is_file()}
    except OSError as exc:
        raise UsageError(f"cannot read the directory: {exc.strerror or exc}", location=str(directory)) from None
    specs = [spec for spec in _SPECS if spec.name in names]
    if not specs:
        expected = ", ".join(spec.name for spec in _SPECS)
        raise UsageError(f"no CSV file to import here (expected any of {expected})", location=str(directory))
    rejected: set[str] = set()
    reports = []
    columns = (TextColumn("{task.description}"), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        for spec in specs:
            report = _import_file(engine, spec, directory / spec.name, tz, bar, rejected, strict)
            if report.problems:
                rejected.add(spec.name)
            reports.append(report)
    return ImportReport(reports)


def _import_file(
    engine: Engine, spec: _Spec, path: Path, tz: ZoneInfo, bar: Progress, rejected: set[str], strict: bool,
) -> FileReport:
    label = str(path)
    try:
        layout = _read_header(spec, path, label, strict)
        if isinstance(layout, list):
            return FileReport(label, 0, layout)
        count, problems, warnings = _check(engine, layout, path, label, tz, bar, rejected)
        if problems:
            return FileReport(label, 0, sorted(problems, key=lambda problem: problem.line or 0))
        return FileReport(label, _write(engine, layout, path, tz, bar, count), [], warnings)
    except UnicodeDecodeError:
        message = "is not UTF-8 text (save it as “CSV UTF-8”); nothing of it was imported"
    except csv.Error as exc:
        message = f"is not valid CSV ({exc}; an unclosed quote?); nothing of it was imported"
    except OSError as exc:
        message = f"cannot be read: {exc.strerror or exc}"
    except _ChangedError:
        message = "changed while it was being imported; nothing of it was imported, run the import again"
    except (IntegrityError, DataError) as exc:
        message = f"was refused by the database ({exc.orig}); nothing of it was imported"
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot import {label}: {getattr(exc, 'orig', None) or exc}") from None
    return FileReport(label, 0, [Problem(label, None, None, message)])


class _ChangedError(Exception):
    """A row that passed the check failed on the second read: the file changed meanwhile."""


@dataclass(frozen=True)
class _Layout:
    """One file's header, resolved against its spec."""

    spec: _Spec
    names: tuple[str, ...]  # CSV columns in file order
    targets: tuple[str, ...]  # the stored column (or "tags") of each
    parsers: tuple[Parse, ...]
    insert_only: Row  # NOT NULL columns absent from the header that have no server default
    strict: bool = False  # a phone that does not normalise is an error, not a warning

    def parse(self, cells: list[str], tz: ZoneInfo) -> tuple[Row, list[str], list[str]]:
        """The row's stored values, its problems and its warnings, each as `column: message`."""
        if len(cells) != len(self.names):
            return {}, [f"row: has {len(cells)} values but the header has {len(self.names)} columns"], []
        values, errors = dict(self.insert_only), []
        warnings: list[str] = []
        for name, target, parse, cell in zip(self.names, self.targets, self.parsers, cells, strict=True):
            text = cell.strip()
            if "\x00" in text:
                errors.append(f"{name}: contains a NUL character")
            elif not text and name in self.spec.required:
                errors.append(f"{name}: is empty")
            elif text and self.spec.table is members and target == "phone":
                values[target] = mainland_mobile(text)
                if values[target] is None:
                    (errors if self.strict else warnings).append(_not_a_mobile(name, text))
            else:
                try:
                    values[target] = parse(text, tz)
                except ValueError as exc:
                    errors.append(f"{name}: {exc}")
        if self.spec.table is orders and values.get("status") == "paid":
            errors += _paid_without_paid_at(values, self.names)
        return values, errors, warnings


def _not_a_mobile(name: str, text: str) -> str:
    """The message for a member's phone that does not normalise; its digits masked."""
    hint = " (Excel turned it into a number? format the column as text)" if _EXCEL_NUMBER.fullmatch(text) else ""
    return (f"{name}: {masked(text)!r} is not a mainland mobile number{hint}; "
            f"the member is unreachable by sms and ai_call")


def _paid_without_paid_at(values: Row, names: tuple[str, ...]) -> list[str]:
    """A paid order needs its payment time (a paid_at that failed to parse is reported already)."""
    if "paid_at" not in names:
        return ["paid_at: status is paid but the file has no paid_at column"]
    if "paid_at" in values and values["paid_at"] is None:
        return ["paid_at: status is paid but paid_at is empty"]
    return []


def _records(path: Path) -> Generator[tuple[int, list[str]], None, None]:
    """(physical line where the record starts, cells) of every non-blank record, header first."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        start = 1
        for cells in reader:
            if cells:
                yield start, cells
            start = reader.line_num + 1


def _read_header(spec: _Spec, path: Path, label: str, strict: bool) -> _Layout | list[Problem]:
    """The file's layout, or the header's problems."""
    records = _records(path)
    try:
        header = next(records, None)
    finally:
        records.close()
    if header is None:
        return [Problem(label, 1, None, "header: the file is empty (expected a header row)")]
    names = [name.strip() for name in header[1]]
    errors = [f"header: unknown column {name!r} (expected one of {', '.join(spec.header)})"
              for name in names if name not in spec.header]
    errors += [f"header: column {name!r} appears more than once"
               for name in dict.fromkeys(names) if names.count(name) > 1]
    errors += [f"header: required column {name!r} is missing"
               for name in spec.header if name in spec.required and name not in names]
    if errors:
        return [Problem(label, 1, None, error) for error in errors]
    absent = [spec.table.c[spec.target(name)] for name in spec.header if name not in names and name != "tags"]
    insert_only = {column.name: _parser(column)("", ZoneInfo("UTC")) for column in absent
                   if not column.nullable and column.server_default is None}
    return _Layout(spec, tuple(names), tuple(spec.target(name) for name in names),
                   tuple(_tags if name == "tags" else _parser(spec.table.c[spec.target(name)]) for name in names),
                   insert_only, strict)


def _check(
    engine: Engine, layout: _Layout, path: Path, label: str, tz: ZoneInfo, bar: Progress, rejected: set[str],
) -> tuple[int, list[Problem], list[Problem]]:
    """First pass: every problem of every row; returns (data rows, problems, warnings)."""
    spec, problems, warnings, count = layout.spec, [], [], 0
    seen: set[str] = set()
    pending: list[tuple[int, str]] = []  # (line, id that must exist)
    task = bar.add_task(f"checking {spec.name}", total=None)
    with engine.connect() as conn:
        for line, cells in islice(_records(path), 1, None):
            count += 1
            values, errors, notes = layout.parse(cells, tz)
            warnings += [Problem(label, line, None, note, severity="warning") for note in notes]
            key = values.get(spec.key) if spec.key else None
            if key is not None and key in seen:
                errors.append(f"{spec.key}: {key!r} appears more than once in this file")
            elif key is not None:
                seen.add(key)
            if spec.refers and values.get(spec.refers[0]) is not None:
                pending.append((line, values[spec.refers[0]]))
            problems += [Problem(label, line, None, error) for error in errors]
            if len(pending) >= CHUNK_ROWS:
                problems += _unknown(conn, spec, pending, label, rejected)
                pending.clear()
            if count % CHUNK_ROWS == 0:
                bar.update(task, completed=count)
        problems += _unknown(conn, spec, pending, label, rejected)
    bar.update(task, completed=count, total=count)
    return count, problems, warnings


def _unknown(
    conn: Connection, spec: _Spec, pending: list[tuple[int, str]], label: str, rejected: set[str],
) -> list[Problem]:
    """Problems for the rows whose member (or order) is neither stored nor imported just before."""
    if not spec.refers or not pending:
        return []
    name, column, source = spec.refers
    missing = _missing(conn, column, {ident for _, ident in pending})
    what = "member" if column.table is members else "order"
    why = (f"{source} has problems and was not imported" if source in rejected
           else f"not in the database or in {source}")
    return [Problem(label, line, None, f"{name}: unknown {what} {ident!r} ({why})")
            for line, ident in pending if ident in missing]


def _missing(conn: Connection, column: Column[Any], idents: set[str]) -> set[str]:
    """Which of `idents` (at most `CHUNK_ROWS`) are not in `column`; one query."""
    return idents - set(conn.scalars(select(column).where(column.in_(idents))))


def _write(engine: Engine, layout: _Layout, path: Path, tz: ZoneInfo, bar: Progress, total: int) -> int:
    """Second pass: upsert every row in chunks, in one transaction; returns the rows written."""
    task = bar.add_task(f"importing {layout.spec.name}", total=total)
    written = 0
    numbers: dict[str, int] = {}  # order_id → its last line_no so far
    with engine.begin() as conn:
        upsert = _upsert(conn, layout, layout.spec.key) if layout.spec.key else None
        for chunk in _chunks(_parsed(layout, path, tz)):
            if upsert is None:
                _replace_items(conn, chunk, numbers)
            else:
                tags = {row["member_id"]: row.pop("tags") for row in chunk} if "tags" in layout.names else None
                conn.execute(upsert, chunk)
                if tags is not None:
                    _replace_tags(conn, tags)
            written += len(chunk)
            bar.update(task, completed=written)
    return written


def _parsed(layout: _Layout, path: Path, tz: ZoneInfo) -> Iterator[Row]:
    for _, cells in islice(_records(path), 1, None):
        values, errors, _ = layout.parse(cells, tz)
        if errors:
            raise _ChangedError
        yield values


def _chunks(rows: Iterable[Row]) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, CHUNK_ROWS)):
        yield chunk


def _upsert(conn: Connection, layout: _Layout, key: str) -> Insert:
    """INSERT … ON CONFLICT (id) DO UPDATE of the file's columns; the one statement that differs by dialect.

    Columns absent from the header are left as stored (`insert_only` values apply to new rows only).
    """
    spec, dialect = layout.spec, conn.dialect.name
    if dialect == "postgresql":
        stmt: postgresql.Insert | sqlite.Insert = postgresql.insert(spec.table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(spec.table)
    else:
        raise DatabaseError(f"cannot import into {dialect}: use SQLite or PostgreSQL")
    updates = {name: stmt.excluded[name] for name in layout.targets if name not in (key, "tags")}
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=[key])
    return stmt.on_conflict_do_update(index_elements=[key], set_=updates)


def _replace_tags(conn: Connection, tags: dict[str, tuple[str, ...]]) -> None:
    conn.execute(delete(member_tags).where(member_tags.c.member_id.in_(tags)))
    rows = [{"member_id": member_id, "tag": tag} for member_id, names in tags.items() for tag in names]
    if rows:
        conn.execute(insert(member_tags), rows)


def _replace_items(conn: Connection, chunk: list[Row], numbers: dict[str, int]) -> None:
    """Insert items numbered 1, 2, … per order in file order, after deleting the order's stored items."""
    fresh = {row["order_id"] for row in chunk} - numbers.keys()
    if fresh:
        conn.execute(delete(order_items).where(order_items.c.order_id.in_(fresh)))
    for row in chunk:
        row["line_no"] = numbers[row["order_id"]] = numbers.get(row["order_id"], 0) + 1
    conn.execute(insert(order_items), chunk)


def _parser(column: Column[Any]) -> Parse:
    """How to read a cell for `column`; an empty cell gives NULL or the column's default."""
    parse = _parser_by_type(column)
    default = column.server_default
    if column.nullable:
        return lambda text, tz: parse(text, tz) if text else None
    if isinstance(default, DefaultClause):
        return lambda text, tz: parse(text or str(default.arg), tz)
    return parse


def _parser_by_type(column: Column[Any]) -> Parse:
    if column.name.endswith("_fen"):
        return lambda text, tz: _fen(text)
    if column is orders.c.status:
        return lambda text, tz: _status(text)
    if isinstance(column.type, UtcDateTime):
        return _instant
    if isinstance(column.type, Boolean):
        return lambda text, tz: _flag(text)
    if isinstance(column.type, Integer):
        return lambda text, tz: _whole(text, _BIGINT_MAX if isinstance(column.type, BigInteger) else _INT_MAX)
    if isinstance(column.type, JSON):
        return lambda text, tz: _json_object(text)
    length = _length(column)
    return lambda text, tz: _text(text, length)


def _length(column: Column[Any]) -> int | None:
    """The most characters `column` holds (PostgreSQL enforces it; SQLite would not)."""
    return column.type.length if isinstance(column.type, String) else None


def _text(text: str, length: int | None) -> str:
    if length is not None and len(text) > length:
        raise ValueError(f"is {len(text)} characters long; at most {length} fit")
    return text


def _tags(text: str, tz: ZoneInfo) -> tuple[str, ...]:
    tags = tuple(dict.fromkeys(tag.strip() for tag in text.split("|") if tag.strip()))
    for tag in tags:
        _text(tag, _length(member_tags.c.tag))
    return tags


def _whole(text: str, maximum: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{_quoted(text)} is not a whole number of 0 or more")
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        raise ValueError(f"{_quoted(text)} is too large")
    return int(text)


def _fen(text: str) -> int:
    """Yuan with at most 2 decimals → integer fen, exactly."""
    try:
        yuan = Decimal(text)
    except InvalidOperation:
        yuan = Decimal("NaN")
    if not yuan.is_finite():
        raise ValueError(f"{_quoted(text)} is not a number (write yuan, e.g. 199.99)")
    if yuan < 0:
        raise ValueError(f"{_quoted(text)} is negative")
    if yuan > _MAX_YUAN:
        raise ValueError(f"{_quoted(text)} is too large")
    # Comparisons are exact; below _MAX_YUAN the quantized value fits the context's 28 digits.
    if yuan != yuan.quantize(_CENT):
        raise ValueError(f"{_quoted(text)} has more than 2 decimals (write yuan, e.g. 199.99)")
    return int(yuan.scaleb(2))


def _instant(text: str, tz: ZoneInfo) -> datetime:
    try:
        return utc(parse_instant(text, tz))
    except OverflowError:
        raise ValueError(f"{_quoted(text)} is out of range") from None


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"{_quoted(text)} must be 0 or 1")
    return text == "1"


def _status(text: str) -> str:
    if text not in ORDER_STATUSES:
        raise ValueError(f"{_quoted(text)} is not a status (use {', '.join(ORDER_STATUSES)})")
    return text


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos + 1})") from None
    if isinstance(value, dict):
        return value
    raise ValueError(f'must be a JSON object such as {{"fair": "guangzhou"}}, not {_quoted(text)}')


def _quoted(text: str) -> str:
    """A cell as shown in a message: quoted, and cut short if long."""
    return repr(text if len(text) <= 40 else text[:39] + "…")


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed in JSON")

