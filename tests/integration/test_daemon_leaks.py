"""The daemon in process: what goes wrong is one Siyu log line, masked, never a raw traceback or a secret.

A scheduled job that raises reaches the log as one `scheduler.job_failed` line (APScheduler's own
traceback from its executor never reaches stderr); a SIGHUP reload with a secret written in the
config is refused like any broken config, naming the key and not the value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemonkit import NO_POLICIES, Brand, scheduled
from scenario import AT
from structlog.testing import capture_logs

from engine.logs import SUMMARY_LIMIT
from engine.run.daemon import Daemon


@pytest.fixture
def daemon(db_url: str, tmp_path: Path) -> Iterator[tuple[Brand, Daemon]]:
    brand = Brand(tmp_path, db_url)
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("p", "0 10 * * *"))
    daemon = Daemon(brand.config_path, clock=lambda: AT)
    engines = {daemon.service.engine}
    yield brand, daemon
    asyncio.run(daemon.dispatcher.aclose())
    for engine in {*engines, daemon.service.engine, daemon.dispatcher.engine}:
        engine.dispose()
    brand.close()


def test_scheduler__a_failing_job_is_one_siyu_log_line(daemon: tuple[Brand, Daemon], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A fired playbook whose round raises (a message holding a phone number and a thousand characters of
    rows) logs one `scheduler.job_failed` line with the job id, the exception's type and a short, masked
    first line; nothing reaches stderr."""
    _, running = daemon

    async def failing_round() -> None:
        raise RuntimeError("cannot decide: " + "row (T1, 13812345678, 小林) " * 40 + "\nand a second line")

    monkeypatch.setattr(running, "_round", failing_round)

    async def fire_once(logs: list[dict[str, Any]]) -> None:
        running.scheduler.start()
        running.scheduler.add_job(running._fire, "date", run_date=datetime.now(UTC), args=["p"], id="p")
        for _ in range(500):  # bounded wait: until the failure is logged
            if any(entry["event"] == "scheduler.job_failed" for entry in logs):
                break
            await asyncio.sleep(0.01)
        running.scheduler.shutdown(wait=False)

    with capture_logs() as logs:
        asyncio.run(fire_once(logs))
    failed = [entry for entry in logs if entry["event"] == "scheduler.job_failed"]
    assert [(e["log_level"], e["job"]) for e in failed] == [("error", "p")]
    error = failed[0]["error"]
    assert error.startswith("RuntimeError: cannot decide: row (T1, 138****5678, 小林)")
    assert len(error) <= SUMMARY_LIMIT + 1 and "second line" not in error
    assert capsys.readouterr().err == ""


def test_reload__a_secret_written_in_the_config_is_refused_naming_the_key(daemon: tuple[Brand, Daemon]) -> None:
    """SIGHUP with a secret written in the config: `reload.rejected` names the key (never the value) and the
    old set is kept."""
    brand, running = daemon
    config = yaml.safe_load(brand.config_path.read_text(encoding="utf-8"))
    config["channels"]["wecom"] = {"adapter": "wecom", "corp_id": "ww_corp", "secret": "written-wecom-S3cret"}
    brand.config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with capture_logs() as logs:
        asyncio.run(running._reload())
    rejected = [e["problem"] for e in logs if e["event"] == "reload.rejected"]
    assert len(rejected) == 1 and "channels.wecom.secret is a secret written in the file" in rejected[0]
    assert not any("S3cret" in str(entry) for entry in logs)
    assert any(e["event"] == "reload.kept_old_set" for e in logs)
