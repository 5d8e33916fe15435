"""README's "A local trial" does what it says: its commands, read from README.md, run as written on a
fixed weekday, and every playbook the paragraph after them names sends touches.

Changes to the commands, against README's own words: the date `$(TZ=Asia/Shanghai date +%F)` is a
fixed Wednesday and `siyu demo` gets `--today` that day; `siyu fakes` takes free ports
(`--port 0`); `uv run --locked siyu` is this checkout's `python -m engine`. `siyu run` is left out:
the daemon decides on the real clock, which no test may depend on (tests/acceptance/test_daemon.py
runs it); `siyu status` runs, but the counts come from the ledger, since its "today" is the real one.
The commands run in a directory holding what a clone has at its top level: `playbooks/` and
`config.example.yaml`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from daemon_harness import ROOT, ledger, siyu_env, wait_for

TODAY = "2026-11-18"  # a Wednesday
TODAY_SHELL = "$(TZ=Asia/Shanghai date +%F)"
LAUNCHER = ["uv", "run", "--locked", "siyu"]


def trial_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### A local trial")
    return text[start:text.index("\n## ", start)]


def trial_commands(section: str) -> list[list[str]]:
    """Every `siyu` command of the section's bash blocks, as argv after `siyu`, in order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            for command in line.split("&&"):
                words = shlex.split(command, comments=True)
                if words[:2] == ["pip", "install"]:
                    continue  # uv is here already
                assert words[:len(LAUNCHER)] == LAUNCHER, f"not a siyu command: {command!r}"
                commands.append(words[len(LAUNCHER):])
    return commands


def named_playbooks(section: str) -> list[str]:
    """The playbooks the paragraph after the commands names (`id` in backticks)."""
    prose = section[section.rindex("```") + 3:]
    ids = {p.stem for p in (ROOT / "playbooks").glob("*.yaml")}
    return [name for name in dict.fromkeys(re.findall(r"`([a-z0-9-]+)`", prose)) if name in ids]


def quoted_weekday_touches(section: str) -> int:
    found = re.search(r"([\d,]+) touches\s+on a weekday", section)
    assert found, "README no longer quotes the weekday's touches"
    return int(found[1].replace(",", ""))


def as_run(argv: list[str]) -> list[str]:
    """A README command with the test's substitutions (see the module docstring)."""
    argv = [arg.replace(TODAY_SHELL, TODAY) for arg in argv]
    if argv[0] == "demo":
        argv += ["--today", TODAY]
    if argv[0] == "fakes":
        argv += ["--port", "0"]
    return [sys.executable, "-m", "engine", *argv]


def test_readme_trial__commands_parse_as_expected() -> None:
    """The section still holds the commands this test knows how to run, and names the morning's playbooks."""
    section = trial_section()
    assert [argv[0] for argv in trial_commands(section)] == ["demo", "fakes", "tick", "run", "status"]
    assert {"pet-milk-refill", "lapsed-recall", "coupon-expiring"} <= set(named_playbooks(section))


@pytest.mark.slow
def test_readme_trial__each_playbook_named_sends_touches(tmp_path: Path) -> None:
    """Run as README writes them on a Wednesday, demo + fakes + tick send touches for every playbook the
    paragraph names (each on its own, not a total), as many in all as README quotes, and status runs."""
    section = trial_section()
    shutil.copytree(ROOT / "playbooks", tmp_path / "playbooks")
    shutil.copy(ROOT / "config.example.yaml", tmp_path)
    env = siyu_env()
    fakes: subprocess.Popen[bytes] | None = None
    out = (tmp_path / "fakes.out").open("w")
    try:
        for argv in trial_commands(section):
            command = as_run(argv)
            if argv[0] == "fakes":
                fakes = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
                wait_for(lambda: "Ctrl-C" in (tmp_path / "fakes.out").read_text(), 60, "siyu fakes ready")
                continue
            if argv[0] == "run":
                continue  # the daemon runs on the real clock (module docstring)
            if argv[0] == "status":
                command.append("--json")
            result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    encoding="utf-8", timeout=300, check=False)
            assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
            if argv[0] == "status":
                status = json.loads(result.stdout)
                assert set(named_playbooks(section)) <= {p["playbook"] for p in status["playbooks"]}
        assert fakes is not None, "README no longer starts siyu fakes"
        fakes.send_signal(signal.SIGTERM)
        assert fakes.wait(timeout=30) == 0
    finally:
        if fakes is not None and fakes.poll() is None:
            fakes.kill()
            fakes.wait()
        out.close()

    sent = Counter(row["playbook"] for row in ledger(f"sqlite:///{tmp_path / 'demo.db'}") if row["state"] == "sent")
    silent = [name for name in named_playbooks(section) if not sent[name]]
    assert silent == [], sent
    assert sum(sent.values()) == quoted_weekday_touches(section)
