"""POSIX cron: the one parser behind `siyu check`, the scheduler and every "next run".

Five fields: minute hour day-of-month month day-of-week. Day-of-week 0 and 7 are
Sunday. When both day-of-month and day-of-week are restricted (neither starts with
`*`), a day matches if either does (Vixie/POSIX semantics). Times are wall-clock times
in the playbook's timezone; a wall time that does not exist (DST gap) is skipped and an
ambiguous one runs once, at its first occurrence.

APScheduler 3's `CronTrigger.from_crontab` numbers weekdays from Monday, so crontab
strings are never handed to it unchanged: the scheduler asks this module instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)


def _number(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(token.lower()) if names else None
    if value is None:
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"{name}: {token!r} is not a number")
        value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{name}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(a, name, low, high, names), _number(b, name, low, high, names)
            if first > last:
                raise ValueError(f"{name}: range {base!r} runs backwards")
        else:
            first = _number(base, name, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse `text`; ValueError with the field at fault otherwise."""
        if not isinstance(text, str):
            raise ValueError("a cron schedule must be text, e.g. \"0 10 * * *\"")  # noqa: TRY004 - pydantic reports ValueError
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(
                f"bad cron {text!r}: want 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)}")
        try:
            sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        except ValueError as exc:
            raise ValueError(f"bad cron {text!r}: {exc}") from None
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays,
                   days_restricted=not parts[2].startswith("*"),
                   weekdays_restricted=not parts[4].startswith("*"))

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        if self.days_restricted:
            return dom
        if self.weekdays_restricted:
            return dow
        return True

    def _wall_times(self, day: date) -> Iterator[time]:
        for hour in sorted(self.hours):
            for minute in sorted(self.minutes):
                yield time(hour, minute)

    def occurrences(self, after: datetime, until: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Every firing instant in `(after, until]`, ascending, as aware datetimes in `tz`."""
        start_day = after.astimezone(tz).date() - timedelta(days=1)
        end_day = until.astimezone(tz).date() + timedelta(days=1)
        seen: set[datetime] = set()
        day = start_day
        while day <= end_day:
            if self.matches_day(day):
                for wall in self._wall_times(day):
                    moment = datetime.combine(day, wall, tzinfo=tz)
                    # A wall time in a DST gap does not round-trip: it does not exist, skip it.
                    if moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moment.replace(
                            tzinfo=None):
                        continue
                    instant = moment.astimezone(UTC)
                    if after < instant <= until and instant not in seen:
                        seen.add(instant)
                        yield moment
            day += timedelta(days=1)

    def next_after(self, after: datetime, tz: ZoneInfo, horizon_days: int = 366 * 5) -> datetime | None:
        """The first firing instant strictly after `after` (None if none within ~5 years)."""
        window = timedelta(days=31)
        start = after
        limit = after + timedelta(days=horizon_days)
        while start < limit:
            for moment in self.occurrences(start, start + window, tz):
                return moment
            start += window
        return None
