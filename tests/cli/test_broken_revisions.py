"""Revision files that cannot load, or whose id would run SQL: exit 2, naming the file."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project, query

pytestmark = pytest.mark.slow

WORKFLOW = "python_apps/workflow-engine-poc/alembic/versions"


def test_a_syntax_error_names_the_service_and_file(example: Project) -> None:
    broken = example.root / WORKFLOW / "b25b8d3f6a85_add_is_active_and_step_timeout.py"
    broken.write_text(broken.read_text() + "\ndef oops(:\n")
    for args in (["migrate"], ["heads"], ["history", "workflow"]):
        result = example.fleet(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "workflow" in result.stderr and broken.name in result.stderr
        assert "SyntaxError" in result.stderr and "internal error" not in result.stderr
    status = example.fleet("status", "--json")
    assert status.returncode == 2
    payload = json.loads(status.stdout)
    assert {t["service"] for t in payload["targets"]} == {"auth", "ingestion"}
    assert any(broken.name in e for e in payload["errors"])


def test_a_missing_module_names_the_file_and_what_to_do(example: Project) -> None:
    broken = example.root / WORKFLOW / "b25b8d3f6a85_add_is_active_and_step_timeout.py"
    broken.write_text("import no_such_module_here\n" + broken.read_text())
    result = example.fleet("migrate")
    assert result.returncode == 2, result.stderr
    assert broken.name in result.stderr and "no_such_module_here" in result.stderr
    assert "install" in result.stderr


def test_a_revision_id_that_would_run_sql_is_refused(example: Project) -> None:
    query(example.db_url, "CREATE TABLE public.canary (id int)")
    hostile = "x');COMMIT;DROP TABLE public.canary;SELECT ('1"
    versions = example.root / WORKFLOW
    (versions / "evil.py").write_text(
        f'revision = "{hostile}"\ndown_revision = "b25b8d3f6a85"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    result = example.fleet("migrate")
    assert result.returncode == 2, result.stderr
    assert "evil.py" in result.stderr and "unescaped" in result.stderr
    assert query(example.db_url, "SELECT to_regclass('public.canary') IS NOT NULL") == [(True,)]
    check = example.fleet("check", "workflow", "--no-scratch", "--format", "json")
    assert check.returncode == 3
    assert "FC108" in {f["code"] for f in json.loads(check.stdout)["findings"]}


def test_empty_revisions_are_usage_errors(example: Project) -> None:
    assert example.fleet("migrate", "auth", "--to", "").returncode == 2
    down = example.fleet("downgrade", "auth", "", "--tenant", "default", "--yes")
    assert down.returncode == 2 and "internal error" not in down.stderr
