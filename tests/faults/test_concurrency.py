"""Several runners at once, and runners killed at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import psycopg
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


@pytest.mark.parametrize("how", ["tenants add", "migrate"])
def test_a_tenant_removed_while_a_run_plans_is_not_made_again(tmp_path: Path, db_url: str,
                                                              how: str) -> None:
    """'fleet tenants remove' between the moment a run read the tenants and the moment its
    run began was not seen by that run: it created the tenant's schemas after the removal
    (an orphan, the tenant gone from fleet.toml, both commands reporting success). The
    removal is compared with when the run read its tenant list."""
    project = shop_project(tmp_path / "p", db_url, 1)
    first = project.root / "shop" / "migrations" / "versions" / "8000aaaa0001.py"
    # Reading the revisions takes 4 s: a run that loads them plans slowly.
    first.write_text("import time\ntime.sleep(4)\n" + first.read_text())
    env = {"FLEET_CACHE_DIR": ""}
    if how == "migrate":
        assert project.fleet("tenants", "add", "x", "--no-migrate", env=env).returncode == 0
        runner = start_fleet(project, "migrate", "--json", env=env)
    else:
        runner = start_fleet(project, "tenants", "add", "x", "--json", env=env)
    time.sleep(2.5)  # the runner has read its tenants and is reading the revisions
    removed = project.fleet("tenants", "remove", "x", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err + out
    configured = '"x"' in (project.root / "fleet.toml").read_text()
    made = query(db_url, "SELECT nspname FROM pg_namespace WHERE nspname = 'shop_x'") != []
    # Never an orphan, never a lost tenant: a remove that read its configuration before
    # the add recorded the name dropped the new tenant's schema as an orphan.
    assert configured == made, (configured, made, out[-1500:], removed.stdout)
    if how == "tenants add":
        # 'tenants add' records its names once planned and checked, just before it runs:
        # a remove while it plans finds nothing to remove, and the tenant is then added.
        return
    assert not configured
    payload = json.loads(out)
    targets = (payload.get("migration") or payload)["targets"]
    [mine] = [t for t in targets if t["schema"] == "shop_x"]
    assert mine["outcome"] == "skipped" and "removed" in mine["note"], mine


def test_a_target_killed_between_revisions_committed_one_by_one_is_not_recorded_migrated(
        tmp_path: Path, db_url: str) -> None:
    """With one transaction per revision, the target's ledger row rides on each revision's
    commit: a runner killed between two revisions left it 'migrated' (to the revision it
    had reached), and its run counted it as migrated. Short of its destination it is
    'running' until the last revision commits."""
    project = shop_project(tmp_path / "p", db_url, 1)
    (project.root / "shop" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\n"
        "run_migrations(transaction_per_migration=True)\n")
    last = project.root / "shop" / "migrations" / "versions" / "8000aaaa0004.py"
    quick = last.read_text()
    last.write_text(quick.replace("def upgrade():\n",
                                  "def upgrade():\n    op.execute('SELECT pg_sleep(30)')\n"))
    runner = start_fleet(project, "migrate")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = query(db_url, "SELECT to_revisions FROM fleet.run_targets") if query(
            db_url, "SELECT to_regclass('fleet.run_targets')")[0][0] else []
        if rows and list(rows[0][0]) == ["8000aaaa0003"]:
            break
        time.sleep(0.1)
    else:
        kill_group(runner)
        raise AssertionError("the third revision never committed")
    kill_group(runner)
    runner.wait(timeout=30)
    assert version(db_url, "shop_s000") == ["8000aaaa0003"]
    [(outcome, reached)] = query(db_url, "SELECT outcome, to_revisions FROM fleet.run_targets")
    assert outcome == "running" and list(reached) == ["8000aaaa0003"], outcome
    last.write_text(quick)  # never applied: no change of an applied revision
    assert project.fleet("migrate").returncode == 0  # and a rerun finishes it
    assert version(db_url, "shop_s000") == [HEAD]


def test_a_killed_run_counts_what_it_migrated_in_the_log(tmp_path: Path, db_url: str) -> None:
    """A run killed (SIGKILL, or a second signal during the graceful stop) never closes its
    run row: 'fleet log' said 'migrated 0, interrupted' while 'fleet log --run ID' listed
    the targets it had migrated. An unclosed run is counted from its target rows."""
    project = shop_project(tmp_path / "p", db_url, 8, sleep=0.4)
    runner = start_fleet(project, "migrate", "--jobs", "1")
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 2:
        if query(db_url, "SELECT to_regclass('fleet.run_targets')")[0][0]:
            done = query(db_url, "SELECT count(*) FROM fleet.run_targets "
                         "WHERE outcome = 'migrated'")[0][0]
        time.sleep(0.05)
    kill_group(runner)
    runner.wait(timeout=30)
    migrated = query(db_url, "SELECT count(*) FROM fleet.run_targets "
                     "WHERE outcome = 'migrated'")[0][0]
    assert migrated >= 2
    [run] = json.loads(project.fleet("log", "--json").stdout)["runs"]
    assert run["outcome"] == "interrupted" and run["migrated"] == migrated, run


def test_a_worker_killed_between_revisions_committed_one_by_one_is_failed_where_it_is(
        tmp_path: Path, db_url: str) -> None:
    """The parent settles a dead worker's target from its ledger row: with one transaction
    per revision, a row short of the destination (now 'running') is a target stopped part
    way, reported failed where it stands, never migrated nor left unsaid."""
    from tests.faults.conftest import children

    project = shop_project(tmp_path / "p", db_url, 2)
    (project.root / "shop" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\n"
        "run_migrations(transaction_per_migration=True)\n")
    last = project.root / "shop" / "migrations" / "versions" / "8000aaaa0004.py"
    last.write_text(last.read_text().replace(
        "def upgrade():\n", "def upgrade():\n    op.execute('SELECT pg_sleep(30)')\n"))
    runner = start_fleet(project, "migrate", "--jobs", "2", "--json")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if query(db_url, "SELECT to_regclass('fleet.run_targets')")[0][0] and query(
                db_url, "SELECT count(*) FROM fleet.run_targets "
                "WHERE to_revisions = ARRAY['8000aaaa0003']")[0][0] == 2:
            break
        time.sleep(0.1)
    for pid in children(runner.pid):  # both workers, each inside its last revision
        os.kill(pid, signal.SIGKILL)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 1, err
    for target in json.loads(out)["targets"]:
        assert target["outcome"] == "failed", target
        assert target["to"] == ["8000aaaa0003"], target
        assert "8000aaaa0003 committed" in target["error"], target
        assert version(db_url, target["schema"]) == ["8000aaaa0003"]


def test_a_tenant_added_again_while_its_removal_waits_keeps_its_schemas(
        tmp_path: Path, db_url: str) -> None:
    """'fleet tenants remove x' forgets x, then drops each schema under its lock; a
    'fleet tenants add x' in between recorded x again, and the drop went ahead: x was
    configured with no schemas, both commands reporting success. Under the lock, the drop
    reads the tenant source again and keeps what was added back, saying so."""
    from alembic_fleet.execution.locking import lock_key

    project = shop_project(tmp_path / "p", db_url, 1)
    assert project.fleet("tenants", "add", "x").returncode == 0
    fleet_toml = project.root / "fleet.toml"
    holder = psycopg.connect(project.db_url, autocommit=True)
    try:  # a migration holds the target's lock: the removal waits for it
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("shop", "shop_x"),))
        remover = start_fleet(project, "tenants", "remove", "x", "--yes")
        deadline = time.monotonic() + 60
        while '"x"' in fleet_toml.read_text():  # forgotten: now it waits for the lock
            assert time.monotonic() < deadline and remover.poll() is None
            time.sleep(0.05)
        added = project.fleet("tenants", "add", "x", "--no-migrate")
        assert added.returncode == 0, added.stderr
    finally:
        holder.close()
    out, err = remover.communicate(timeout=120)
    assert remover.returncode == 0, err
    assert '"x"' in fleet_toml.read_text()
    assert version(db_url, "shop_x") == [HEAD]  # the tenant added back keeps its schema
    assert "kept" in out + err, out + err
    status = json.loads(project.fleet("status", "--json").stdout)
    assert {t["schema"]: t["state"] for t in status["targets"]}["shop_x"] == "at_head", status


def test_a_tenant_added_while_its_removal_drops_gets_its_schemas(tmp_path: Path,
                                                                 db_url: str) -> None:
    """'fleet tenants add y' read its tenants while 'fleet tenants remove y' was dropping
    y's schemas, then recorded y: its own run skipped y's schemas as 'removed after this
    run started', leaving y configured with no schemas. An add that records a name wants
    its schemas whenever the removal was."""
    from alembic_fleet.execution.locking import lock_key

    project = shop_project(tmp_path / "p", db_url, 1)
    env = {"FLEET_CACHE_DIR": ""}
    assert project.fleet("tenants", "add", "y", env=env).returncode == 0
    first = project.root / "shop" / "migrations" / "versions" / "8000aaaa0001.py"
    first.write_text("import time\ntime.sleep(4)\n" + first.read_text())  # slow planning
    fleet_toml = project.root / "fleet.toml"
    holder = psycopg.connect(project.db_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("shop", "shop_y"),))
        remover = start_fleet(project, "tenants", "remove", "y", "--yes", env=env)
        deadline = time.monotonic() + 60
        while '"y"' in fleet_toml.read_text():  # forgotten, waiting for the lock
            assert time.monotonic() < deadline and remover.poll() is None
            time.sleep(0.05)
        adder = start_fleet(project, "tenants", "add", "y", "--json", env=env)
        time.sleep(1.5)  # the add has read its tenants (y absent) and is planning
    finally:
        holder.close()  # the removal drops shop_y now, while the add plans
    _, removed_err = remover.communicate(timeout=120)
    assert remover.returncode == 0, removed_err
    out, err = adder.communicate(timeout=120)
    assert adder.returncode == 0, err
    assert '"y"' in fleet_toml.read_text()
    assert version(db_url, "shop_y") == [HEAD], out
