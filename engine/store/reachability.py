"""Reachability as SQL: the grammar's per-channel rule (`engine.grammar.addresses.REACH`) rendered
on a `members` table or alias, for the compiler's audiences and the ledger's contact reads."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, FromClause, Label, and_, case, false, func, true

from engine.grammar.addresses import CHANNEL_NAMES, MOBILE_SHAPE, REACH, reach_column


def reachable(channel: str, members: FromClause) -> ColumnElement[bool]:
    """SQL: the member row in `members` can be reached on `channel`."""
    rule = REACH[channel]
    present = [and_(members.c[name].is_not(None), members.c[name] != "") for name in rule.address]
    flags = [members.c[name].is_(true() if value else false()) for name, value in rule.flags.items()]
    mobile = [mobile_shaped(members.c[name]) for name in rule.mobile]
    return and_(*present, *flags, *mobile)


def mobile_shaped(phone: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL: `phone` is a bare mainland mobile number (`MOBILE_SHAPE`), the same text on SQLite and PostgreSQL.

    Built from `length`, `substr` and equality only: no regular expression (SQLite has none built in)
    and no range comparison, whose order depends on PostgreSQL's collation (a glibc locale skips the
    '.' of '1.38001E+10'). Every phone the importer stores passes; only a stored phone migration 0006
    could not normalise fails, and its member is unreachable by sms and ai_call. Migration 0006
reads only the phones that fail it.
    """
    return and_(func.length(phone) == len(MOBILE_SHAPE),
                *[func.substr(phone, position, 1).in_(list(allowed)) if len(allowed) > 1
                  else func.substr(phone, position, 1) == allowed
                  for position, allowed in enumerate(MOBILE_SHAPE, start=1)])


def reach_columns(members: FromClause, channels: Iterable[str] = CHANNEL_NAMES) -> list[Label[int]]:
    """Per channel a column named `reach_column(channel)`: 1 if the member is reachable on it, else 0."""
    return [case((reachable(ch, members), 1), else_=0).label(reach_column(ch)) for ch in channels]
