"""An installed Siyu works outside a checkout: the wheel built from this tree, installed in a fresh
virtual environment, runs the demo, the check, the fakes and a tick in an empty directory.

The wheel's dependencies are pinned to uv.lock (`uv export`), so the install is the locked set
(from uv's cache when `uv sync --locked` ran first) rather than whatever PyPI serves that day.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from daemon_harness import ROOT, ledger, wait_for

TODAY = "2026-11-18"  # a Wednesday: the weekday recall runs too


def _env() -> dict[str, str]:
    """The environment of a user who installed the wheel: nothing points at this checkout or its venv."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "SIYU_DEBUG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "UV_PROJECT_ENVIRONMENT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONIOENCODING": "utf-8"}


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                            encoding="utf-8", timeout=300, check=False)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `siyu` script of a fresh virtual environment holding only the wheel built from this tree."""
    uv = shutil.which("uv")
    if uv is None:
        if os.environ.get("CI"):
            raise AssertionError("uv is not on PATH")
        pytest.skip("uv is not on PATH")
    work = tmp_path_factory.mktemp("wheel")
    _run(uv, "build", "--wheel", "--out-dir", work / "dist", ROOT, cwd=work)
    (wheel,) = (work / "dist").glob("siyu-*.whl")
    pins = _run(uv, "export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project", "--project", ROOT,
                cwd=work).stdout
    (work / "pins.txt").write_text(pins, encoding="utf-8")
    _run(uv, "venv", "--python", sys.executable, work / "venv", cwd=work)
    python = work / "venv" / "bin" / "python"
    _run(uv, "pip", "install", "--python", python, "--constraint", work / "pins.txt", wheel, cwd=work)
    where = _run(python, "-c", "import engine; print(engine.__file__)", cwd=work).stdout
    assert Path(where.strip()).is_relative_to(work / "venv")
    return work / "venv" / "bin" / "siyu"


@pytest.mark.slow
def test_wheel__demo_check_fakes_and_tick_work_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    """In a directory with no checkout, `siyu demo` and `siyu check` use the bundled examples, `siyu fakes
    --write-config` writes a config (playbooks copied beside it) and serves until SIGTERM, and `siyu tick`
    with that config, run from another directory, sends each playbook due that morning to the fakes."""
    here = tmp_path / "empty"
    here.mkdir()
    demo = _run(installed, "demo", "--members", "500", "--today", TODAY, cwd=here)
    assert "created demo brand in sqlite:///demo.db: 500 members" in demo.stderr
    assert re.search(r"dry-run of 7 playbook\(s\) in the bundled examples \(.*site-packages", demo.stdout)
    assert "pet-milk-refill" in demo.stdout and "M0000" in demo.stdout  # the sample messages
    check = _run(installed, "check", cwd=here)
    assert check.stdout.startswith("ok: 7 playbook(s) valid in the bundled examples")

    out = (tmp_path / "fakes.out").open("w")
    fakes = subprocess.Popen([installed, "fakes", "--port", "0", "--write-config", "x.yaml"], cwd=here, env=_env(),
                             stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C" in (tmp_path / "fakes.out").read_text(), 60, "siyu fakes ready")
        assert sorted(p.name for p in (here / "playbooks").iterdir()) == sorted(
            p.name for p in (ROOT / "playbooks").glob("*.yaml"))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        tick = _run(installed, "tick", "--quiet", "--config", here / "x.yaml", "--at", f"{TODAY} 11:00",
                    cwd=elsewhere)
        fakes.send_signal(signal.SIGTERM)
        assert fakes.wait(timeout=30) == 0
    finally:
        if fakes.poll() is None:
            fakes.kill()
            fakes.wait()
        out.close()

    sent = int(re.search(r"dispatched sent\s+([\d,]+)", tick.stdout)[1].replace(",", ""))  # type: ignore[index]
    per_playbook = Counter(row["playbook"] for row in ledger(f"sqlite:///{here / 'demo.db'}") if row["state"] == "sent")
    assert sum(per_playbook.values()) == sent
    silent = [p for p in ("pet-milk-refill", "lapsed-recall", "coupon-expiring") if not per_playbook.get(p)]
    assert silent == [], per_playbook  # 10:00, 10:30 and 11:00: all due in the trial's (09:00, 11:00]
    assert not list(elsewhere.iterdir())  # nothing was read or written relative to where tick ran
