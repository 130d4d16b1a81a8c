"""Several runners at once, and runners killed at random moments."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tests.conftest import query, tables, version
from tests.faults.conftest import (
    HEAD,
    TABLES_AT,
    kill_group,
    shop_project,
    start_fleet,
    wait_no_advisory_locks,
)

pytestmark = pytest.mark.slow


def test_five_runners_at_once_apply_every_revision_once(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 100)
    runners = [start_fleet(project, "migrate", "--json", "--jobs", "2") for _ in range(5)]
    outputs = [r.communicate(timeout=600) for r in runners]
    for runner, (out, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err
        assert json.loads(out)["summary"]["failed"] == 0
    migrated = sum(json.loads(out)["summary"]["migrated"] for out, _ in outputs)
    assert migrated == 100  # each target migrated by exactly one runner
    for i in range(100):
        assert version(db_url, f"shop_s{i:03d}") == [HEAD]
    duplicates = query(db_url, """
        SELECT schema_name, command_tag, object_identity, count(*)
        FROM public.fleet_test_ddl_log WHERE schema_name LIKE 'shop\\_%'
        GROUP BY 1, 2, 3 HAVING count(*) > 1""")
    assert duplicates == []
    # Three tables created per schema (items, orders, alembic_version), each exactly once.
    per_schema = query(db_url, """
        SELECT count(*) FROM public.fleet_test_ddl_log
        WHERE command_tag = 'CREATE TABLE' AND schema_name LIKE 'shop\\_%'""")
    assert per_schema[0][0] == 300


def _check_consistent(db_url: str, tenants: int) -> None:
    """Every schema's tables match its recorded revision (or it does not exist)."""
    for i in range(tenants):
        schema = f"shop_s{i:03d}"
        present = tables(db_url, schema)
        if not present:
            continue  # never started, or rolled back including the schema's creation
        current = version(db_url, schema)
        assert len(current) == 1, (schema, current)
        assert present - {"alembic_version"} == TABLES_AT[current[0]], (schema, current)
        if "items" in present:
            assert query(db_url, f"SELECT count(*) FROM {schema}.items")[0][0] == 50


def test_sigkill_at_random_moments_leaves_consistent_schemas(tmp_path: Path, db_url: str
                                                            ) -> None:
    rng = random.Random(20261124)
    tenants = 20
    project = shop_project(tmp_path / "p", db_url, tenants, sleep=0.05)
    for trial in range(10):
        runner = start_fleet(project, "migrate", "--jobs", "2")
        time.sleep(rng.uniform(0.3, 2.0))
        kill_group(runner)
        wait_no_advisory_locks(db_url)
        _check_consistent(db_url, tenants)
        if trial % 3 == 2:  # from time to time, roll some tenants back to earlier states
            for i in rng.sample(range(tenants), 3):
                query(db_url, f"DROP SCHEMA IF EXISTS shop_s{i:03d} CASCADE")
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0, rerun.stderr
    for i in range(tenants):
        assert version(db_url, f"shop_s{i:03d}") == [HEAD]
    _check_consistent(db_url, tenants)
    wait_no_advisory_locks(db_url)
