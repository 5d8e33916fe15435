"""The example playbooks decide the same members on SQLite and PostgreSQL, on the demo brand."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from testdb import new_database_url

from engine.clock import zone
from engine.config import load_config
from engine.decide.preview import dry_run
from engine.grammar.loader import load_playbooks
from engine.store.connect import open_engine
from engine.store.demo import DemoSpec, ensure_demo

ROOT = Path(__file__).resolve().parents[2]
TZ = zone("Asia/Shanghai")
TODAY = date(2026, 11, 22)


def _decisions(url: str) -> dict[str, set[tuple[str, str, str | None, str | None]]]:
    engine = open_engine(url)
    try:
        ensure_demo(engine, DemoSpec(members=3_000, seed=11, today=TODAY, tz=TZ), progress=False)
        settings, _ = load_config(ROOT / "config.example.yaml")
        playbooks = [lp.playbook for lp in load_playbooks([ROOT / "playbooks"])]
        by_playbook: dict[str, set[tuple[str, str, str | None, str | None]]] = {p.id: set() for p in playbooks}
        at = datetime.combine(TODAY, time(10), tzinfo=TZ)
        for d in dry_run(engine, playbooks, at, default_timezone="Asia/Shanghai", links=settings.links,
                         event_window=timedelta(hours=1)):
            by_playbook[d.playbook].add((d.member_id, d.decision, d.reason, d.channel))
        return by_playbook
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_demo_parity__sqlite_and_postgresql_decide_alike(tmp_path: Path) -> None:
    """Every example playbook gives identical decisions for identical members on both databases."""
    sqlite_urls = new_database_url("sqlite", tmp_path)
    postgres_urls = new_database_url("postgresql", tmp_path)
    on_sqlite = _decisions(next(sqlite_urls))
    on_postgres = _decisions(next(postgres_urls))
    assert on_sqlite == on_postgres
    touched = {playbook: len(rows) for playbook, rows in on_sqlite.items()}
    assert all(n > 0 for n in touched.values()), f"every example playbook should find members: {touched}"
    for generator in (sqlite_urls, postgres_urls):
        next(generator, None)
