"""The public acceptance sample (../shared/acceptance): every expected decision, on both databases."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from engine.clock import zone
from engine.decide.preview import dry_run
from engine.grammar.loader import load_playbooks
from engine.store.importer import import_directory

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "acceptance"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/acceptance is not present")


def _coupon(offer: dict | None) -> tuple | None:
    return None if not offer else (offer["coupon"]["threshold"], offer["coupon"]["discount"])


def test_acceptance_sample__every_expected_decision(db: Engine, tmp_path: Path) -> None:
    """Importing the sample CSVs and dry-running its playbooks at 10:00 gives exactly expected.jsonl."""
    shutil.copytree(SAMPLE / "data", tmp_path / "data")
    report = import_directory(db, tmp_path / "data", zone("Asia/Shanghai"), progress=False)
    assert report.problems == []
    playbooks = [lp.playbook for lp in load_playbooks([SAMPLE / "playbooks"])]
    at = datetime.fromisoformat("2026-11-22T10:00:00+08:00")
    from datetime import timedelta

    got = {(d.playbook, d.member_id): d for d in dry_run(
        db, playbooks, at, default_timezone="Asia/Shanghai", links={}, event_window=timedelta(hours=1))}
    expected = [json.loads(line) for line in (SAMPLE / "expected.jsonl").read_text().splitlines() if line]
    mismatches = []
    for e in expected:
        d = got.get((e["playbook"], e["member_id"]))
        want = (e["decision"], e["reason"], e["channel"], _coupon(e["offer"]))
        have = None if d is None else (d.decision, d.reason, d.channel, _coupon(d.offer))
        if want != have:
            mismatches.append((e["playbook"], e["member_id"], want, have))
    extra = set(got) - {(e["playbook"], e["member_id"]) for e in expected}
    assert mismatches == []
    assert extra == set()
    assert len(got) == len(expected) > 300
