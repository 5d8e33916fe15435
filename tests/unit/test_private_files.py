"""Files Siyu creates are readable by their owner only (0600), from the moment they exist.

The `log` channel's sink holds every message sent; a config written by `siyu fakes --write-config`
holds the fakes' credentials (and says `allow_literal_secrets: true`, so `siyu run` takes it).
Both are created with mode 0600, never widened and then narrowed.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.base import Touch
from channels.fakes.local import LocalVendors
from channels.fakes.serve import write_trial
from channels.log import LogChannel, LogSettings
from engine import examples
from engine.config import load_config


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the mode a file gets is the mode Siyu asks for."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_log_channel__the_sink_is_created_0600(tmp_path: Path, open_umask: None) -> None:
    """The first touch creates touches.jsonl readable and writable by the owner only."""
    sink = tmp_path / "touches.jsonl"
    channel = LogChannel("sms", LogSettings(adapter="log", path=str(sink)))
    touch = Touch(touch_id="T1", playbook="p", member_id="M1", channel="sms", occurrence="o",
                  message={"text": "您好"}, address={"phone": "13812345678"})
    asyncio.run(channel.send([touch]))
    assert sink.read_text(encoding="utf-8").count("\n") == 1
    assert mode(sink) == 0o600


def test_write_trial__the_config_is_created_0600_and_allows_its_written_secrets(tmp_path: Path,
                                                                                open_umask: None) -> None:
    """`siyu fakes --write-config FILE`: FILE is 0600 and loads as `siyu run` loads it (strict), with no warning."""
    config = tmp_path / "trial.yaml"
    write_trial(config, LocalVendors(port=9100), "sqlite:///demo.db", examples.root())
    assert mode(config) == 0o600
    settings, warnings = load_config(config, strict_secrets=True)
    assert (settings.allow_literal_secrets, warnings) == (True, [])
