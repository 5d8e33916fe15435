"""`siyu fakes`: the fake vendors on fixed loopback ports, the config that points at them, a clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_harness import ROOT, siyu, siyu_env, wait_for

from channels.fakes.local import LocalVendors
from channels.fakes.serve import write_trial
from engine import examples
from engine.config import load_config


def _commented_block() -> dict[str, object]:
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    block = text.split("# >>> local fakes\n", 1)[1].split("# <<< local fakes\n", 1)[0]
    return yaml.safe_load("\n".join(line.removeprefix("#") for line in block.splitlines()))


def test_config_example__local_fakes_block_is_what_siyu_fakes_serves() -> None:
    """Uncommented, config.example.yaml's "local fakes" block is exactly the fakes' channels on port 9100
    (with `allow_literal_secrets`: their credentials are written in it)."""
    assert _commented_block() == {"allow_literal_secrets": True, "channels": LocalVendors(port=9100).channels()}


def test_fakes__serve_write_a_working_config_and_stop_on_sigterm(tmp_path: Path) -> None:
    """`siyu fakes --port 0 --write-config F` serves the six fakes on free ports (a wrong secret gets the
    vendor's own error), writes a config that points at them and loads, and stops cleanly on SIGTERM."""
    config = tmp_path / "local.yaml"
    out = (tmp_path / "fakes.out").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "fakes", "--port", "0", "--write-config",
                             str(config), "--db", f"sqlite:///{tmp_path / 'demo.db'}"],
                            cwd=tmp_path, env=siyu_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: config.exists() and "Ctrl-C" in (tmp_path / "fakes.out").read_text(), 30, "fakes ready")
        settings, _ = load_config(config)
        urls = {name: str(c.base_url) for name, c in settings.channels.items()}
        assert sorted(urls) == ["ai_call", "sms", "template", "wecom"]
        assert all(url.startswith("http://127.0.0.1:") for url in urls.values())
        wrong = httpx.get(f"{urls['wecom']}/cgi-bin/gettoken",
                          params={"corpid": "ww_fake_corp", "corpsecret": "wrong"}, timeout=5).json()
        assert wrong["errcode"] == 40001
        assert siyu("check", "--config", str(config), cwd=tmp_path).returncode == 0
        assert Path(settings.playbooks) == tmp_path / "playbooks"  # copied beside the config, read from anywhere
        assert sorted(p.name for p in (tmp_path / "playbooks").iterdir()) == sorted(
            p.name for p in (ROOT / "playbooks").glob("*.yaml"))
        assert settings.database.url == f"sqlite:///{tmp_path / 'demo.db'}"
        assert settings.links == yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))["links"]
        assert "the example playbooks copied to" in (tmp_path / "fakes.out").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def test_write_trial__keeps_a_playbooks_folder_already_beside_the_config(tmp_path: Path) -> None:
    """An existing playbooks/ beside the config is the user's: left untouched and read, and the output says so."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "mine.yaml").write_text("# the user's own\n", encoding="utf-8")
    done = write_trial(tmp_path / "trial.yaml", LocalVendors(port=9100), "sqlite:///demo.db", examples.root())
    assert [p.name for p in (tmp_path / "playbooks").iterdir()] == ["mine.yaml"]
    assert "already exists: left as it is" in done[0]
    written = yaml.safe_load((tmp_path / "trial.yaml").read_text(encoding="utf-8"))
    assert written["playbooks"] == str(tmp_path / "playbooks")


def test_write_trial__relative_sqlite_file_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--db sqlite:///demo.db` names the demo database in the directory `siyu fakes` runs in, wherever the
    config is later used; other URLs are written as given."""
    monkeypatch.chdir(tmp_path)
    write_trial(tmp_path / "out" / "a.yaml", LocalVendors(port=9100), "sqlite:///demo.db", examples.root())
    pg = "postgresql://siyu@127.0.0.1/siyu"
    write_trial(tmp_path / "out" / "b.yaml", LocalVendors(port=9100), pg, examples.root())
    assert yaml.safe_load((tmp_path / "out" / "a.yaml").read_text(encoding="utf-8"))["database"] == {
        "url": f"sqlite:///{tmp_path / 'demo.db'}"}
    assert yaml.safe_load((tmp_path / "out" / "b.yaml").read_text(encoding="utf-8"))["database"] == {"url": pg}
    assert (tmp_path / "out" / "playbooks" / "pet-milk-refill.yaml").is_file()
