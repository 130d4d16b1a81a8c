"""``fleet init`` and the embedded PostgreSQL, as a user runs them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import (
    Project,
    copy_example,
    private_tmp,
    run,
    schemas,
    tables,
    version,
)

pytestmark = pytest.mark.slow

REVISION = '''\
"""create items"""
import sqlalchemy as sa
from alembic import op

revision = "2000bbbb0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("items")
'''


def test_init_writes_a_working_project(tmp_path: Path, db_url: str) -> None:
    env = {"DATABASE_URI": db_url}
    assert run(["fleet", "init"], cwd=tmp_path, env=env).returncode == 0
    again = run(["fleet", "init"], cwd=tmp_path, env=env)
    assert again.returncode == 2 and "already exists" in again.stderr

    added = run(["fleet", "init", "--service", "billing", "services/billing"], cwd=tmp_path,
                env=env)
    assert added.returncode == 0, added.stderr
    env_py = (tmp_path / "services/billing/migrations/env.py").read_text()
    assert "from alembic_fleet.env import run_migrations" in env_py
    assert '[services.billing]\npath = "services/billing"\nschema = "billing_{tenant}"' in (
        tmp_path / "fleet.toml").read_text()

    # An empty history is reported, then a revision written with plain alembic migrates.
    (tmp_path / "services/billing/migrations/versions/2000bbbb0001_items.py").write_text(REVISION)
    result = run(["fleet", "migrate"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert version(db_url, "billing_default") == ["2000bbbb0001"]

    # The new service folder works with plain alembic, from inside it.
    current = run(["alembic", "current"], cwd=tmp_path / "services/billing",
                  env={**env, "ALEMBIC_SCHEMA": "billing_default"})
    assert current.returncode == 0 and "2000bbbb0001" in current.stdout

    # -C DIR runs as if started there.
    status = run(["fleet", "-C", str(tmp_path), "status"], cwd=Path("/"), env=env)
    assert status.returncode == 0, status.stderr


def test_init_adds_a_service_to_a_pyproject_and_refuses_bad_names(tmp_path: Path,
                                                                    db_url: str) -> None:
    env = {"DATABASE_URI": db_url}
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "shop"  # the app\n\n[tool.fleet]\n'
                         'database = "${DATABASE_URI}"\ntenants = ["acme"]\n')
    before = pyproject.read_text()
    bad = run(["fleet", "init", "--service", 'we"ird', "x", "--schema", "ok_{tenant}"],
              cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "invalid service name" in bad.stderr
    assert pyproject.read_text() == before and not (tmp_path / "x").exists()
    added = run(["fleet", "init", "--service", "billing", "billing"], cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    text = pyproject.read_text()
    assert text.startswith(before)  # comments and layout kept
    assert '[tool.fleet.services.billing]\npath = "billing"' in text
    (tmp_path / "billing/migrations/versions/2000bbbb0001_items.py").write_text(REVISION)
    result = run(["fleet", "migrate"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert version(db_url, "billing_acme") == ["2000bbbb0001"]


def test_reset_and_db_refuse_a_configured_database(example: Project) -> None:
    for args in (["reset", "--yes"], ["db", "url"], ["db", "stop"]):
        result = example.fleet(*args)
        assert result.returncode == 2, result.stderr
        assert "embedded" in result.stderr
    assert example.fleet("status").returncode == 3  # the database is still there


@pytest.mark.skipif(os.environ.get("FLEET_SKIP_EMBEDDED") == "1",
                    reason="FLEET_SKIP_EMBEDDED=1")
def test_embedded_server_lifecycle() -> None:
    """No URL anywhere: fleet starts its own PostgreSQL under .fleet/, reuses it, and
    'db stop' / 'reset' manage it."""
    folder = private_tmp("fleet-test-embedded-")
    root = folder / "elevaite"
    copy_example(root)
    try:
        migrate = run(["fleet", "migrate"], cwd=root, env={})
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert (root / ".fleet" / "pgdata" / "PG_VERSION").exists()
        assert (root / ".fleet" / ".gitignore").read_text() == "*\n"

        url = run(["fleet", "db", "url"], cwd=root, env={})
        assert url.returncode == 0 and url.stdout.startswith("postgresql://")
        main = url.stdout.strip()
        assert version(main, "auth_default") and schemas(main, "workflow_%")
        ingestion = run(["fleet", "db", "url", "--database", "ingestion"], cwd=root, env={})
        assert version(ingestion.stdout.strip(), "public") == ["c34d3f5c6b84"]

        status = run(["fleet", "status"], cwd=root, env={})
        assert status.returncode == 0 and "embedded" not in status.stderr

        psql = run(["fleet", "db", "psql", "-Atc", "select 40 + 2"], cwd=root, env={})
        assert psql.returncode == 0 and psql.stdout.strip() == "42"

        assert run(["fleet", "db", "stop"], cwd=root, env={}).returncode == 0
        # The next command starts it again with the data kept.
        assert run(["fleet", "status"], cwd=root, env={}).returncode == 0

        refused = run(["fleet", "reset"], cwd=root, env={})
        assert refused.returncode == 2 and "--yes" in refused.stderr
        reset = run(["fleet", "reset", "--yes"], cwd=root, env={})
        assert reset.returncode == 0
        assert not (root / ".fleet" / "pgdata").exists()
    finally:
        run(["fleet", "db", "stop"], cwd=root, env={})
        shutil.rmtree(folder, ignore_errors=True)


def _first_line(path: Path) -> str:
    try:
        return path.read_text().split("\n", 1)[0]
    except OSError:
        return ""


KILL_POINTS = {
    # The data folder made, initdb not done with it: PG_VERSION may or may not be there.
    "folder made": lambda data: data.exists(),
    # initdb's single-user backend at work: its postmaster.pid holds a negative pid.
    "initdb": lambda data: _first_line(data / "postmaster.pid").startswith("-"),
    # The server itself starting under pg_ctl -w.
    "server starting": lambda data: _first_line(data / "postmaster.pid").isdigit(),
}


@pytest.mark.skipif(os.environ.get("FLEET_SKIP_EMBEDDED") == "1",
                    reason="FLEET_SKIP_EMBEDDED=1")
def test_a_command_killed_during_the_first_start_does_not_break_the_next() -> None:
    """SIGKILL of a command (its whole process group, as a closed terminal or a killed pod)
    while the embedded server is being created: the next command recovers by itself (a
    half-made data folder with nothing running in it is made again; a stale lock file of a
    dead server is not fatal), never while a process may still use the data."""
    import signal
    import subprocess
    import time

    from tests.faults.conftest import start_fleet

    folder = private_tmp("fleet-test-embedded-kill-")
    root = folder / "elevaite"
    copy_example(root)
    data = root / ".fleet" / "pgdata"
    project = Project(root, {}, "", "")
    holder: subprocess.Popen[bytes] | None = None
    try:
        for point, reached in KILL_POINTS.items():
            assert run(["fleet", "reset", "--yes"], cwd=root, env={}).returncode == 0
            runner = start_fleet(project, "status")
            deadline = time.monotonic() + 20
            while not reached(data):
                assert runner.poll() is None, f"{point}: the command ended before the kill"
                assert time.monotonic() < deadline, f"{point}: never reached"
                time.sleep(0.002)
            os.killpg(runner.pid, signal.SIGKILL)
            runner.communicate(timeout=30)
            if point == "initdb":
                # A process still works in the half-made data folder (as a backend of a
                # server whose postmaster was killed would): nothing is deleted, the
                # command names it.
                holder = subprocess.Popen(["sleep", "60"], cwd=data)
                before = sorted(p.name for p in data.iterdir())
                refused = run(["fleet", "status"], cwd=root, env={})
                assert refused.returncode == 1, refused.stdout + refused.stderr
                assert f"sleep (pid {holder.pid})" in refused.stderr
                assert f"kill {holder.pid}" in refused.stderr
                assert sorted(p.name for p in data.iterdir()) == before
                holder.kill()
                holder.wait()
                holder = None
            status = run(["fleet", "status"], cwd=root, env={})
            assert status.returncode == 3, f"{point}: {status.stdout}{status.stderr}"
            assert "did not start" not in status.stderr

        # A complete data folder with data in it, and a stale postmaster.pid of a killed
        # single-user backend: the data is kept, the server starts.
        kept = run(["fleet", "db", "psql", "-c", "CREATE TABLE public.kept (i int)"], cwd=root,
                   env={})
        assert kept.returncode == 0, kept.stderr
        assert run(["fleet", "db", "stop"], cwd=root, env={}).returncode == 0
        owner = data.stat().st_uid
        single = subprocess.Popen(
            [str(EmbeddedServer(root / ".fleet").bin_path() / "postgres"), "--single",
             "-D", str(data), "postgres"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, user=owner if owner != os.getuid() else None)
        deadline = time.monotonic() + 20
        while not KILL_POINTS["initdb"](data):
            assert single.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        single.kill()
        single.wait()
        status = run(["fleet", "status"], cwd=root, env={})
        assert status.returncode == 3, status.stdout + status.stderr
        url = run(["fleet", "db", "url", "--database", "postgres"], cwd=root, env={})
        assert tables(url.stdout.strip(), "public") == {"kept"}
    finally:
        if holder is not None:
            holder.kill()
        run(["fleet", "db", "stop"], cwd=root, env={})
        shutil.rmtree(folder, ignore_errors=True)
