"""YAML is bounded before it is composed (issue 15): a deep list, an alias or merge-key bomb and a huge
file are refused by `check` and the config loader with a located message, at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError, PlaybookError
from engine.grammar.yamlsource import parse_yaml

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
MERGES = "a: &a {x: 1, y: 2}\n" + "".join(
    f"k{i}: &k{i}\n  <<: [*{'a' if i == 0 else f'k{i - 1}'}, *{'a' if i == 0 else f'k{i - 1}'}]\n  z{i}: 1\n"
    for i in range(40))
BOMBS = {
    "a flow list 30,000 deep": ("[" * 30_000 + "]" * 30_000, "1:51: nested more than 50 levels deep"),
    "billion laughs": (LAUGHS, "more than 10,000 values (aliases expanded)"),
    "merge-key bomb": (MERGES, "more than 10,000 values (aliases expanded)"),
    "101 aliases": ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n", "2:"),
    "2 MB": ("a: " + "x" * 2_000_000, "file too large (2,000,003 bytes; at most 1,048,576)"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb__is_refused_with_a_located_message(name: str) -> None:
    text, expected = BOMBS[name]
    with pytest.raises(PlaybookError) as raised:
        parse_yaml(text, "bomb.yaml", PlaybookError)
    [problem] = raised.value.problems
    assert expected in str(problem) and str(problem).startswith("bomb.yaml")


def test_bomb__in_the_config_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(LAUGHS, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert "more than 10,000 values" in str(raised.value.problems[0])


def test_ordinary_aliases_and_merge_keys__still_read() -> None:
    value, _ = parse_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\nlist: [*b, *b]\n", "ok.yaml", PlaybookError)
    assert value["other"] == {"x": 1, "y": 2} and value["list"] == [{"x": 1}, {"x": 1}]
