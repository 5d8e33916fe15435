"""Loading playbooks: YAML text → `Playbook` models, with every problem located at file:line:col.

The YAML is composed into nodes first so each key and value keeps its position; pydantic
errors are then mapped back to those positions. Nothing here raises anything but
`PlaybookError` (a list of located problems), whatever bytes a file holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from engine.errors import PlaybookError, Problem
from engine.grammar.playbook import Playbook
from engine.grammar.yamlsource import SourceMap, parse_yaml, validation_problems


@dataclass(frozen=True)
class LoadedPlaybook:
    """A validated playbook, the file it came from, and its source positions."""

    playbook: Playbook
    path: Path
    source: SourceMap


def load_text(text: str, file: str) -> tuple[Playbook, SourceMap]:
    """Validate one playbook's YAML text; PlaybookError with every located problem."""
    data, source = parse_yaml(text, file, PlaybookError)
    if not isinstance(data, dict):
        line, col = source.values.get((), (None, None))
        raise PlaybookError([Problem(file, line, col, "a playbook is a mapping of keys such as id, name, "
                                                      "trigger, audience, channels")])
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookError(validation_problems(exc, data, source, file)) from None
    from engine.grammar.templates import check_playbook_templates

    problems = check_playbook_templates(playbook, source, file)
    if problems:
        raise PlaybookError(problems)
    return playbook, source


def read_text(path: Path) -> str:
    """A file's text as UTF-8; PlaybookError for unreadable or binary files."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlaybookError([Problem(file, None, None, f"cannot read: {exc.strerror or exc}")]) from None
    if b"\x00" in raw:
        raise PlaybookError([Problem(file, None, None, "not a text file (binary content): a playbook is YAML")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PlaybookError([Problem(file, line, None, "not UTF-8 text: save the playbook as UTF-8")]) from None


def load_file(path: Path) -> LoadedPlaybook:
    text = read_text(path)
    playbook, source = load_text(text, str(path))
    return LoadedPlaybook(playbook, path, source)


def playbook_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named or inside the directories named (sorted); PlaybookError for missing paths."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, None, "no such file or directory"))
    if problems:
        raise PlaybookError(problems)
    return files


def load_playbooks(paths: Iterable[Path]) -> list[LoadedPlaybook]:
    """Load every playbook under `paths`: all problems of all files at once, duplicate ids across files."""
    problems: list[Problem] = []
    loaded: list[LoadedPlaybook] = []
    for path in playbook_files(paths):
        try:
            loaded.append(load_file(path))
        except PlaybookError as exc:
            problems.extend(exc.problems)
    first: dict[str, LoadedPlaybook] = {}
    for item in loaded:
        other = first.setdefault(item.playbook.id, item)
        if other is not item:
            line, col = item.source.locate(("id",)) or (None, None)
            problems.append(Problem(str(item.path), line, col,
                                    f"duplicate playbook id {item.playbook.id!r} (also in {other.path})"))
    if problems:
        raise PlaybookError(problems)
    return loaded
