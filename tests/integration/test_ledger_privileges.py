"""A user who may read the version tables but not the ledger schema: ``fleet log`` says
which ledger it cannot read and what to grant, instead of an internal error with SQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import query
from tests.integration.test_version_mirror import _project

pytestmark = pytest.mark.slow


def test_log_without_usage_on_the_ledger_schema_is_a_clear_error(tmp_path: Path,
                                                                  db_url: str) -> None:
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    role = f"fleet_ro_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {role} LOGIN")
    try:
        query(db_url, f"GRANT USAGE ON SCHEMA svc_a TO {role}")
        reader = make_url(db_url).set(username=role, password=None)
        url = reader.render_as_string(hide_password=False)
        env = {"DATABASE_URI": url}
        for args in (("log",), ("log", "--json")):
            result = project.fleet(*args, env=env)
            assert result.returncode != 0
            output = result.stdout + result.stderr
            assert "internal error" not in output and "to_regclass" not in output, output
            assert "cannot read the ledger (fleet)" in output, output
            assert "USAGE on schema fleet" in output, output
    finally:
        query(db_url, f"DROP OWNED BY {role}")
        query(db_url, f"DROP ROLE {role}")


def test_a_ledger_table_gone_is_not_blamed_on_privileges(tmp_path: Path, db_url: str) -> None:
    """The user that migrates, with every right, reads a ledger whose table was dropped:
    the error says what the database said, not to grant what it already has."""
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    query(db_url, "DROP TABLE fleet.runs CASCADE")
    result = project.fleet("log")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot read the ledger (fleet)" in result.stderr, result.stderr
    assert "does not exist" in result.stderr, result.stderr
    assert "grant" not in result.stderr, result.stderr
    # As the hint says: a migrate that migrates something (a new tenant) makes it again.
    config = project.root / "fleet.toml"
    config.write_text(config.read_text().replace('"c"]', '"c", "d"]'))
    assert project.fleet("migrate").returncode == 0
    log = project.fleet("log")
    assert log.returncode == 0 and "succeeded" in log.stdout, log.stdout + log.stderr


def test_a_ledger_locked_by_another_session_says_so(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE fleet.runs IN ACCESS EXCLUSIVE MODE")
        result = project.fleet("log")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lock" in result.stderr and "grant" not in result.stderr, result.stderr


def test_an_older_ledger_written_by_a_role_that_may_not_index_it_still_runs(
        tmp_path: Path, db_url: str) -> None:
    """A ledger an older fleet made has no checksums index; the next run adds it. A role
    that may write the ledger and migrate, but does not own the ledger's tables, cannot:
    its run goes on (the check before it reads the older way), and so do its checks."""
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    query(db_url, "DROP INDEX fleet.applied_revisions_checksums")
    role = f"fleet_rw_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {role} LOGIN")
    try:
        query(db_url, f"GRANT CREATE, USAGE ON SCHEMA fleet TO {role}; "
                      f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA fleet "
                      f"TO {role}; GRANT CREATE ON DATABASE {make_url(db_url).database} "
                      f"TO {role}; GRANT INSERT ON public.fleet_test_ddl_log TO {role}; "
                      f"GRANT USAGE ON SEQUENCE public.fleet_test_ddl_log_id_seq TO {role}")
        writer = make_url(db_url).set(username=role, password=None)
        env = {"DATABASE_URI": writer.render_as_string(hide_password=False)}
        config = project.root / "fleet.toml"
        config.write_text(config.read_text().replace('"c"]', '"c", "d"]'))
        done = project.fleet("migrate", "--json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert query(db_url, "SELECT to_regclass('fleet.applied_revisions_checksums')") == [
            (None,)]
        assert query(db_url, "SELECT count(*) FROM fleet.applied_revisions "
                             "WHERE schema_name LIKE '%\\_d'") != [(0,)]
        config.write_text(config.read_text().replace('"d"]', '"d", "e"]'))
        assert project.fleet("migrate", env=env).returncode == 0
        # The owner's next run adds the index.
        config.write_text(config.read_text().replace('"e"]', '"e", "f"]'))
        assert project.fleet("migrate").returncode == 0
        assert query(db_url, "SELECT to_regclass('fleet.applied_revisions_checksums') "
                             "IS NOT NULL") == [(True,)]
    finally:
        query(db_url, f"DROP OWNED BY {role}")
        query(db_url, f"DROP ROLE {role}")


@pytest.mark.parametrize("provision", ["migrate", "reference"])
def test_a_role_that_may_not_create_the_schema_is_told_so_not_asked_to_report_a_bug(
        tmp_path: Path, db_url: str, provision: str) -> None:
    """A new tenant's schema is created by fleet's own statement (on the driver's cursor,
    whose errors are the driver's, not SQLAlchemy's): a privilege the role lacks is the
    database's refusal, said as such, with what to grant; never "a bug in alembic-fleet"."""
    project = _project(tmp_path, db_url)
    config = project.root / "fleet.toml"
    config.write_text(f'provision = "{provision}"\n' + config.read_text())
    assert project.fleet("migrate").returncode == 0
    role = f"fleet_rw_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {role} LOGIN")
    try:
        query(db_url, f"GRANT USAGE ON SCHEMA fleet TO {role}; "
                      f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA fleet "
                      f"TO {role}; GRANT INSERT ON public.fleet_test_ddl_log TO {role}; "
                      f"GRANT USAGE ON SEQUENCE public.fleet_test_ddl_log_id_seq TO {role}")
        writer = make_url(db_url).set(username=role, password=None)
        env = {"DATABASE_URI": writer.render_as_string(hide_password=False)}
        done = project.fleet("tenants", "add", "d", "--json", env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        [target] = [t for t in json.loads(done.stdout)["migration"]["targets"]
                    if t["schema"] == "svc_d"]
        assert target["outcome"] == "failed"
        assert "permission denied for database" in target["error"], target
        assert "SQLSTATE 42501" in target["error"], target
        assert "internal error" not in target["error"], target
        assert "bug" not in (target["hint"] or "") and "grant" in target["hint"], target
        assert query(db_url, "SELECT nspname FROM pg_namespace WHERE nspname = 'svc_d'") == []
        assert query(db_url, "SELECT outcome, error LIKE '%permission denied for database%' "
                             "FROM fleet.run_targets WHERE schema_name = 'svc_d'") == [
            ("failed", True)]
    finally:
        query(db_url, f"DROP OWNED BY {role}")
        query(db_url, f"DROP ROLE {role}")


def test_a_ledger_refused_by_a_trigger_is_not_blamed_on_create(tmp_path: Path,
                                                               db_url: str) -> None:
    """The role may create schemas, but the database's DDL trigger writes a table it may
    not: the hint names that refusal, not CREATE on the database, which it has."""
    project = _project(tmp_path, db_url)
    role = f"fleet_rw_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {role} LOGIN")
    try:
        query(db_url, f"GRANT CREATE ON DATABASE {make_url(db_url).database} TO {role}")
        writer = make_url(db_url).set(username=role, password=None)
        done = project.fleet("migrate", env={
            "DATABASE_URI": writer.render_as_string(hide_password=False)})
        assert done.returncode == 2, done.stdout + done.stderr
        assert "permission denied for table fleet_test_ddl_log" in done.stderr, done.stderr
        assert "privilege the message names" in done.stderr, done.stderr
        assert "grant CREATE on the database" not in done.stderr, done.stderr
    finally:
        query(db_url, f"DROP OWNED BY {role}")
        query(db_url, f"DROP ROLE {role}")
