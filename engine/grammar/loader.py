"""Loading playbooks: YAML text → `Playbook` models, with every problem located at file:line:col.

The YAML is composed into nodes first so each key and value keeps its position; pydantic
errors are then mapped back to those positions. Nothing here raises anything but
`PlaybookError` (a list of located problems), whatever bytes a file holds.

Only regular files are read (playbooks and the config alike): a FIFO, a device or a directory
given as a file is a located error, never a read that blocks or never ends. Inside a playbook
directory symbolic links are not followed: they are skipped, and `skipped_links` says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from engine.errors import PlaybookError, Problem, quote
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


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_text(path: Path) -> str:
    """A regular file's text as UTF-8; PlaybookError for anything else (a directory, a FIFO, a device)
    and for unreadable or binary files. The kind of file is read from the file opened, not from its
    name beforehand, so it cannot change in between."""
    file = str(path)
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused just after)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise PlaybookError([Problem(file, None, None, f"cannot read: {exc.strerror or exc}")]) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
        raise PlaybookError([Problem(file, None, None, f"{kind}, not a regular file: only regular files are read")])
    with os.fdopen(fd, "rb") as handle:
        try:
            raw = handle.read()
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


def _yaml_entries(directory: Path) -> tuple[list[Path], list[Path]]:
    """(the YAML files in `directory`, the symbolic links among its YAML names), each sorted."""
    files, links = [], []
    for entry in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        if entry.is_symlink():
            links.append(entry)
        elif entry.is_file():
            files.append(entry)
    return files, links


def skipped_links(paths: Iterable[Path]) -> list[Problem]:
    """A warning for each symbolic link among the YAML files of the directories named: `load_playbooks`
    does not follow them (a link may point anywhere, at a file holding secrets too). A file named
    itself is read, link or not."""
    return [Problem(str(link), None, None, "a symbolic link: skipped (playbooks in a directory are read only "
                                           "from regular files; name the file itself to read it)", severity="warning")
            for path in paths if path.is_dir() for link in _yaml_entries(path)[1]]


def playbook_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named, or inside the directories named (sorted; symbolic links there are skipped);
    PlaybookError for missing paths."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(_yaml_entries(path)[0])
        elif path.exists():  # a FIFO or a device is refused by read_text, with what it is
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
                                    f"duplicate playbook id {quote(item.playbook.id)} (also in {other.path})"))
    if problems:
        raise PlaybookError(problems)
    return loaded
