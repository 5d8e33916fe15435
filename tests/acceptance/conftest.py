"""Fixtures of the subprocess daemon tests: daemons started in tmp_path, killed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Daemons


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Starts `siyu run` in tmp_path (config: tmp_path/config.yaml); kills any still running at the end."""
    group = Daemons(tmp_path, tmp_path / "config.yaml")
    try:
        yield group
    finally:
        group.kill_all()
