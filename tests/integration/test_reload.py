"""A SIGHUP reload in process: the new contact policies reach the claim check of touches decided before it.

The daemon is built in process with its clock stopped at AT; `Daemon._reload` is what its run loop
calls on SIGHUP (the signal itself is covered by tests/acceptance/test_daemon.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemonkit import NO_POLICIES, Brand, scheduled
from scenario import AT, PHONE, SHANGHAI, add_member

from engine.run.daemon import Daemon

NOON = ("09:00", "12:00")
"""Quiet hours around AT (10:00 Shanghai): a touch claimed at AT waits until 12:00."""


@pytest.fixture
def brand(db_url: str, tmp_path: Path) -> Iterator[Brand]:
    brand = Brand(tmp_path, db_url)
    brand.configure(policies=NO_POLICIES)
    brand.add_playbook(scheduled("p", "0 10 * * *"))
    with brand.engine.begin() as conn:
        for member_id in ("M1", "M2"):
            add_member(conn, member_id, tags=["vip"], phone=PHONE, nickname=member_id)
    yield brand
    brand.close()


@pytest.fixture
def daemon(brand: Brand) -> Iterator[Daemon]:
    daemon = Daemon(brand.config_path, clock=lambda: AT)
    engines = [daemon.service.engine]
    yield daemon
    asyncio.run(daemon.dispatcher.aclose())
    for engine in {*engines, daemon.service.engine, daemon.dispatcher.engine}:  # a reload opens its own
        engine.dispose()


def _reload(daemon: Daemon) -> None:
    async def reload() -> None:
        await daemon._reload()
    asyncio.run(reload())


@pytest.mark.parametrize("change", ["config policies", "playbook limits"])
def test_reload__new_quiet_hours_reach_the_claim_check(brand: Brand, daemon: Daemon, change: str) -> None:
    """Touches queued before a SIGHUP and claimed after it are held to the reloaded policies: quiet
    hours added by the config or by the playbook defer them at claim time instead of sending them."""
    daemon.service.evaluator(clock=lambda: AT).tick(AT)
    assert brand.states("p") == {"M1": ("queued", None), "M2": ("queued", None)}
    kept = daemon.dispatcher
    if change == "config policies":
        brand.configure(policies={**NO_POLICIES, "quiet_hours": {"sms": list(NOON)}})
    else:
        limits: dict[str, Any] = {"quiet_hours": {"sms": list(NOON)}, "expire_after": "3h"}
        brand.add_playbook(scheduled("p", "0 10 * * *", limits=limits))
    _reload(daemon)
    assert daemon.dispatcher is kept, "the channels did not change: the dispatcher is kept, its policies swapped"

    assert asyncio.run(daemon.dispatcher.dispatch_once("sms")) == 0
    noon = datetime(2026, 11, 22, 12, 0, tzinfo=SHANGHAI)
    expires = AT + timedelta(hours=3) if change == "playbook limits" else None
    assert {(r["member_id"], r["state"], r["not_before"], r["expires_at"]) for r in brand.touches()} == {
        ("M1", "deferred", noon, expires), ("M2", "deferred", noon, expires)}
    assert brand.logged() == []
