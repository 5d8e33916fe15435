"""The benchmark's hand-written queries (bench/reference_sql/) find exactly the members Siyu's
compiled statement finds, on the demo brand, on SQLite and PostgreSQL.

`python -m bench.run` checks this again at every size before it reports a time; this test keeps the
reference queries and the compiler from drifting apart between benchmark runs.
"""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from bench.audience import PLAYBOOKS, Moment, siyu_ids, sql_ids
from engine.clock import zone
from engine.store.connect import open_engine
from engine.store.demo import DemoSpec, ensure_demo

TZ = zone("Asia/Shanghai")
TODAY = date(2026, 11, 16)


@pytest.fixture
def demo_url(db_url: str) -> str:
    engine = open_engine(db_url)
    ensure_demo(engine, DemoSpec(members=3_000, seed=5, today=TODAY, tz=TZ), progress=False)
    engine.dispose()
    return db_url


def test_reference_sql__finds_the_members_siyu_finds(demo_url: str) -> None:
    """For every benchmarked playbook: the same member ids in the same order, and not none."""
    moment = Moment(datetime.combine(TODAY, time(10), tzinfo=TZ))
    sizes = {}
    for playbook in PLAYBOOKS:
        expected = siyu_ids(demo_url, playbook, moment)
        assert sql_ids(demo_url, playbook, moment) == expected, playbook
        sizes[playbook] = len(expected)
    assert all(sizes.values()), f"every benchmarked audience should hold members: {sizes}"
