"""Property tests: whatever text or bytes a playbook file holds, the loader never crashes.

`load_text` either returns a Playbook or raises `PlaybookError` whose every problem names
the file, and carries a line (within the text) whenever the text is one well-formed YAML
document. Inputs: random YAML-ish text, random bytes, and mutations of a valid playbook
(keys dropped, renamed or added, values replaced, text truncated or spliced).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import PlaybookError
from engine.grammar.loader import load_file, load_text
from engine.grammar.playbook import Playbook

FILE = "fuzz/playbook.yaml"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = """\
id: pet-milk-refill
name: 宠物奶粉复购
timezone: Asia/Shanghai
trigger: {schedule: "0 10 * * *"}
audience:
  all:
    - last_purchase: {category: pet_milk, days_ago: 21}
    - member: {tier: {in: [silver, gold]}}
  any: [{tag: vip}, {event: {type: fair_visit, between_days: [1, 7], where: {fair: gz}}}]
  none: [{reachable: [wecom, sms]}]
offer:
  by: avg_order_value
  tiers: [{min: 200, coupon: {threshold: 250, discount: 50, valid_days: 7}}]
channels:
  - wecom: {text: "{{ member.nickname }}满{{ offer.coupon.threshold }}"}
  - sms: {template_code: SMS_1, params: {d: "{{ offer.coupon.discount }}"}}
limits: {cooldown_days: 28, max_per_run: 5000}
holdout: 10
"""
VALID_DATA: dict[str, Any] = yaml.safe_load(VALID)

KNOWN_KEYS = sorted({
    "id", "name", "enabled", "timezone", "priority", "trigger", "schedule", "event", "delay", "audience",
    "all", "any", "none", "purchased", "last_purchase", "order_count", "total_spend", "avg_order_value",
    "member", "tag", "coupon_expiring", "points_expiring", "reachable", "triggering_order", "category", "sku",
    "platform", "trial", "days_ago", "within_days", "between_days", "eq", "ne", "gt", "gte", "lt", "lte", "in",
    "not_in", "between", "tier", "points", "city", "type", "where", "paid", "min_points", "offer", "by",
    "tiers", "min", "coupon", "threshold", "discount", "valid_days", "channels", "sms", "wecom", "template",
    "ai_call", "text", "template_code", "params", "template_id", "url", "data", "scenario", "variables",
    "limits", "cooldown_days", "max_per_run", "holdout",
})
YAML_PIECES = [
    ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "#", "&a ", "*a", "!!str ", "!!int ", "!!float ", "!!map ",
    "!!seq ", "!tag ", "|", ">", "'", '"', "%YAML 1.1\n", "---\n", "...\n", "? ", "<<: ", "\n", "\n  ", "\n    ",
    "\t", " ", "~", "null", "true", "no", "0x1F", "012345", "1e3", ".inf", ".nan", "2026-11-22", "10:00",
    '"{{ member.nickname }}"', "'{% if %}'", "{{", "}}", "0 10 * * *", "30m", "宠物", "\ufeff", "\x85", "\u2028",
]

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["0 10 * * *", "30m", "{{ member.nickname }}", "{{ x",
                                                   "wecom", "sms", "012345", "Asia/Shanghai", "-1", ""]))
keys = st.sampled_from(KNOWN_KEYS) | st.text(min_size=1, max_size=10)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=6)
yamlish = st.lists(st.sampled_from(YAML_PIECES) | st.sampled_from(KNOWN_KEYS) | st.text(max_size=5),
                   max_size=40).map("".join)


LINE_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")  # what YAML counts as line breaks


def _one_document(text: str) -> bool:
    """Whether `text` is exactly one well-formed, non-empty YAML document."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, LookupError, ArithmeticError, RecursionError):
        return False  # PyYAML itself fails in all these ways on hostile input
    return len(documents) == 1


def check(text: str) -> None:
    """The loader's contract on any text: a Playbook, or located problems."""
    try:
        playbook, _ = load_text(text, FILE)
    except PlaybookError as exc:
        assert exc.problems
        parsed = _one_document(text)
        last_line = sum(text.count(brk) for brk in LINE_BREAKS) + 1
        for problem in exc.problems:
            assert problem.file == FILE
            assert problem.message and "Traceback" not in problem.message
            if parsed:
                assert problem.line is not None, str(problem)
            if problem.line is not None:
                assert 1 <= problem.line <= last_line, str(problem)
            if problem.column is not None:
                assert problem.column >= 1, str(problem)
    else:
        assert isinstance(playbook, Playbook)


def dump(data: Any) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, allow_unicode=True, sort_keys=False)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into nested dicts and lists (the root excluded)."""
    found = []
    if isinstance(data, dict):
        items: list[tuple[Any, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def parent_of(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def test_valid__loads() -> None:
    """The document every mutation starts from is itself valid."""
    check(VALID)
    assert load_text(VALID, FILE)[0].id == "pet-milk-refill"


@FUZZ
@given(yamlish)
@example("- [unclosed\n")
def test_random_yamlish_text__never_crashes(text: str) -> None:
    """Random YAML-looking text loads or gives located problems."""
    check(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text__never_crashes(text: str) -> None:
    """Arbitrary Unicode text loads or gives located problems."""
    check(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.binary(max_size=300) | st.tuples(st.integers(0, len(VALID.encode())), st.binary(max_size=40)).map(
    lambda cut: VALID.encode()[:cut[0]] + cut[1] + VALID.encode()[cut[0]:]))
def test_random_bytes__never_crash(scratch: Path, raw: bytes) -> None:
    """Whatever bytes a file holds, load_file gives a Playbook or problems naming the file."""
    path = scratch / "bytes.yaml"
    path.write_bytes(raw)
    try:
        load_file(path)
    except PlaybookError as exc:
        assert exc.problems
        assert all(problem.file == str(path) for problem in exc.problems)


@FUZZ
@given(st.data())
def test_mutation__drop_a_key(data: st.DataObject) -> None:
    """A valid playbook with any one key (at any depth) removed."""
    doc = copy.deepcopy(VALID_DATA)
    path = data.draw(st.sampled_from(paths(doc)))
    del parent_of(doc, path)[path[-1]]
    check(dump(doc))


@FUZZ
@given(st.data(), keys)
def test_mutation__rename_a_key(data: st.DataObject, new_key: str) -> None:
    """A valid playbook with one mapping key renamed (often to another grammar key)."""
    doc = copy.deepcopy(VALID_DATA)
    path = data.draw(st.sampled_from([p for p in paths(doc) if isinstance(parent_of(doc, p), dict)]))
    parent = parent_of(doc, path)
    value = parent.pop(path[-1])
    parent[new_key] = value
    check(dump(doc))


@FUZZ
@given(st.data(), values)
def test_mutation__replace_a_value(data: st.DataObject, value: Any) -> None:
    """A valid playbook with one value (at any depth) replaced by a random scalar, list or mapping."""
    doc = copy.deepcopy(VALID_DATA)
    path = data.draw(st.sampled_from(paths(doc)))
    parent_of(doc, path)[path[-1]] = value
    check(dump(doc))


@FUZZ
@given(st.data(), st.dictionaries(keys, values, min_size=1, max_size=3))
def test_mutation__insert_keys(data: st.DataObject, extra: dict[str, Any]) -> None:
    """A valid playbook with random keys added to one of its mappings."""
    doc = copy.deepcopy(VALID_DATA)
    mappings = [()] + [p for p in paths(doc) if isinstance(parent_of(doc, (*p, None)), dict)]
    path = data.draw(st.sampled_from(mappings))
    target = parent_of(doc, (*path, None))
    target.update(extra)
    check(dump(doc))


@FUZZ
@given(st.integers(0, len(VALID)))
def test_mutation__truncate(cut: int) -> None:
    """A valid playbook cut off at any character."""
    check(VALID[:cut])


@FUZZ
@given(st.integers(0, len(VALID)), st.integers(0, 20), yamlish)
def test_mutation__splice_text(start: int, length: int, insert: str) -> None:
    """A valid playbook with a random stretch replaced by random YAML-ish text."""
    check(VALID[:start] + insert + VALID[start + length:])


@FUZZ
@given(st.data())
def test_mutation__drop_or_duplicate_a_line(data: st.DataObject) -> None:
    """A valid playbook with one line removed or repeated (duplicate keys, broken indentation)."""
    lines = VALID.splitlines(keepends=True)
    index = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        del lines[index]
    else:
        lines.insert(index, lines[index])
    check("".join(lines))


# Inputs that crashed an earlier loader, or still do: each must give problems, never an exception.
HARD_INPUTS = {
    "int tag on text": "id: !!int abc\n",
    "float tag on text": "id: !!float abc\n",
    "timestamp tag on text": "id: !!timestamp bogus\n",
    "int tag on nothing": "!!int \n",
    "float tag on nothing": "!!float \n",
    "timezone naming a zoneinfo folder": "timezone: Asia\n",
    "recursive alias in a list": "id: &a [*a]\n",
    "recursive alias in a mapping": "audience: &a {all: [*a]}\n",
    "integer of 5000 digits": "priority: " + "9" * 5000 + "\n",
    "nesting 2000 deep": "audience: " + "[" * 2000 + "]" * 2000 + "\n",
    "unknown tag": "id: !foo x\n",
    "python tag": "id: !!python/object:os.system x\n",
    "bad merge key": "<<: 3\n",
    "null key": "null: 1\n",
    "set at top": "!!set {a, b}\n",
}


@pytest.mark.parametrize("text", list(HARD_INPUTS.values()), ids=list(HARD_INPUTS))
def test_hard_inputs__give_problems_not_exceptions(text: str) -> None:
    """Tags with unconvertible values, recursive aliases, huge numbers and deep nesting are problems too."""
    with pytest.raises(PlaybookError) as info:
        load_text(text, FILE)
    assert all(problem.file == FILE for problem in info.value.problems)


@pytest.mark.parametrize("text", ["id: !foo x\n", "id: !!python/object:os.system x\n", "<<: 3\n"])
def test_construction_errors__are_located(text: str) -> None:
    """A tag YAML cannot construct is reported at its line and column, in one line without YAML's dump."""
    with pytest.raises(PlaybookError) as info:
        load_text(text, FILE)
    (problem,) = info.value.problems
    assert problem.line == 1 and problem.column is not None
    assert "\n" not in problem.message
