"""``fleet migrate`` and ``fleet status`` on the example platform, against real PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project, ddl_count, query, schemas, tables, version

AUTH_HEAD = "a15f8c0e3d96"
WORKFLOW_HEAD = "b25b8d3f6a85"
INGESTION_HEAD = "c34d3f5c6b84"
TENANTS = ("default", "toshiba", "iopex")


def test_migrate_all_brings_every_target_to_head(example: Project) -> None:
    before = example.fleet("status", "--json")
    assert before.returncode == 3, before.stderr
    states = {(t["service"], t["tenant"]): t["state"] for t in json.loads(before.stdout)["targets"]}
    assert set(states.values()) == {"missing"}
    assert len(states) == 7

    result = example.fleet("migrate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 migrated" in result.stdout

    for tenant in TENANTS:
        assert version(example.db_url, f"auth_{tenant}") == [AUTH_HEAD]
        assert version(example.db_url, f"workflow_{tenant}") == [WORKFLOW_HEAD]
        assert {"users", "organizations", "roles", "api_keys"} <= tables(
            example.db_url, f"auth_{tenant}")
        assert "workflows" in tables(example.db_url, f"workflow_{tenant}")
    # The single-schema service lives in its own database, in "public".
    assert version(example.ingestion_url, "public") == [INGESTION_HEAD]
    assert "documents" in tables(example.ingestion_url, "public")
    assert not schemas(example.ingestion_url, "auth_%")
    assert "documents" not in tables(example.db_url, "public")

    after = example.fleet("status", "--json")
    assert after.returncode == 0
    payload = json.loads(after.stdout)
    assert payload["summary"] == {"targets": 7, "at_head": 7, "behind": 0, "missing": 0,
                                  "ahead": 0, "failed": 0, "orphan": 0, "unreachable": 0}
    auth_default = next(t for t in payload["targets"] if t["schema"] == "auth_default")
    assert auth_default == {
        "service": "auth", "tenant": "default", "schema": "auth_default",
        "database": example.db_url, "current": [AUTH_HEAD], "head": [AUTH_HEAD],
        "pending": 0, "state": "at_head",
    }
    ingestion = next(t for t in payload["targets"] if t["service"] == "ingestion")
    assert ingestion["tenant"] is None


@pytest.mark.slow
def test_second_run_executes_no_ddl(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    ddl_main, ddl_ingestion = ddl_count(example.db_url), ddl_count(example.ingestion_url)
    assert ddl_main > 0 and ddl_ingestion > 0

    again = example.fleet("migrate", "--json")
    assert again.returncode == 0, again.stderr
    payload = json.loads(again.stdout)
    assert {t["outcome"] for t in payload["targets"]} == {"skipped"}
    assert payload["summary"]["skipped"] == 7 and payload["summary"]["migrated"] == 0
    text = example.fleet("migrate")
    assert "all 7 target(s) skipped" in text.stdout
    assert ddl_count(example.db_url) == ddl_main
    assert ddl_count(example.ingestion_url) == ddl_ingestion


@pytest.mark.slow
def test_migrate_one_service_and_one_tenant(example: Project) -> None:
    result = example.fleet("migrate", "auth", "--tenant", "toshiba")
    assert result.returncode == 0, result.stderr
    assert schemas(example.db_url, "auth_%") == {"auth_toshiba"}
    assert not schemas(example.db_url, "workflow_%")
    assert tables(example.ingestion_url, "public") == {"fleet_test_ddl_log"}

    status = example.fleet("status", "auth", "--json")
    assert status.returncode == 3
    states = {t["tenant"]: t["state"] for t in json.loads(status.stdout)["targets"]}
    assert states == {"default": "missing", "toshiba": "at_head", "iopex": "missing"}

    assert example.fleet("migrate", "workflow").returncode == 0
    assert schemas(example.db_url, "workflow_%") == {f"workflow_{t}" for t in TENANTS}
    assert example.fleet("status", "workflow").returncode == 0


@pytest.mark.slow
def test_new_tenant_is_created_and_others_untouched(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    logged = ddl_count(example.db_url)
    result = example.fleet("migrate", "--json", env={"TENANTS": "default toshiba iopex newco"})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    migrated = {t["schema"] for t in payload["targets"] if t["outcome"] == "migrated"}
    assert migrated == {"auth_newco", "workflow_newco"}
    assert version(example.db_url, "auth_newco") == [AUTH_HEAD]
    new_ddl = query(example.db_url,
                    "SELECT DISTINCT schema_name FROM public.fleet_test_ddl_log WHERE id > %s",
                    (logged,))
    assert {r[0] for r in new_ddl} <= {"auth_newco", "workflow_newco", None}
    # A tenant not in the list is refused with a hint, and nothing runs.
    refused = example.fleet("migrate", "--tenant", "ghost")
    assert refused.returncode == 2
    assert "not configured" in refused.stderr and "fleet tenants add ghost" in refused.stderr


@pytest.mark.slow
def test_to_revision_then_downgrade(example: Project) -> None:
    first = "a1003f6c2b81"
    third = "a12b5d8e0f63"
    result = example.fleet("migrate", "auth", "--tenant", "default", "--to", third)
    assert result.returncode == 0, result.stderr
    assert version(example.db_url, "auth_default") == [third]
    status = json.loads(example.fleet("status", "auth", "--tenant", "default", "--json").stdout)
    assert status["targets"][0]["state"] == "behind"
    assert status["targets"][0]["pending"] == 3

    # --to with several services is ambiguous.
    assert example.fleet("migrate", "--to", third).returncode == 2

    # Not interactive and no --yes: refused, nothing changes.
    refused = example.fleet("downgrade", "auth", first, "--tenant", "default")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert version(example.db_url, "auth_default") == [third]

    down = example.fleet("downgrade", "auth", "-1", "--tenant", "default", "--yes")
    assert down.returncode == 0, down.stderr
    assert version(example.db_url, "auth_default") == ["a11c7e2d9a42"]
    down = example.fleet("downgrade", "auth", "base", "--tenant", "default", "--yes")
    assert down.returncode == 0, down.stderr
    assert version(example.db_url, "auth_default") == []
    assert tables(example.db_url, "auth_default") == {"alembic_version"}

    assert example.fleet("migrate", "auth").returncode == 0
    assert version(example.db_url, "auth_default") == [AUTH_HEAD]


def test_dry_run_prints_the_plan_and_executes_nothing(example: Project) -> None:
    result = example.fleet("migrate", "--dry-run")
    assert result.returncode == 0
    assert "auth_toshiba" in result.stdout and "upgrade" in result.stdout
    assert "nothing was executed" in result.stdout
    assert not schemas(example.db_url, "auth_%")
    assert ddl_count(example.db_url) == 0


def test_a_version_table_holding_a_revision_and_its_ancestor_is_failed_not_at_head(
        example: Project) -> None:
    """Alembic refuses such a table ("overlaps with other requested revisions"): status
    must not call it at head, and migrate must not pass over it in silence."""
    assert example.fleet("migrate").returncode == 0
    ancestor = "a14d2f6b8c35"
    query(example.db_url, f"INSERT INTO auth_toshiba.alembic_version VALUES ('{ancestor}')")
    status = example.fleet("status", "--json")
    assert status.returncode == 3, status.stdout + status.stderr
    [target] = [t for t in json.loads(status.stdout)["targets"]
                if t["schema"] == "auth_toshiba"]
    assert target["state"] == "failed" and sorted(target["current"]) == sorted(
        [ancestor, AUTH_HEAD]), target
    text = example.fleet("status")
    assert ancestor in text.stdout and "auth_toshiba" in text.stdout
    migrate = example.fleet("migrate", "--json")
    assert migrate.returncode == 1, migrate.stdout + migrate.stderr
    [result] = [t for t in json.loads(migrate.stdout)["targets"]
                if t["schema"] == "auth_toshiba"]
    assert result["outcome"] == "failed", result
    assert ancestor in result["error"] and "comes before" in result["error"], result
    assert "DELETE FROM" in result["hint"], result
    others = [t for t in json.loads(migrate.stdout)["targets"] if t["schema"] != "auth_toshiba"]
    assert {t["outcome"] for t in others} == {"skipped"}
    assert sorted(version(example.db_url, "auth_toshiba")) == sorted([ancestor, AUTH_HEAD])
