"""What several runners at once report: each says where every target ends, truthfully."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import query
from tests.faults.conftest import shop_project, start_fleet

pytestmark = pytest.mark.slow


def test_runners_at_once_report_every_target_at_head(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 30, sleep=0.02)
    runners = [start_fleet(project, "migrate", "--json", "--jobs", "2") for _ in range(3)]
    payloads = []
    for runner in runners:
        out, err = runner.communicate(timeout=600)
        assert runner.returncode == 0, err
        payloads.append(json.loads(out))
    for payload in payloads:  # a target another runner migrated is at head, not missing
        assert {t["state"] for t in payload["targets"]} == {"at_head"}
        assert payload["summary"]["at_head"] == 30
    assert sum(p["summary"]["migrated"] for p in payloads) == 30
    rows = query(db_url, "SELECT schema_name, count(*) FROM fleet.run_targets "
                 "WHERE outcome = 'migrated' GROUP BY 1")
    assert len(rows) == 30 and {count for _, count in rows} == {1}
