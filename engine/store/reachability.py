"""Reachability as SQL: the grammar's per-channel rule (`engine.grammar.addresses.REACH`) rendered
on a `members` table or alias, for the compiler's audiences and the ledger's contact reads."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, FromClause, Label, and_, case, false, true

from engine.grammar.addresses import CHANNEL_NAMES, REACH, reach_column


def reachable(channel: str, members: FromClause) -> ColumnElement[bool]:
    """SQL: the member row in `members` can be reached on `channel`."""
    rule = REACH[channel]
    present = [and_(members.c[name].is_not(None), members.c[name] != "") for name in rule.address]
    flags = [members.c[name].is_(true() if value else false()) for name, value in rule.flags.items()]
    return and_(*present, *flags)


def reach_columns(members: FromClause, channels: Iterable[str] = CHANNEL_NAMES) -> list[Label[int]]:
    """Per channel a column named `reach_column(channel)`: 1 if the member is reachable on it, else 0."""
    return [case((reachable(ch, members), 1), else_=0).label(reach_column(ch)) for ch in channels]
