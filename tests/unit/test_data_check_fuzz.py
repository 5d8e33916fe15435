"""Property tests: `siyu check --db` never crashes on a playbook the loader accepts.

The comparison runs against a fixed catalogue (what the store's queries return), so no database is
needed: random audience trees of every value-naming leaf, and the loader fuzz's mutations of a
valid playbook. Every finding names the file and a line inside it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_loader_fuzz import FILE, FUZZ, VALID_DATA, dump, parent_of, paths, values

from engine.decide.data_check import compare
from engine.errors import PlaybookError
from engine.grammar.loader import LoadedPlaybook, load_text
from engine.store.catalogue import Catalogue, EventType

CATALOGUES = [
    Catalogue(tags={}, categories={}, skus={}, tiers={}, cities={}, platforms={}, events={}),
    Catalogue(tags={"vip": 9, "do_not_disturb": 3}, categories={"pet_milk": 5}, skus={"milk-400g": 5},
              tiers={"gold": 3, "silver": 1}, cities={"上海": 3}, platforms={"tmall": 4, "jd": 1},
              events={"fair_visit": EventType(2, {"fair": {"gz": 2}, "paid": {"true": 1}}, sampled=True),
                      "order_created": EventType(1, {})}),
]

words = st.sampled_from(["vip", "do-not-disturb", "gold", "金卡", "上海市", "tmall", "fair_visit", "fair", "gz",
                         "", " ", "'", "{{", "%s"]) | st.text(min_size=1, max_size=8)
ops = st.sampled_from(["eq", "ne", "in", "not_in", "gt", "between"])


def _comparison(op: str, word: str) -> Any:
    if op in ("in", "not_in"):
        return {op: [word, "gold"]}
    if op == "between":
        return {op: sorted([word, "gold"])}
    return {op: word}


leaves = st.one_of(
    st.builds(lambda w: {"tag": w}, words),
    st.builds(lambda f, op, w: {"member": {f: _comparison(op, w)}},
              st.sampled_from(["tier", "city", "origin_platform", "habitual_platform"]), ops, words),
    st.builds(lambda k, w: {"purchased": {k: w}}, st.sampled_from(["category", "sku", "platform"]), words),
    st.builds(lambda w: {"last_purchase": {"category": w, "within_days": 30}}, words),
    st.builds(lambda t, where: {"event": {"type": t, "where": where} if where else {"type": t}},
              words, st.dictionaries(words, words, max_size=2)),
    st.just({"reachable": "sms"}),
)
trees = st.recursive(
    leaves,
    lambda inner: st.builds(lambda kind, items: {kind: items}, st.sampled_from(["all", "any", "none"]),
                            st.lists(inner, min_size=1, max_size=3)),
    max_leaves=8,
)


def check(text: str, catalogue: Catalogue) -> None:
    try:
        playbook, source = load_text(text, FILE)
    except PlaybookError:
        return  # the loader refused it: check --db never sees it
    for problem in compare(catalogue, [LoadedPlaybook(playbook, Path(FILE), source)], {"tmall": "t"}):
        assert problem.file == FILE
        assert problem.line is not None and 1 <= problem.line <= text.count("\n") + 1, str(problem)
        assert problem.severity in ("error", "warning")
        assert problem.message


@FUZZ
@given(st.lists(trees, min_size=1, max_size=3), st.sampled_from(CATALOGUES))
def test_check_db__any_audience_tree_gives_located_findings(tree: list[Any], catalogue: Catalogue) -> None:
    """Any audience of tags, member fields, purchases and events: located findings, never a crash."""
    doc = copy.deepcopy(VALID_DATA)
    doc["audience"] = {"all": tree}
    check(dump(doc), catalogue)


@FUZZ
@given(st.data(), values, st.sampled_from(CATALOGUES))
def test_check_db__mutated_playbooks_never_crash(data: st.DataObject, value: Any, catalogue: Catalogue) -> None:
    """The loader fuzz's valid playbook with one value replaced: if it loads, the data check runs."""
    doc = copy.deepcopy(VALID_DATA)
    path = data.draw(st.sampled_from(paths(doc)))
    parent_of(doc, path)[path[-1]] = value
    check(dump(doc), catalogue)


def test_check_db__valid_playbook_against_its_own_data_is_clean() -> None:
    """The fuzz's starting playbook names only values the second catalogue holds: no findings at all."""
    catalogue = CATALOGUES[1]
    playbook, source = load_text(dump(VALID_DATA), FILE)
    assert compare(catalogue, [LoadedPlaybook(playbook, Path(FILE), source)], {"tmall": "t", "jd": "j"}) == []
