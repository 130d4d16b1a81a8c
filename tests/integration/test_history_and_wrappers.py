"""Reading the scripts (history, heads), the example's wrapper scripts, JSON of --sql and
downgrade, and transaction_per_migration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Project, query, run, schemas, version
from tests.integration.test_failures import _project

pytestmark = pytest.mark.slow


def test_history_and_heads_read_only_the_scripts(example: Project) -> None:
    # An unreachable database does not matter: nothing connects.
    env = {"DATABASE_URI": "postgresql://nobody:pw@127.0.0.1:9/x"}
    history = example.fleet("history", "auth", env=env)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[1].startswith("a15f8c0e3d96") and "head" in lines[1]
    assert lines[-1].startswith("a1003f6c2b81") and "<base>" in lines[-1]

    as_json = json.loads(example.fleet("history", "workflow", "--json", env=env).stdout)
    assert as_json["heads"] == ["b25b8d3f6a85"]
    assert [r["revision"] for r in as_json["revisions"]][-1] == "b2017a4e9c30"
    assert len(as_json["revisions"]) == 6

    heads = json.loads(example.fleet("heads", "--json", env=env).stdout)
    assert heads == {"heads": {"auth": ["a15f8c0e3d96"], "workflow": ["b25b8d3f6a85"],
                               "ingestion": ["c34d3f5c6b84"]}}
    assert example.fleet("history", "nope", env=env).returncode == 2


def test_wrapper_scripts_call_fleet(example: Project) -> None:
    migrate = run(["bash", "scripts/migrate.sh"], cwd=example.root,
                  env={**example.env, "TENANTS": "toshiba"})
    assert migrate.returncode == 0, migrate.stderr
    assert schemas(example.db_url, "auth_%") == {"auth_toshiba"}
    status = run(["bash", "scripts/migrate-status.sh"], cwd=example.root,
                 env={**example.env, "TENANTS": "toshiba"})
    assert status.returncode == 0, status.stdout + status.stderr
    package = json.loads((example.root / "package.json").read_text())
    assert {"migrate", "migrate:auth", "migrate:workflow", "migrate:ingestion",
            "migrate:status"} <= set(package["scripts"])


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_scripts(example: Project) -> None:
    result = run(["npm", "run", "--silent", "migrate:auth"], cwd=example.root, env=example.env)
    assert result.returncode == 0, result.stderr
    assert schemas(example.db_url, "auth_%") == {"auth_default", "auth_toshiba", "auth_iopex"}


def test_sql_and_downgrade_json(example: Project) -> None:
    sql = json.loads(example.fleet("migrate", "ingestion", "--sql", "--json").stdout)
    assert sql["summary"]["targets"] == 1
    entry = sql["targets"][0]
    assert entry["schema"] == "public" and entry["tenant"] is None
    assert "CREATE TABLE sources" in entry["sql"] and entry["to"] == ["c34d3f5c6b84"]

    assert example.fleet("migrate", "ingestion").returncode == 0
    down = example.fleet("downgrade", "ingestion", "-1", "--yes", "--json")
    assert down.returncode == 0, down.stderr
    payload = json.loads(down.stdout)["targets"][0]
    assert payload["outcome"] == "migrated"
    assert payload["from"] == ["c34d3f5c6b84"] and payload["to"] == ["c33c0e2b4a73"]
    assert version(example.ingestion_url, "public") == ["c33c0e2b4a73"]


def test_transaction_per_migration_keeps_applied_revisions(tmp_path: Path, db_url: str) -> None:
    """With transaction_per_migration=True each revision commits alone: a failure keeps the
    revisions before it, and the search_path does not leak to the next target."""
    project = _project(tmp_path, db_url)
    env_py = project.root / "billing" / "migrations" / "env.py"
    env_py.write_text("from alembic_fleet.env import run_migrations\n\n"
                      "run_migrations(transaction_per_migration=True)\n")
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1
    outcome = {t["tenant"]: t["outcome"] for t in json.loads(result.stdout)["targets"]}
    assert outcome == {"good": "migrated", "broken": "failed", "other": "migrated"}
    assert version(db_url, "billing_broken") == ["1000aaaa0001"]
    assert version(db_url, "billing_good") == ["1000aaaa0002"]
    assert version(db_url, "billing_other") == ["1000aaaa0002"]


def test_downgrade_waits_no_longer_than_the_lock_timeout(example: Project) -> None:
    """A downgrade has a migration's manners: the application never queues behind its DDL
    for longer than lock_timeout, and it takes the target's lock."""
    import psycopg

    toml = example.root / "fleet.toml"
    toml.write_text("lock_timeout = 1\nretries = 0\n" + toml.read_text())
    assert example.fleet("migrate").returncode == 0
    reader = psycopg.connect(example.db_url)
    reader.execute("SELECT count(*) FROM auth_default.users")  # holds ACCESS SHARE
    try:
        down = example.fleet("downgrade", "auth", "--tenant", "default", "-1", "--yes")
    finally:
        reader.rollback()
        reader.close()
    assert down.returncode == 1, down.stderr
    assert "lock" in (down.stdout + down.stderr).lower()
    rows = query(example.db_url, "SELECT version_num FROM auth_default.alembic_version")
    assert rows == [("a15f8c0e3d96",)]
