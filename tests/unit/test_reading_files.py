"""Reading playbooks and configs: regular files only, no symbolic links followed inside a playbook
directory, and no message quoting more than 40 characters of the text at fault.

A playbook linked to a file that is no playbook (a secret file, say) must not be echoed back line by
line (into the journal on a reload); a FIFO or a device given as a file is refused at once, never
read (a FIFO without a writer would block for ever). `siyu check` is run in process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import load_config
from engine.errors import QUOTE_LIMIT, ConfigError, PlaybookError, Problem
from engine.grammar.loader import load_playbooks

PLAYBOOK = """\
id: {id}
name: 复购提醒
trigger: {{schedule: "0 10 * * *"}}
audience:
  all:
    - tag: vip
channels:
  - wecom: {{text: "您好"}}
"""


def problems_loading(*paths: Path) -> list[Problem]:
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(list(paths))
    return caught.value.problems


def longest_quote(problems: list[Problem], text: str) -> int:
    """The longest run of any line of `text` that some message repeats."""
    longest = 0
    for problem in problems:
        for line in text.splitlines():
            while longest < len(line) and any(line[i:i + longest + 1] in problem.message
                                              for i in range(len(line) - longest)):
                longest += 1
    return longest


@pytest.mark.timeout(30)  # before the fix, reading the FIFO blocked until this bound
def test_load_playbooks__a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    """A FIFO named as a playbook is a located error saying what it is; it is never opened for a read
    that would wait for a writer."""
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    (problem,) = problems_loading(fifo)
    assert str(problem) == f"{fifo}: a FIFO (named pipe), not a regular file: only regular files are read"


@pytest.mark.timeout(30)
def test_load_config__a_fifo_a_device_or_a_directory_is_refused(tmp_path: Path) -> None:
    """`--config` naming a FIFO, /dev/zero (a device that never ends) or a directory: a clear located error."""
    fifo = tmp_path / "siyu.yaml"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO (named pipe)"), (Path("/dev/zero"), "a character device"),
                       (tmp_path, "a directory")):
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        expected = f"{path}: {kind}, not a regular file: only regular files are read"
        assert [str(p) for p in caught.value.problems] == [expected]


def test_check__a_symlink_in_a_playbook_directory_is_skipped_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Inside a scanned directory a symbolic link is not followed (whatever it points at), and `check`
    says so with its path; the regular playbooks beside it are checked as usual."""
    books, elsewhere = tmp_path / "playbooks", tmp_path / "elsewhere"
    books.mkdir()
    elsewhere.mkdir()
    (books / "real.yaml").write_text(PLAYBOOK.format(id="real"), encoding="utf-8")
    (elsewhere / "secret.txt").write_text("root: $6$s3cretHash\n", encoding="utf-8")
    (books / "linked.yaml").symlink_to(elsewhere / "secret.txt")
    assert [item.playbook.id for item in load_playbooks([books])] == ["real"]
    assert main(["check", str(books)]) == 0
    out, err = capsys.readouterr()
    assert err == (f"{books / 'linked.yaml'}: warning: a symbolic link: skipped (playbooks in a directory are read "
                   "only from regular files; name the file itself to read it)\n")
    assert out == f"ok: 1 playbook(s) valid in {books}; 1 warning\n"
    assert "s3cret" not in out + err


def test_load_playbooks__a_playbook_linked_to_a_foreign_file_quotes_at_most_40_characters(tmp_path: Path) -> None:
    """A playbook named directly is read even when it is a link; linked to a file of 100 long lines
    (every one a key), each problem quotes at most 40 characters of the file."""
    lines = [f"user{n:03d}:{'$6$' + 'Ab9' * 30}: {'x' * 60}" for n in range(100)]
    target = tmp_path / "shadow"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    link = tmp_path / "p.yaml"
    link.symlink_to(target)
    problems = problems_loading(link)
    assert len(problems) >= 100
    assert longest_quote(problems, target.read_text()) <= QUOTE_LIMIT
    assert problems[0].message.startswith(f"unknown key {lines[0][:QUOTE_LIMIT] + '…'!r}; expected one of")


@pytest.mark.parametrize(("where", "text"), [
    ("a bad value", PLAYBOOK.format(id="p").replace('"0 10 * * *"', '"0 10 * * * ' + "7" * 80 + '"')),
    ("an unknown channel", PLAYBOOK.format(id="p").replace("wecom:", "w" * 90 + ":")),
    ("a duplicate key", PLAYBOOK.format(id="p") + "k" * 90 + ": 1\n" + "k" * 90 + ": 2\n"),
    ("a tag", PLAYBOOK.format(id="p").replace('"您好"', "!" + "t" * 90 + " x")),
])
def test_load_playbooks__messages_quote_at_most_40_characters(tmp_path: Path, where: str, text: str) -> None:
    """Whatever the problem (a value, a key, a YAML error), its message quotes at most 40 characters."""
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    problems = problems_loading(path)
    assert problems, where
    assert longest_quote(problems, text) <= QUOTE_LIMIT, (where, [p.message for p in problems])
