"""FC590 ``unparsable-sql``: only a statement PostgreSQL's parser rejects.

A revision that reads the database while upgrading (``op.get_bind()``, ``inspect``) cannot
be rendered offline past that point; that is Python fleet cannot see through, not SQL it
cannot parse, so it is no finding. What it rendered before that point is still linted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.check.project import make_project, revision_file, write_revision
from tests.conftest import Project

READS = {
    "a statement through the connection": 'op.get_bind().execute(sa.text("SELECT 1"))',
    "a value read back": (
        'n = op.get_bind().execute(sa.text("SELECT count(*) FROM items")).scalar()\n'
        "if n:\n"
        '    op.execute("UPDATE items SET name = lower(name)")'),
    "rows read back": (
        'for row in op.get_bind().execute(sa.text("SELECT id FROM items")).fetchall():\n'
        '    op.execute(sa.text("UPDATE items SET name = :n").bindparams(n=str(row.id)))'),
    "the inspector": (
        'if not sa.inspect(op.get_bind()).has_table("audit"):\n'
        '    op.create_table("audit", sa.Column("id", sa.Integer(), primary_key=True))'),
}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    make_project(tmp_path)
    return Project(tmp_path, {}, "", "")


def add(project: Project, upgrade: str) -> None:
    folder = project.root / "shop_service" / "migrations" / "versions"
    write_revision(folder, "aa0000000004_data.py", revision_file(
        "aa0000000004", "aa0000000003", upgrade, "pass",
        header="# fleet: allow missing-downgrade: data only"))


def check(project: Project) -> dict:
    result = project.fleet("check", "--no-scratch", "--json")  # no git: every revision
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("upgrade", list(READS.values()), ids=list(READS))
def test_a_revision_reading_the_database_is_no_fc590(project: Project, upgrade: str) -> None:
    add(project, upgrade)
    payload = check(project)
    assert [f["code"] for f in payload["findings"] if not f["accepted"]] == []
    assert payload["ok"] is True


def test_statements_before_the_read_are_still_linted(project: Project) -> None:
    add(project, 'op.drop_column("items", "price")\n'
                 'rows = op.get_bind().execute(sa.text("SELECT id FROM items")).fetchall()')
    payload = check(project)
    found = [(f["code"], f["revision"], f["statement"]) for f in payload["findings"]
             if not f["accepted"]]
    assert found == [("FC501", "aa0000000004", "ALTER TABLE items DROP COLUMN price")]
    # Said once, not as a finding: what could not be seen.
    assert payload["scope"]["shop"]["unrendered"] == ["aa0000000004"]


def test_a_truly_unparsable_statement_is_one_fc590(project: Project) -> None:
    add(project, 'op.execute("ALTER TABLE items DROP COLUM name")\n'
                 'op.get_bind().execute(sa.text("SELECT 1"))')
    payload = check(project)
    found = [(f["code"], f["revision"], f["statement"]) for f in payload["findings"]
             if not f["accepted"]]
    assert found == [("FC590", "aa0000000004", "ALTER TABLE items DROP COLUM name")]
    [unparsable] = [f for f in payload["findings"] if f["code"] == "FC590"]
    assert "syntax error" in unparsable["message"]
