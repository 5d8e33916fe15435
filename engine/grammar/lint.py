"""Lint: playbooks that load but probably do not do what their author meant.

`siyu check` prints these as located warnings (`--strict` makes them errors); the daemon logs
them at start. Each check reads only the playbook and what is passed in (the config's timezone
and the channels' send windows), so the grammar stays free of config and adapters.

- a coupon whose discount is not below its threshold (an order of the threshold costs nothing);
- a scheduled playbook with a channel that has a `send_window` (marketing SMS: 08:00–22:00)
  firing outside that window: its touches wait, deferred until the window opens;
- a cron whose minute and hour look swapped: `10 0 * * *` runs at 00:10, not 10:00;
- a message template that sends `member.phone` (the number then sits in the vendor's records and on
  every screen the message reaches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time
from decimal import Decimal

from engine.clock import zone
from engine.errors import Problem
from engine.grammar.loader import LoadedPlaybook
from engine.grammar.playbook import Coupon, Playbook
from engine.grammar.templates import attributes_read, template_strings
from engine.grammar.yamlsource import PathKey

SendWindow = tuple[time, time]
"""Local hours [start, end) in which a channel's vendor takes messages, in the config's timezone."""

SWAPPED_HOURS = range(6)
"""A cron hour this early, with a single minute that reads as a daytime hour (06–23), looks swapped."""
DAYTIME_HOURS = range(6, 24)

_REFERENCE_DAYS = (date(2026, 1, 15), date(2026, 7, 15))
"""Winter and summer days for moving a wall time between zones (both sides of any DST change)."""


def lint_playbooks(loaded: Iterable[LoadedPlaybook], *, timezone: str,
                   send_windows: Mapping[str, SendWindow]) -> list[Problem]:
    """Warnings for every playbook in `loaded`, in file order."""
    return [problem for item in loaded
            for problem in lint_playbook(item, timezone=timezone, send_windows=send_windows)]


def lint_playbook(item: LoadedPlaybook, *, timezone: str, send_windows: Mapping[str, SendWindow]) -> list[Problem]:
    """Warnings for one loaded playbook, located at file:line:col.

    `timezone` is the config's (playbooks without their own run in it, and send windows are read
    in it); `send_windows` maps a channel name to its adapter's window (none: no window).
    """
    playbook = item.playbook

    def warn(path: PathKey, message: str) -> Problem:
        line, col = item.source.locate(path) or (None, None)
        return Problem(str(item.path), line, col, message, severity="warning")

    problems = [warn(path, message) for path, message in _coupon_warnings(playbook)]
    problems += [warn(("trigger", "schedule"), message) for message in _swapped_cron(playbook, timezone)]
    problems += [warn(("trigger", "schedule"), message)
                 for message in _outside_send_window(playbook, timezone, send_windows)]
    problems += [warn(path, message) for path, message in _phone_in_message(playbook)]
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _coupons(playbook: Playbook) -> Iterator[tuple[PathKey, Coupon]]:
    if playbook.offer is None:
        return
    if playbook.offer.coupon is not None:
        yield ("offer", "coupon"), playbook.offer.coupon
    for index, tier in enumerate(playbook.offer.tiers or []):
        yield ("offer", "tiers", index, "coupon"), tier.coupon


def _coupon_warnings(playbook: Playbook) -> Iterator[tuple[PathKey, str]]:
    for path, coupon in _coupons(playbook):
        # threshold 0 is a no-threshold coupon (无门槛券): any discount is meant.
        if coupon.threshold > 0 and coupon.discount >= coupon.threshold:
            yield (*path, "discount"), (
                f"coupon discount {_yuan(coupon.discount)} is not less than its threshold "
                f"{_yuan(coupon.threshold)}: an order of {_yuan(coupon.threshold)} yuan would cost the member "
                "nothing; did you swap threshold and discount?")


def _phone_in_message(playbook: Playbook) -> Iterator[tuple[PathKey, str]]:
    for path, text in template_strings(playbook):
        if ("member", "phone") in attributes_read(text):
            yield path, ("this message sends the member's phone number (`member.phone`): it stays in the vendor's "
                         "records and on every screen the message reaches; leave it out")


def _yuan(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _hhmm(moment: time) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}"


def _swapped_cron(playbook: Playbook, timezone: str) -> Iterator[str]:
    cron = playbook.trigger.cron
    if cron is None or len(cron.minutes) != 1 or len(cron.hours) != 1:
        return
    (minute,), (hour,) = cron.minutes, cron.hours
    if hour in SWAPPED_HOURS and minute in DAYTIME_HOURS:
        fields = cron.text.split()
        meant = " ".join([fields[1], fields[0], *fields[2:]])
        every = "daily " if fields[2:] == ["*", "*", "*"] else ""
        yield (f"runs {every}at {_hhmm(time(hour, minute))} ({playbook.timezone or timezone}); "
               f"did you mean {meant} ({_hhmm(time(minute, hour))})? cron fields are minute, then hour")


def _inside(moment: time, window: SendWindow) -> bool:
    start, end = window
    return start <= moment < end if start <= end else (moment >= start or moment < end)


def _outside_send_window(playbook: Playbook, timezone: str,
                         send_windows: Mapping[str, SendWindow]) -> Iterator[str]:
    cron = playbook.trigger.cron
    if cron is None:
        return
    playbook_tz, config_tz = zone(playbook.timezone or timezone), zone(timezone)
    for step in playbook.channels:
        window = send_windows.get(step.channel)
        if window is None:
            continue
        outside: list[time] = []
        for hour in sorted(cron.hours):
            for minute in sorted(cron.minutes):
                wall = time(hour, minute)
                local = {datetime.combine(day, wall, tzinfo=playbook_tz).astimezone(config_tz).time()
                         for day in _REFERENCE_DAYS}
                if any(not _inside(t, window) for t in local):
                    outside.append(wall)
        if not outside:
            continue
        shown = ", ".join(_hhmm(t) for t in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        yield (f"runs at {shown}, outside the {step.channel} send_window {_hhmm(window[0])}–{_hhmm(window[1])} "
               f"({timezone}): its {step.channel} touches will wait (deferred) until the window opens at "
               f"{_hhmm(window[0])}")
