"""YAML with positions: values plus where each key and value sits, and pydantic errors mapped back.

Used for playbooks and for the config file, so both report `file:line:col: message`. A message
quotes at most QUOTE_LIMIT characters of the text at fault (engine.errors.quote), and never the
value of a path the caller hides (the config's secrets and the values it took from the environment).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from engine.errors import QUOTE_LIMIT, Problem, ProblemsError, quote
from engine.grammar.audience import GROUP_KEYS, LEAF_MODELS
from engine.grammar.values import did_you_mean

PathKey = tuple[Any, ...]
Position = tuple[int, int]


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a YAML document sits, by path."""

    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)
    texts: dict[PathKey, str] = field(default_factory=dict)

    def locate(self, path: PathKey, key: bool = False) -> Position | None:
        table = self.keys if key else self.values
        while path:
            if path in table:
                return table[path]
            if key and path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), None)


def _mark(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


MAX_DEPTH = 50
"""Deeper nesting than this is refused: no playbook or config needs it."""
MAX_BYTES = 1_048_576
"""A playbook or config file larger than this is refused before it is parsed."""
MAX_ALIASES = 100
"""More aliases (`*name`, merge keys included) than this are refused."""
MAX_NODES = 10_000
"""More values than this, counted with every alias expanded, are refused (alias and merge-key bombs)."""


class _Builder:
    """Turns a composed YAML node tree into Python values and a SourceMap.

    Every construction problem (a bad tag, a recursive alias, a number too long) becomes a
    located Problem; nothing escapes as an exception.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.loader = yaml.SafeLoader("")
        self.source = SourceMap()
        self.problems: list[Problem] = []
        self._open: set[int] = set()

    def _problem(self, node: yaml.Node, message: str) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(self.file, line, col, message))

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self._problem(node, f"malformed YAML: {_cut_quotes(exc.problem or exc.context or 'cannot read this value')}")
        except Exception as exc:  # noqa: BLE001 - PyYAML's constructors fail in many ways on tagged input
            self._problem(node, f"cannot read this value ({quote(node.tag)}): {quote(str(exc) or type(exc).__name__)}")
        return None

    def build(self, node: yaml.Node, path: PathKey = ()) -> Any:
        if id(node) in self._open:
            self._problem(node, "recursive alias: an anchor may not contain itself")
            return None
        if len(path) > MAX_DEPTH:
            self._problem(node, f"nested more than {MAX_DEPTH} levels deep")
            return None
        self.source.values[path] = _mark(node)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.ScalarNode):
                self.source.texts[path] = node.value
            return self._scalar(node)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[Any, Any]:
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self._problem(node, f"malformed YAML: {_cut_quotes(exc.problem or 'bad merge key (<<)')}")
            return {}
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, "a key must be plain text")
                continue
            key = self._scalar(key_node)
            if not isinstance(key, str | int | float | bool) and key is not None:
                self._problem(key_node, "a key must be plain text")
                continue
            if key in out:
                self._problem(key_node, f"duplicate key {quote(key)}")
                continue
            self.source.keys[(*path, key)] = _mark(key_node)
            out[key] = self.build(value_node, (*path, key))
        return out


_LONG_QUOTE = re.compile(rf"'([^'\n]{{{QUOTE_LIMIT + 1},}})'")


def _cut_quotes(detail: str) -> str:
    """PyYAML's own words, with what they quote of the document (an alias, a tag) cut as `quote` cuts."""
    return _LONG_QUOTE.sub(lambda m: quote(m.group(1)), detail)


COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (about 15× faster, same nodes and marks), else PyYAML's own."""


def _bounds_problem(text: str, file: str) -> Problem | None:
    """The first bound `text` breaks, found in one pass over the parser's events before anything is
    composed (composing a 30,000-deep list crashes PyYAML; expanding an alias bomb exhausts memory)."""
    anchors: dict[str, int] = {}  #: anchor → how many values it stands for, expanded
    sizes: list[int] = []  #: per open collection: its values so far, expanded (itself included)
    names: list[str | None] = []  #: per open collection: its anchor
    total = aliases = 0
    for event in yaml.parse(text, Loader=COMPOSER):
        mark = event.start_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        if isinstance(event, yaml.CollectionEndEvent):
            size, name = sizes.pop(), names.pop()
            if name is not None:
                anchors[name] = size
            if sizes:
                sizes[-1] += size
            continue
        if isinstance(event, yaml.CollectionStartEvent):
            if len(sizes) >= MAX_DEPTH:
                return Problem(file, line, col, f"nested more than {MAX_DEPTH} levels deep")
            sizes.append(1)
            names.append(event.anchor)
            total += 1
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            count = 1
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    return Problem(file, line, col, f"more than {MAX_ALIASES} aliases")
                count = anchors.get(event.anchor or "", 1)
            elif event.anchor is not None:
                anchors[event.anchor] = 1
            total += count
            if sizes:
                sizes[-1] += count
        if total > MAX_NODES:
            return Problem(file, line, col, f"more than {MAX_NODES:,} values (aliases expanded)")
    return None


def parse_yaml(text: str, file: str, error: type[ProblemsError], what: str = "playbook") -> tuple[Any, SourceMap]:
    """Parse one YAML document; `error` (located problems) for anything malformed, too large, too
    deep or expanding to too many values (`_bounds_problem`)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise error([Problem(file, None, None, f"file too large ({size:,} bytes; at most {MAX_BYTES:,})")])
    try:
        problem = _bounds_problem(text, file)
    except yaml.YAMLError:
        problem = None  # malformed: composing below says where
    if problem is not None:
        raise error([problem])
    try:
        documents = list(yaml.compose_all(text, Loader=COMPOSER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        lines = text.splitlines() or [""]
        line: int | None
        col: int | None
        if mark is not None and mark.line >= len(lines):  # the end of input: where the open construct began
            mark = exc.context_mark if exc.context_mark is not None and exc.context_mark.line < len(lines) else None
            line, col = (mark.line + 1, mark.column + 1) if mark else (len(lines), len(lines[-1]) + 1)
        else:
            line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        detail = _cut_quotes(exc.problem or exc.context or "malformed YAML")
        raise error([Problem(file, line, col, f"malformed YAML: {detail}")]) from None
    except yaml.YAMLError as exc:
        raise error([Problem(file, None, None, f"malformed YAML: {_cut_quotes(str(exc))}")]) from None
    except RecursionError:
        raise error([Problem(file, None, None, "malformed YAML: nested too deeply")]) from None
    documents = [d for d in documents if d is not None]
    if not documents:
        raise error([Problem(file, 1, None, f"empty {what}")])
    if len(documents) > 1:
        line, col = _mark(documents[1])
        raise error([Problem(file, line, col, f"one {what} per file (found a second YAML document)")])
    builder = _Builder(file)
    try:
        value = builder.build(documents[0])
    except RecursionError:
        raise error([Problem(file, None, None, "malformed YAML: nested too deeply")]) from None
    if builder.problems:
        raise error(builder.problems)
    return value, builder.source


def _data_path(data: Any, loc: Sequence[Any]) -> PathKey:
    """Keep the parts of a pydantic `loc` that exist in the data (drop union tags)."""
    path: list[Any] = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current or isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path.append(part)
    return tuple(path)


def _describe(value: Any, source_text: str | None) -> str:
    if isinstance(value, bool):
        return f"a yes/no value ({source_text or value})"
    if isinstance(value, int | float):
        return f"a number ({source_text or value})"
    return type(value).__name__


def _message(error: Any, data: Any, path: PathKey, source: SourceMap) -> tuple[str, bool]:
    """(message, whether it is about a key) for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "unknown_key":
        return error["msg"], True
    if kind == "unknown_condition":
        value = error.get("input")
        names = [*GROUP_KEYS, *LEAF_MODELS]
        if isinstance(value, dict) and len(value) == 1:
            (key,) = value
            return (f"unknown condition {quote(key)}{did_you_mean(str(key), names)}; expected one of: "
                    f"{', '.join(names)}"), True
        if isinstance(value, dict) and len(value) > 1:
            shown = ", ".join(quote(k) for k in list(value)[:5]) + (", …" if len(value) > 5 else "")
            return (f"one condition per list item, found {len(value)}: {shown} "
                    "(write each as its own `- ` item)"), False
        return f"expected a condition such as `- tag: vip`, got {_describe(value, None)}", False
    if kind in ("string_type", "string_sub_type"):
        value = error.get("input")
        text = source.texts.get(path)
        if isinstance(value, int | float | bool):
            return f"expected text, got {_describe(value, text)}: quote it, e.g. \"{quote(text or value)[1:-1]}\"", False
        return f"expected text, got {_describe(value, text)}", False
    if kind == "string_pattern_mismatch" and path == ("id",):
        return ("a playbook id is lowercase letters, digits and '-', starting with a letter or digit "
                "(e.g. pet-milk-refill)"), False
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}", False
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {quote(ctx.get('tag'))}; expected one of: {expected}", False
    if kind == "union_tag_not_found":
        return f"missing {str(ctx.get('discriminator', 'kind')).strip(chr(39))!r}", False
    if kind == "literal_error" and ctx.get("expected"):
        value = error.get("input")
        options = [o.strip(" '") for o in str(ctx["expected"]).replace(" or ", ",").split(",")]
        return f"{quote(value)} is not one of: {', '.join(options)}{did_you_mean(str(value), options)}", False
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message, False


def _cut_input(message: str, value: Any) -> str:
    """A validator's message with its quote of a long input text cut as `quote` cuts it."""
    if isinstance(value, str) and len(value) > QUOTE_LIMIT:
        message = message.replace(repr(value), quote(value)).replace(value, quote(value)[1:-1])
    return message


def _hidden_message(error: Any) -> str:
    """The message of an error about a value that must not be shown: pydantic's own words (which never
    quote the input), with any quote of the input by a validator masked."""
    value = error.get("input")
    if error["type"] in ("string_type", "string_sub_type"):
        got = "a yes/no value" if isinstance(value, bool) else "a number" if isinstance(value, int | float) \
            else type(value).__name__
        return f"expected text, got {got} (the value is not shown)"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if isinstance(value, str) and value:
        message = message.replace(repr(value), "'****'")
        if len(value) >= 4:  # shorter: not worth garbling the message over
            message = message.replace(value, "****")
    return f"{message} (the value is not shown)"


def _hidden_values(data: Any, hidden: Collection[PathKey]) -> list[str]:
    """The texts at the `hidden` paths of `data` that a message could quote (4 characters or more)."""
    values = []
    for path in hidden:
        value = data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(value, str) and len(value) >= 4:
                values.append(value)
    return sorted(values, key=len, reverse=True)


def _shown(message: str, error: Any, path: PathKey, hidden: Collection[PathKey], secrets: list[str]) -> str:
    """`message` as it may be shown: pydantic's own words about a value at (or under) a `hidden` path,
    no hidden value anywhere, a long input cut."""
    if any(path[:len(h)] == h for h in hidden):
        message = _hidden_message(error)
    for secret in secrets:  # a discriminator's value is quoted by the error of its mapping, for one
        message = message.replace(secret, "****")
    return _cut_input(message, error.get("input"))


def validation_problems(exc: ValidationError, data: Any, source: SourceMap, file: str,
                        hidden: Collection[PathKey] = ()) -> list[Problem]:
    """One located problem per pydantic error (a misspelt key once, not also as a missing one). No
    message shows the value at a `hidden` path (nor under it), wherever the error is located."""
    secrets = _hidden_values(data, hidden)
    problems: list[Problem] = []
    seen: set[tuple[Any, ...]] = set()
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the key it was meant to be "missing": report the typo only.
    meant: set[PathKey] = set()
    for error in errors:
        ctx = error.get("ctx") or {}
        if error["type"] == "unknown_key" and "keys" in ctx:
            path = _data_path(data, error["loc"])
            allowed = str(ctx["allowed"]).split(", ")
            for key in ctx["keys"]:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                if close:
                    meant.add((*path, close[0]))
    for error in errors:
        path = _data_path(data, error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "missing" and (*path, error["loc"][-1]) in meant:
            continue
        if error["type"] == "unknown_key" and "keys" in ctx:
            allowed = str(ctx["allowed"]).split(", ")
            for key in ctx["keys"]:
                hint = did_you_mean(key, allowed) if isinstance(key, str) else ""
                line, col = source.locate((*path, key), key=True) or (None, None)
                problems.append(Problem(file, line, col,
                                        f"unknown key {quote(key)}{hint}; expected one of: {ctx['allowed']}"))
            continue
        message, about_key = _message(error, data, path, source)
        message = _shown(message, error, path, hidden, secrets)
        about_key = about_key or error["loc"][-1:] == ("[key]",)
        if isinstance(ctx.get("at"), tuple):
            path, about_key = (*path, *ctx["at"]), True
        elif error["type"] == "unknown_key" and "key" in ctx:
            path = (*path, ctx["key"])
        elif error["type"] == "unknown_condition" and isinstance(error.get("input"), dict) \
                and len(error["input"]) == 1:
            path = (*path, next(iter(error["input"])))
        position = source.locate(path, key=about_key) or (None, None)
        key = (position, message)
        if key in seen:
            continue
        seen.add(key)
        problems.append(Problem(file, position[0], position[1], message))
    return problems


