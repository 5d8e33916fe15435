"""The daemon logs `siyu check`'s playbook warnings and goes on: at start and after a SIGHUP reload.

The daemon is built in process; `Daemon._reload` is what its run loop calls on SIGHUP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonkit import NO_POLICIES, Brand, scheduled
from scenario import AT
from structlog.testing import capture_logs

from engine.run.daemon import Daemon


@pytest.fixture
def brand(db_url: str, tmp_path: Path) -> Iterator[Brand]:
    brand = Brand(tmp_path, db_url)
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("p", "0 10 * * *"))
    yield brand
    brand.close()


def test_service_lint__sms_window_of_the_configured_channel(brand: Brand) -> None:
    """The service lints with the configured channels' windows: an SMS channel with 08:00–22:00 flags 22:30."""
    config = brand.config_path.read_text()
    brand.config_path.write_text(config.replace("adapter: log\n", "adapter: log\n    send_window: ['08:00', '22:00']\n", 1))
    brand.add_playbook(scheduled("late", "30 22 * * *"))
    messages = [p.message for p in brand.service.lint()]
    assert messages == [("runs at 22:30, outside the sms send_window 08:00–22:00 (Asia/Shanghai): its sms touches "
                        "will wait (deferred) until the window opens at 08:00")]


def test_reload__logs_each_warning_and_keeps_the_new_set(brand: Brand) -> None:
    """A reloaded playbook with minute and hour swapped is loaded and scheduled; the warning is logged."""
    daemon = Daemon(brand.config_path, clock=lambda: AT)
    engines = [daemon.service.engine]
    try:
        assert daemon.service.lint() == []
        brand.add_playbook(scheduled("night", "10 0 * * *"))
        with capture_logs() as logs:
            asyncio.run(daemon._reload())
        assert [p.id for p in daemon.service.playbooks] == ["night", "p"]
        warnings: list[dict[str, Any]] = [e for e in logs if e["event"] == "playbook.warning"]
        assert [(w["log_level"], w["problem"]) for w in warnings] == [(
            "warning", (f"{brand.playbook_dir / 'night.yaml'}:5:13: warning: runs daily at 00:10 (Asia/Shanghai); "
            "did you mean 0 10 * * * (10:00)? cron fields are minute, then hour"))]
        assert any(e["event"] == "reload.done" for e in logs)
    finally:
        asyncio.run(daemon.dispatcher.aclose())
        for engine in {*engines, daemon.service.engine, daemon.dispatcher.engine}:
            engine.dispose()
