"""Who can be reached on which channel: defined once, used by the compiler and the dispatcher.

- `sms`, `ai_call`: a phone, and no opt-out of that channel;
- `wecom`: an external user id and the staff member who owns the friendship;
- `template`: an official-account openid that is subscribed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import ColumnElement, FromClause, and_, false, true

from engine.grammar.audience import CHANNEL_NAMES


def _present(column: ColumnElement[str]) -> ColumnElement[bool]:
    return and_(column.is_not(None), column != "")


def _sms(m: FromClause) -> ColumnElement[bool]:
    return and_(_present(m.c.phone), m.c.sms_opt_out.is_(false()))


def _ai_call(m: FromClause) -> ColumnElement[bool]:
    return and_(_present(m.c.phone), m.c.call_opt_out.is_(false()))


def _wecom(m: FromClause) -> ColumnElement[bool]:
    return and_(_present(m.c.wecom_external_userid), _present(m.c.wecom_staff_userid))


def _template(m: FromClause) -> ColumnElement[bool]:
    return and_(_present(m.c.oa_openid), m.c.oa_subscribed.is_(true()))


REACHABLE: dict[str, Callable[[FromClause], ColumnElement[bool]]] = {
    "sms": _sms,
    "ai_call": _ai_call,
    "wecom": _wecom,
    "template": _template,
}
assert tuple(REACHABLE) == CHANNEL_NAMES


def reachable(channel: str, members: FromClause) -> ColumnElement[bool]:
    """SQL: the member row in `members` can be reached on `channel`."""
    return REACHABLE[channel](members)
