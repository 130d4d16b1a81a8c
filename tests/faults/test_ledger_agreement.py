"""The ledger agrees with the version tables, whatever is killed when.

The worker writes a target's ledger rows inside the target's own transaction, so after any
kill: every revision a schema's version row says was applied has its checksum row, no
checksum row exists for a revision that was not applied, and a target whose migration
committed in a run has that run's target row with the revision it reached.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.conftest import Project, query, version
from tests.faults.conftest import (
    HEAD,
    REVISIONS,
    kill_runner_or_a_worker,
    shop_project,
    start_fleet,
)

pytestmark = pytest.mark.slow

ORDER = list(REVISIONS)
"""The shop project's revisions, oldest first (a straight line)."""


def _ledger_exists(db_url: str) -> bool:
    return query(db_url, "SELECT to_regclass('fleet.run_targets') IS NOT NULL")[0][0]


def _assert_ledger_agrees(db_url: str, tenants: int) -> None:
    if not _ledger_exists(db_url):  # killed before the ledger was made: nothing migrated
        assert all(not version_exists(db_url, i) for i in range(tenants))
        return
    applied: dict[str, set[str]] = {}
    for schema, revision in query(db_url, "SELECT schema_name, revision FROM "
                                  "fleet.applied_revisions WHERE service = 'shop'"):
        applied.setdefault(schema, set()).add(revision)
    latest = {schema: (outcome, to_revs) for schema, outcome, to_revs in query(db_url, """
        SELECT DISTINCT ON (schema_name) schema_name, outcome, to_revisions
        FROM fleet.run_targets WHERE service = 'shop' AND outcome <> 'failed'
        ORDER BY schema_name, finished_at DESC""")}
    for i in range(tenants):
        schema = f"shop_s{i:03d}"
        current = version(db_url, schema) if version_exists(db_url, i) else []
        expected = set(ORDER[:ORDER.index(current[0]) + 1]) if current else set()
        assert applied.get(schema, set()) == expected, (schema, current)
        if current:
            # At head: migrated. Short of it (revisions committed one by one, then a kill):
            # the run had not migrated it, it was running.
            outcome = "migrated" if current == [ORDER[-1]] else "running"
            assert latest[schema] == (outcome, current), (schema, latest.get(schema))
        else:
            assert schema not in latest, schema


def kill_and_check(project: Project, db_url: str, tenants: int, victim: str,
                   rng: random.Random, *, trials: int, latest: float, restarts: float) -> int:
    """``trials`` times: start a migrate, kill the runner or one of its workers up to
    ``latest`` seconds in, check that the ledger agrees with the version tables, and (with
    probability ``restarts``) start three tenants over, as a restore would. Returns how many
    processes were killed."""
    killed = 0
    for _trial in range(trials):
        runner = start_fleet(project, "migrate", "--jobs", "2", "--json")
        time.sleep(rng.uniform(0.4, latest))
        killed += kill_runner_or_a_worker(runner, victim)
        _assert_ledger_agrees(db_url, tenants)
        if rng.random() < restarts:
            for i in rng.sample(range(tenants), 3):
                query(db_url, f"DROP SCHEMA IF EXISTS shop_s{i:03d} CASCADE")
                if not _ledger_exists(db_url):
                    continue
                query(db_url, "DELETE FROM fleet.applied_revisions WHERE schema_name = %s",
                      (f"shop_s{i:03d}",))
                query(db_url, "DELETE FROM fleet.run_targets WHERE schema_name = %s",
                      (f"shop_s{i:03d}",))
    return killed


def version_exists(db_url: str, i: int) -> bool:
    return query(db_url, "SELECT to_regclass(%s) IS NOT NULL",
                 (f"shop_s{i:03d}.alembic_version",))[0][0]


@pytest.mark.parametrize("victim", ["worker", "runner", "runner-per-revision"])
def test_ledger_agrees_with_version_tables_after_random_kills(tmp_path: Path, db_url: str,
                                                              victim: str) -> None:
    rng = random.Random(f"ledger-{victim}")
    tenants = 16
    project = shop_project(tmp_path / "p", db_url, tenants, sleep=0.05)
    if victim.endswith("per-revision"):  # each revision commits on its own
        (project.root / "shop" / "migrations" / "env.py").write_text(
            "from alembic_fleet.env import run_migrations\n\n"
            "run_migrations(transaction_per_migration=True)\n")
    assert kill_and_check(project, db_url, tenants, victim, rng, trials=6, latest=2.5,
                          restarts=0.5) > 0
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert all(version(db_url, f"shop_s{i:03d}") == [HEAD] for i in range(tenants))
    _assert_ledger_agrees(db_url, tenants)


def test_ledger_agrees_after_a_server_restart(tmp_path: Path) -> None:
    """The server stops and starts in the middle of a run: what committed is recorded,
    nothing more (the first round lost a sixth of the rows this way)."""
    import shutil

    import psycopg

    from alembic_fleet.embedded import EmbeddedServer
    from tests.conftest import private_tmp

    folder = private_tmp("fleet-test-ledger-restart-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE restart")
        url = server.url("restart")
        tenants = 20
        project = shop_project(tmp_path / "p", url, tenants, sleep=0.1)
        runner = start_fleet(project, "migrate", "--json", "--jobs", "2", "--retries", "5")
        time.sleep(2.0)
        server.stop()
        time.sleep(1.0)
        server.start()
        runner.communicate(timeout=300)
        _assert_ledger_agrees(url, tenants)
        rerun = project.fleet("migrate")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert all(version(url, f"shop_s{i:03d}") == [HEAD] for i in range(tenants))
        _assert_ledger_agrees(url, tenants)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
