"""A failing revision rolls its target back completely; the others still migrate."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import DDL_LOG, Project, helper_service, query, schemas, tables, version

pytestmark = pytest.mark.slow

REV1 = '''\
"""create accounts"""
import sqlalchemy as sa
from alembic import op

revision = "1000aaaa0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("email", sa.Text, nullable=False))
    op.execute("INSERT INTO accounts (email) VALUES ('a@x'), ('a@x')")


def downgrade():
    op.drop_table("accounts")
'''

REV2 = '''\
"""add ledger, then a unique index that fails where data breaks it"""
import sqlalchemy as sa
from alembic import op

revision = "1000aaaa0002"
down_revision = "1000aaaa0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("ledger", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("""
        DO $$ BEGIN
            IF current_schema() = 'billing_broken' THEN
                RAISE EXCEPTION 'tenant data breaks this migration';
            END IF;
        END $$
    """)


def downgrade():
    op.drop_table("ledger")
'''


def _project(tmp_path: Path, db_url: str) -> Project:
    root = tmp_path / "proj"
    versions = helper_service(root / "billing")
    (versions / "1000aaaa0001_accounts.py").write_text(REV1)
    (versions / "1000aaaa0002_ledger.py").write_text(REV2)
    (root / "fleet.toml").write_text(textwrap.dedent("""\
        database = "${DATABASE_URI}"
        tenants = ["good", "broken", "other"]

        [services.billing]
        path = "billing"
        schema = "billing_{tenant}"
        """))
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def test_failed_target_is_rolled_back_and_reported(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)
    outcome = {t["tenant"]: t for t in payload["targets"]}
    assert outcome["good"]["outcome"] == "migrated"
    assert outcome["other"]["outcome"] == "migrated"
    broken = outcome["broken"]
    assert broken["outcome"] == "failed" and broken["state"] == "failed"
    assert "revision 1000aaaa0002" in broken["error"]
    assert "tenant data breaks this migration" in broken["error"]
    assert payload["summary"]["failed"] == 1 and payload["summary"]["migrated"] == 2

    # The broken tenant is untouched: no schema at all (its creation was rolled back too).
    assert "billing_broken" not in schemas(db_url, "billing_%")
    assert version(db_url, "billing_good") == ["1000aaaa0002"]
    assert tables(db_url, "billing_other") == {"accounts", "ledger", "alembic_version"}

    text = project.fleet("migrate")
    assert text.returncode == 1
    assert "FAILED billing/billing_broken" in text.stdout
    assert "1 failed" in text.stdout


def test_fail_fast_starts_nothing_after_a_failure(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    result = project.fleet("migrate", "--fail-fast", "--jobs", "1", "--json",
                           env={"TENANTS": "broken good other"})
    assert result.returncode == 1
    outcome = {t["tenant"]: t["outcome"] for t in json.loads(result.stdout)["targets"]}
    assert outcome == {"broken": "failed", "good": "skipped", "other": "skipped"}
    assert not schemas(db_url, "billing_%")


def test_rerun_touches_only_failed_and_pending(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 1
    logged = query(db_url, "SELECT max(id) FROM public.fleet_test_ddl_log")[0][0]
    # Fix the data problem the way an operator would: drop the tenant from the run.
    rerun = project.fleet("migrate", "--json", env={"TENANTS": "good other"})
    assert rerun.returncode == 0
    assert {t["outcome"] for t in json.loads(rerun.stdout)["targets"]} == {"skipped"}
    assert query(db_url, "SELECT max(id) FROM public.fleet_test_ddl_log")[0][0] == logged
    assert DDL_LOG  # the event trigger is what proves "nothing executed"
