"""Playbooks checked against the data: every value a playbook names must occur in the store.

A tag, category, sku, tier, city, platform, event type or `where` attribute that occurs nowhere
matches nobody. Inside `all:` or `any:` that only empties the audience (a warning); under an
odd number of `none:` groups, or compared with `ne` / `not_in`, it excludes nobody, so the
audience grows (an error: the do-not-disturb typo that touched 26 members who asked not to be).
`ne` under one `none:` negates twice and narrows again, so the two count together (their parity).

Also a warning for each playbook whose templates use `links[...]` while a platform that occurs
in the data has no `links` entry: those members' messages would fail to render.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from engine.errors import Problem
from engine.grammar.audience import Group, HadEvent, HasTag, LastPurchase, Member, Purchased, _Leaf
from engine.grammar.loader import LoadedPlaybook
from engine.grammar.templates import ENVIRONMENT, template_strings
from engine.store.catalogue import Catalogue, read_catalogue

NEGATING = ("ne", "not_in")
"""Comparisons that hold for every member without the value: an absent value selects everyone."""

_MEMBER_FIELDS = {"tier": "tiers", "city": "cities", "origin_platform": "platforms", "habitual_platform": "platforms"}
_PURCHASE_FIELDS = {"category": "categories", "sku": "skus", "platform": "platforms"}


@dataclass(frozen=True)
class _Named:
    """One data value a playbook names, where it is, and whether its absence widens the audience."""

    what: str  #: "tag", "category", "event type", …
    value: str
    known: Mapping[str, int]  #: the values that do occur, with member counts
    path: tuple[Any, ...]
    widens: bool
    key: bool = False  #: locate the mapping key (an attribute name) rather than a value
    sample_note: str = ""


def check_data(engine: Engine, loaded: Sequence[LoadedPlaybook], links: Mapping[str, str]) -> list[Problem]:
    """Every data value the playbooks name, checked against the database: located errors and warnings."""
    return compare(read_catalogue(engine), loaded, links)


def compare(catalogue: Catalogue, loaded: Sequence[LoadedPlaybook], links: Mapping[str, str]) -> list[Problem]:
    """The problems of `loaded` against `catalogue` (no database: the catalogue is given)."""
    problems: list[Problem] = []
    for item in loaded:
        file = str(item.path)
        for named in _named_values(item, catalogue):
            if named.value in named.known:
                continue
            line, col = item.source.locate(named.path, key=named.key) or (None, None)
            problems.append(Problem(file, line, col, _message(named),
                                    severity="error" if named.widens else "warning"))
        problems.extend(_missing_links(item, catalogue, links))
    return problems


def _message(named: _Named) -> str:
    message = f"{named.what} {named.value!r} occurs nowhere in the data{named.sample_note}"
    close = _closest(named.value, named.known)
    if close is not None:
        message += f"; did you mean {close!r} ({_members(named.known[close])})?"
    elif named.known:
        shown = ", ".join(f"{v!r} ({n:,})" for v, n in list(named.known.items())[:5])
        more = f", … ({len(named.known):,} in all)" if len(named.known) > 5 else ""
        message += f"; the data has {shown}{more}"
    else:
        message += f"; the data has no {named.what} at all"
    if named.widens:
        message += " (this condition excludes nobody, so the audience is wider than written)"
    return message


def _members(count: int) -> str:
    return f"{count:,} member" if count == 1 else f"{count:,} members"


def _closest(value: str, known: Mapping[str, int]) -> str | None:
    folded = {k.casefold(): k for k in known}
    if value.casefold() in folded:
        return folded[value.casefold()]
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    if close:
        return close[0]
    # 上海市 for 上海, gold_member for gold: one contains the other
    within = [k for k in known if k and (k in value or value in k)]
    return max(within, key=lambda k: known[k]) if within else None


def _named_values(item: LoadedPlaybook, catalogue: Catalogue) -> Iterator[_Named]:
    playbook = item.playbook
    if playbook.trigger.event is not None:
        events = {k: v.members for k, v in catalogue.events.items()}
        yield _Named("event type", playbook.trigger.event, events, ("trigger", "event"), widens=False)
    yield from _walk(playbook.audience, ("audience",), 0, catalogue)


def _walk(node: Group | _Leaf, path: tuple[Any, ...], nones: int, catalogue: Catalogue) -> Iterator[_Named]:
    if isinstance(node, Group):
        for kind, items in node.parts():
            for index, child in enumerate(items):
                yield from _walk(child, (*path, kind, index), nones + (kind == "none"), catalogue)
        return
    at = (*path, node.kind)
    negated = nones % 2 == 1
    if isinstance(node, HasTag):
        yield _Named("tag", node.tag, catalogue.tags, at, negated)
    elif isinstance(node, Purchased | LastPurchase):
        for name, kind in _PURCHASE_FIELDS.items():
            value = getattr(node.arg, name)
            if value is not None:
                yield _Named(name, value, getattr(catalogue, kind), (*at, name), negated)
    elif isinstance(node, Member):
        yield from _member(node, at, negated, catalogue)
    elif isinstance(node, HadEvent):
        yield from _event(node, at, negated, catalogue)


def _member(node: Member, at: tuple[Any, ...], negated: bool, catalogue: Catalogue) -> Iterator[_Named]:
    for name, comparison in node.member.fields():
        if name not in _MEMBER_FIELDS:
            continue
        known = getattr(catalogue, _MEMBER_FIELDS[name])
        what = "platform" if name.endswith("platform") else name
        for op, value in comparison.operators():
            widens = negated != (op in NEGATING)
            if op in ("eq", "ne"):  # gt/lt/between on text compare ranges, not members of a set
                yield _Named(what, value, known, (*at, name, op), widens)
            elif op in ("in", "not_in"):
                for i, one in enumerate(value):
                    yield _Named(what, one, known, (*at, name, op, i), widens)


def _event(node: HadEvent, at: tuple[Any, ...], negated: bool, catalogue: Catalogue) -> Iterator[_Named]:
    f = node.event
    types = {k: v.members for k, v in catalogue.events.items()}
    yield _Named("event type", f.type, types, (*at, "type"), negated)
    found = catalogue.events.get(f.type)
    if found is None or not f.where:
        return
    note = " (in its latest events)" if found.sampled else ""
    names = {k: sum(v.values()) for k, v in found.attributes.items()}
    for key, value in f.where.items():
        where = (*at, "where", key)
        yield _Named(f"event {f.type!r} attribute", key, names, where, negated, key=True, sample_note=note)
        if key in found.attributes:
            yield _Named(f"event {f.type!r} attribute {key!r} value", value, found.attributes[key], where, negated,
                         sample_note=note)


def _uses_links(text: str) -> bool:
    from jinja2 import meta

    try:
        return "links" in meta.find_undeclared_variables(ENVIRONMENT.parse(text))
    except Exception:  # noqa: BLE001 - the loader already reported a broken template
        return False


def _missing_links(item: LoadedPlaybook, catalogue: Catalogue, links: Mapping[str, str]) -> list[Problem]:
    missing = [p for p in catalogue.platforms if p not in links]
    if not missing:
        return []
    for path, text in template_strings(item.playbook):
        if _uses_links(text):
            line, col = item.source.locate(path) or (None, None)
            shown = ", ".join(f"{p!r} ({_members(catalogue.platforms[p])})" for p in missing)
            return [Problem(str(item.path), line, col,
                            f"this template uses links[...] but the config has no links entry for "
                            f"{shown}: their messages fail to render (render_error)", severity="warning")]
    return []
