"""A database that goes down mid-run: its remaining targets fail at once, with the reason."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import DDL_LOG, private_tmp, version
from tests.faults.conftest import HEAD, shop_project, start_fleet

pytestmark = pytest.mark.slow


def test_a_database_down_fails_its_remaining_targets_at_once(tmp_path: Path) -> None:
    folder = private_tmp("fleet-test-down-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE down")
        url = server.url("down")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DDL_LOG)
        project = shop_project(tmp_path / "p", url, 16, sleep=0.3)
        runner = start_fleet(project, "migrate", "--json", "--jobs", "2", "--retries", "2")
        time.sleep(2.0)
        server.stop()  # and it stays down
        out, err = runner.communicate(timeout=300)
        assert runner.returncode == 1, err
        payload = json.loads(out)
        failed = [t for t in payload["targets"] if t["outcome"] == "failed"]
        not_tried = [t for t in failed if "found unreachable earlier" in (t.get("hint") or "")]
        tried = [t for t in failed if t not in not_tried]
        assert not_tried, "every target waited through its own retries"
        assert len(tried) <= 2  # only those in flight when the server went away
        assert all(t["error"] for t in failed)
        # Not tried: no attempts of theirs to give up after (the first target's were).
        assert not any("gave up after" in t["error"] for t in not_tried), not_tried
        server.start()
        rerun = project.fleet("migrate", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert all(version(url, f"shop_s{i:03d}") == [HEAD] for i in range(16))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
