"""K shard processes side by side (an Indexed Job's pods): every target exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import DatabaseFactory, Project, query, run, script

pytestmark = pytest.mark.slow

TENANTS = " ".join(f"s{i:03d}" for i in range(150))
"""Enough for three shard processes to run side by side for a while (about 50 each)."""


def _migrated_per_schema(url: str) -> dict[str, int]:
    rows = query(url, "SELECT schema_name, count(*) FROM fleet.run_targets "
                      "WHERE outcome = 'migrated' GROUP BY schema_name")
    return {schema: count for schema, count in rows}


def _at_head(url: str) -> int:
    rows = query(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'alembic_version' "
                      "AND schemaname LIKE 'auth\\_s%'")
    return rows[0][0]


def test_shards_side_by_side_cover_every_target_once(example: Project, databases: DatabaseFactory
                                                     ) -> None:
    # Three processes make the proof; the partition itself for 1, 2, 3, 8 and 17 shards is
    # tests/unit/test_shard.py's, and one process of one shard is a plain fleet migrate.
    count = 3
    url = databases.create("fleet_shard")
    env = {**example.env, "DATABASE_URI": url, "TENANTS": TENANTS}
    procs = [
        subprocess.Popen([script("fleet"), "migrate", "auth", "--shard", "auto", "--jobs", "1"],
                         cwd=example.root, env={**os.environ, **env,
                                                "JOB_COMPLETION_INDEX": str(i),
                                                "JOB_COMPLETION_COUNT": str(count)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(count)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * count, errors
    per_schema = _migrated_per_schema(url)
    assert len(per_schema) == 150
    assert set(per_schema.values()) == {1}
    runs = query(url, "SELECT count(*) FROM fleet.runs")[0][0]
    assert runs == count
    status = run(["fleet", "status", "auth"], cwd=example.root, env=env)
    assert status.returncode == 0, status.stdout[-500:]


def test_a_killed_shard_reruns_only_its_share(example: Project, databases: DatabaseFactory
                                              ) -> None:
    url = databases.create("fleet_shard_kill")
    env = {**example.env, "DATABASE_URI": url, "TENANTS": TENANTS}
    share = run(["fleet", "migrate", "auth", "--shard", "1/3", "--dry-run", "--json"],
                cwd=example.root, env=env)
    mine = {t["schema"] for t in json.loads(share.stdout)["targets"]}
    assert 30 < len(mine) < 70
    proc = subprocess.Popen([script("fleet"), "migrate", "auth", "--shard", "1/3", "--jobs", "1"],
                            cwd=example.root, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _at_head(url) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _at_head(url)
    assert 0 < done_before < len(mine), "the shard was killed mid-run"
    rerun = run(["fleet", "migrate", "auth", "--shard", "1/3", "--json"], cwd=example.root,
                env=env)
    assert rerun.returncode == 0, rerun.stderr
    migrated = {t["schema"] for t in json.loads(rerun.stdout)["targets"]
                if t["outcome"] == "migrated"}
    assert migrated <= mine
    assert len(migrated) + done_before >= len(mine)
    # Only its own share exists: the other shards' tenants were never touched.
    found = {r[0] for r in query(url, "SELECT schemaname FROM pg_tables WHERE tablename = "
                                      "'alembic_version' AND schemaname LIKE 'auth\\_s%'")}
    assert found == mine


def test_bad_shard_is_a_usage_error(example: Project) -> None:
    result = example.fleet("migrate", "--shard", "3/3")
    assert result.returncode == 2
    assert "invalid shard" in result.stderr
    result = example.fleet("migrate", "--shard", "auto")
    assert result.returncode == 2
    assert "JOB_COMPLETION_INDEX" in result.stderr
