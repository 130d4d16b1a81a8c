"""Production rollouts: a canary wave, an error budget, a time budget, an application gate.

A run stopped by a budget starts no more targets, lets those in flight finish, reports the
rest as ``pending`` and says why; a rerun resumes. ``--deadline`` ends with exit 4.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project, query, version
from tests.integration.test_parallel import _service

pytestmark = pytest.mark.slow

FIRST = "7700aaaa0001"
SECOND = "7700aaaa0002"

REVISION = '''\
import os

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
    op.create_table("t{rev}", sa.Column("id", sa.Integer))
    if {down!r}:
        op.add_column("t7700aaaa0001", sa.Column("c{rev}", sa.Integer))
    op.execute(f"SELECT pg_sleep({{os.environ.get('FLEET_TEST_SLEEP', '0')}})")
    if schema in os.environ.get("FLEET_TEST_FAIL", "").split():
        raise RuntimeError("fails on purpose")


def downgrade():
    pass
'''


def _project(tmp_path: Path, db_url: str, tenants: int, revisions: int = 1) -> Project:
    root = tmp_path / "proj"
    files = {}
    for number in range(1, revisions + 1):
        rev = f"7700aaaa{number:04d}"
        down = f"7700aaaa{number - 1:04d}" if number > 1 else None
        files[f"{rev}.py"] = REVISION.format(rev=rev, down=down)
    _service(root, "svc", files)
    names = ", ".join(f'"t{i:02d}"' for i in range(tenants))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def _run(project: Project, *args: str, **env: str) -> tuple[int, dict]:
    result = project.fleet("migrate", "--json", *args, env=env)
    assert result.returncode in (0, 1, 4), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def _outcomes(payload: dict) -> dict[str, str]:
    return {t["tenant"]: t["outcome"] for t in payload["targets"]}


def test_a_failing_canary_stops_the_rollout(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, 6)
    code, payload = _run(project, "--canary", "2", "--jobs", "2", FLEET_TEST_FAIL="svc_t01")
    assert code == 1
    assert _outcomes(payload) == {"t00": "migrated", "t01": "failed", "t02": "pending",
                                  "t03": "pending", "t04": "pending", "t05": "pending"}
    assert payload["stopped"]["reason"] == "canary"
    assert payload["summary"]["pending"] == 4
    assert query(db_url, "SELECT outcome FROM fleet.runs") == [("stopped_canary",)]
    # Named canary tenants go first, whatever their place in the list.
    code, payload = _run(project, "--canary-tenant", "t04", FLEET_TEST_FAIL="svc_t04")
    assert code == 1
    assert _outcomes(payload)["t04"] == "failed"
    assert {_outcomes(payload)[t] for t in ("t01", "t02", "t03", "t05")} == {"pending"}
    code, payload = _run(project)  # the rerun resumes
    assert code == 0 and payload["summary"]["migrated"] == 5
    assert all(version(db_url, f"svc_t{i:02d}") == [FIRST] for i in range(6))


def test_a_successful_canary_wave_finishes_before_the_others_start(tmp_path: Path,
                                                                   db_url: str) -> None:
    project = _project(tmp_path, db_url, 5)
    code, payload = _run(project, "--canary", "2", "--jobs", "2", FLEET_TEST_SLEEP="0.5")
    assert code == 0 and payload["summary"]["migrated"] == 5
    rows = query(db_url, "SELECT tenant, extract(epoch FROM finished_at)::float8, seconds "
                 "FROM fleet.run_targets")
    canary_done = max(done for tenant, done, _ in rows if tenant in ("t00", "t01"))
    others_started = min(done - seconds for tenant, done, seconds in rows
                         if tenant not in ("t00", "t01"))
    assert others_started >= canary_done - 0.05


def test_an_error_budget_stops_starting_targets(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, 8)
    failing = "svc_t00 svc_t01 svc_t02 svc_t03"
    code, payload = _run(project, "--max-failures", "1", "--jobs", "1",
                         FLEET_TEST_FAIL=failing)
    assert code == 1
    outcomes = _outcomes(payload)
    assert [outcomes[f"t{i:02d}"] for i in range(8)] == ["failed", "failed"] + ["pending"] * 6
    assert payload["stopped"]["reason"] == "max_failures"
    assert "2 targets failed" in payload["stopped"]["detail"]
    code, payload = _run(project, "--max-failures", "10%", "--jobs", "1",
                         FLEET_TEST_FAIL=failing)
    assert code == 1 and list(_outcomes(payload).values()).count("failed") == 1
    code, payload = _run(project)  # fixed: the rerun resumes
    assert code == 0 and payload["summary"]["migrated"] == 8


def test_a_time_budget_stops_in_time_exits_4_and_the_rerun_resumes(tmp_path: Path,
                                                                   db_url: str) -> None:
    project = _project(tmp_path, db_url, 6)
    # History: the ledger learns that a target of this service takes about 2 s.
    code, _ = _run(project, "--tenant", "t00", "--tenant", "t01", FLEET_TEST_SLEEP="2")
    assert code == 0
    # 4 targets of 2 s each cannot fit in 8 s, and at least one fits even on a loaded
    # machine that takes seconds to start (5 s failed there: nothing fitted).
    code, payload = _run(project, "--deadline", "8", "--jobs", "1", FLEET_TEST_SLEEP="2")
    assert code == 4, payload
    outcomes = [_outcomes(payload)[f"t{i:02d}"] for i in range(2, 6)]
    assert outcomes.count("migrated") >= 1 and outcomes.count("pending") >= 1
    assert set(outcomes) == {"migrated", "pending"}
    assert outcomes == sorted(outcomes)  # migrated ones first: none started late
    assert payload["stopped"]["reason"] == "deadline"
    assert query(db_url, "SELECT outcome FROM fleet.runs ORDER BY started_at DESC LIMIT 1"
                 ) == [("stopped_deadline",)]
    code, payload = _run(project, FLEET_TEST_SLEEP="0")
    assert code == 0 and payload["summary"]["migrated"] == outcomes.count("pending")
    # The chart's variable works the same, and a bad value is a usage error.
    assert project.fleet("migrate", env={"FLEET_DEADLINE": "soon"}).returncode == 2


def test_an_application_waits_for_its_revision(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, 3, revisions=2)
    assert project.fleet("migrate", "--to", FIRST, "svc").returncode == 0
    assert project.fleet("migrate", "--tenant", "t00").returncode == 0
    status = json.loads(project.fleet("status", "--json").stdout)
    assert status["services"]["svc"] == {"head": [SECOND], "lowest": [FIRST],
                                         "highest": [SECOND], "targets": 3, "at_head": 1}
    waited = project.fleet("wait", "--revision", f"svc={FIRST}", "--json", "--timeout", "5")
    assert waited.returncode == 0 and json.loads(waited.stdout)["ready"] is True
    waited = project.fleet("wait", "--revision", "svc=head", "--json", "--timeout", "1")
    assert waited.returncode == 3
    short = json.loads(waited.stdout)["short"]
    assert {t["tenant"] for t in short} == {"t01", "t02"}
    assert project.fleet("wait", "--revision", "svc").returncode == 2
    # The application's start-up check in its "at least" form.
    check = textwrap.dedent(f"""
        import sys
        from alembic_fleet.startup_check import SchemaNotAtHead, require_head
        held = require_head(service="svc", at_least="{FIRST}")
        assert set(held) == {{"svc_t00", "svc_t01", "svc_t02"}}, held
        try:
            require_head(service="svc")
        except SchemaNotAtHead as exc:
            print(len(exc.failures))
    """)
    done = subprocess.run([sys.executable, "-c", check], cwd=project.root, text=True,
                          env={**project.env, "PATH": "/usr/bin:/bin"}, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_a_locked_target_comes_back_after_the_others(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, 3, revisions=2)
    assert project.fleet("migrate", "--to", FIRST, "svc").returncode == 0
    with psycopg.connect(db_url) as holder:
        holder.execute(f"LOCK TABLE svc_t00.t{FIRST}")  # the application holds it
        release = threading.Timer(4.0, holder.rollback)
        release.start()
        started = time.monotonic()
        code, payload = _run(project, "--jobs", "1", "--lock-timeout", "0.5",
                             "--retries", "6")
        release.join()
    assert code == 0, payload
    targets = {t["tenant"]: t for t in payload["targets"]}
    assert targets["t00"]["outcome"] == "migrated" and targets["t00"]["attempts"] >= 2
    finished = dict(query(db_url, "SELECT tenant, finished_at FROM fleet.run_targets "
                          "WHERE outcome = 'migrated'"))
    # One worker: the others went first instead of waiting behind the locked one.
    assert finished["t01"] < finished["t00"] and finished["t02"] < finished["t00"]
    assert targets["t01"]["seconds"] < 2 and time.monotonic() - started < 60
