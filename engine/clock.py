"""Time: aware instants, `--at` parsing, durations, and local calendar days as UTC bounds.

Everything stored is UTC; everything a marketer writes is local to the playbook's
timezone. Calendar-day windows become half-open UTC intervals here, once, so SQL
compares plain timestamps (sargable, identical on SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import UsageError

DEFAULT_TIMEZONE = "Asia/Shanghai"

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`; ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a folder such as "Asia"
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as Asia/Shanghai)") from exc


def parse_duration(text: str) -> timedelta:
    """'30m' → 30 minutes. Units: s, m, h, d. ValueError otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"bad duration {text!r}: write a number and a unit s, m, h or d, e.g. 30m")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check_aware(moment: datetime) -> datetime:
    """Reject naive datetimes: every instant in Siyu knows its offset."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} (an instant needs an offset)")
    return moment


def parse_instant(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 instant; without an offset it is local time in `tz`.

    A date alone means its local midnight.
    """
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError as exc:
        raise ValueError(f"bad date/time {text!r}: use ISO 8601, e.g. 2026-11-22T10:00:00+08:00") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def parse_at(text: str, tz: ZoneInfo) -> datetime:
    """`--at` for the CLI: like `parse_instant`, but a UsageError names the flag."""
    try:
        return parse_instant(text, tz)
    except ValueError as exc:
        raise UsageError(str(exc), location="--at") from exc


def utc(moment: datetime) -> datetime:
    return check_aware(moment).astimezone(UTC)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return check_aware(moment).astimezone(tz).date()


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local calendar day `day` begins in `tz`."""
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


def days_between(later: date, earlier: date) -> int:
    return (later - earlier).days


def now() -> datetime:
    """The current instant, in UTC (freezegun-friendly)."""
    return datetime.now(UTC)
