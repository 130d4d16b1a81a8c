"""The replay path builds what plain Alembic builds, or steps aside and runs online.

Each case was a reported divergence: a branch point replayed as one head, ``--to`` across
branches recorded as a move, the env.py's naming convention ignored, one ``uuid4()`` for
every tenant, a revision committing by itself reported as migrated, and ``--sql`` from base
re-creating an existing version table.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, query, version
from tests.integration.test_parallel import _service

pytestmark = pytest.mark.slow


def _revision(rev: str, down: str | None, body: str) -> str:
    return (f'import uuid\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f'revision = "{rev}"\ndown_revision = {down!r}\nbranch_labels = None\n'
            f'depends_on = None\n\n\ndef upgrade():\n' + textwrap.indent(
                textwrap.dedent(body).strip(), "    ") + "\n\n\ndef downgrade():\n    pass\n")


def _project(tmp_path: Path, db_url: str, revisions: dict[str, str], *,
             env_py: str | None = None, tenants: str = '["a", "b"]',
             driver: str | None = None) -> Project:
    """A one-service project; ``driver`` (psycopg, psycopg2, asyncpg) names the driver in
    the URL fleet is given (the tests' own reads keep ``db_url``)."""
    root = tmp_path / "proj"
    _service(root, "svc", revisions)
    if env_py is not None:
        (root / "svc" / "migrations" / "env.py").write_text(env_py)
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = {tenants}\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    url = db_url if driver is None else f"postgresql+{driver}" + db_url[db_url.index("://"):]
    return Project(root, {"DATABASE_URI": url}, db_url, db_url)


BASE = _revision("9100aaaa0000", None,
                 'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))')
LEFT = _revision("9100aaaa00a1", "9100aaaa0000", 'op.add_column("t", sa.Column("a", sa.Integer))')
RIGHT = _revision("9100aaaa00b1", "9100aaaa0000", 'op.add_column("t", sa.Column("b", sa.Integer))')


def _columns(db_url: str, schema: str) -> set[str]:
    return {r[0] for r in query(db_url, "SELECT column_name FROM information_schema.columns "
                                "WHERE table_schema = %s AND table_name = 't'", (schema,))}


def _from_base(tmp_path: Path, db_url: str, body: str, driver: str) -> tuple[int, dict]:
    """A one-tenant project at ``BASE``, then ``fleet migrate --json`` of one revision
    whose upgrade() is ``body`` (already indented): its exit code and its target."""
    ending = _revision("9100aaaa0001", "9100aaaa0000", body)
    project = _project(tmp_path, db_url, {"base.py": BASE, "end.py": ending},
                       tenants='["a"]', driver=driver)
    assert project.fleet("migrate", "--to", "9100aaaa0000").returncode == 0
    result = project.fleet("migrate", "--json")
    return result.returncode, json.loads(result.stdout)["targets"][0]


def _ended_as_reported(db_url: str, code: int, target: dict, *, failed: bool,
                       columns: set[str]) -> None:
    """What fleet reported is what the schema holds: failed, the version row at ``BASE``;
    migrated, at the new revision with the table ``later`` in the tenant's schema. Never
    anything in ``public``."""
    later = query(db_url, "SELECT schemaname FROM pg_tables WHERE tablename = 'later'")
    assert _columns(db_url, "svc_a") == columns
    if failed:
        assert code == 1, target
        assert target["outcome"] == "failed" and "9100aaaa0001" in target["error"], target
        assert version(db_url, "svc_a") == ["9100aaaa0000"]
        assert later == []
    else:
        assert code == 0, target
        assert version(db_url, "svc_a") == ["9100aaaa0001"]
        assert later == [("svc_a",)]


def test_a_branch_point_records_both_heads(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"base.py": BASE, "left.py": LEFT, "right.py": RIGHT})
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    for schema in ("svc_a", "svc_b"):
        assert version(db_url, schema) == ["9100aaaa00a1", "9100aaaa00b1"]
        assert _columns(db_url, schema) == {"id", "a", "b"}
    again = project.fleet("migrate")
    assert again.returncode == 0, again.stderr  # no DuplicateColumn on the rerun
    assert project.fleet("status").returncode == 0


def test_to_across_branches_keeps_both(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"base.py": BASE, "left.py": LEFT, "right.py": RIGHT})
    assert project.fleet("migrate", "svc", "--to", "9100aaaa00a1").returncode == 0
    result = project.fleet("migrate", "svc", "--to", "9100aaaa00b1")
    assert result.returncode == 0, result.stderr
    assert version(db_url, "svc_a") == ["9100aaaa00a1", "9100aaaa00b1"]
    assert _columns(db_url, "svc_a") == {"id", "a", "b"}


NAMED_ENV = '''\
import sqlalchemy as sa
from alembic_fleet.env import run_migrations

metadata = sa.MetaData(naming_convention={"ck": "ck_%(table_name)s__%(constraint_name)s"})
run_migrations(target_metadata=metadata)
'''


def test_replay_uses_the_naming_convention(tmp_path: Path, db_url: str) -> None:
    check = _revision("9100aaaa0001", "9100aaaa0000",
                      'op.create_check_constraint("positive", "t", "id > 0")')
    project = _project(tmp_path, db_url, {"base.py": BASE, "check.py": check},
                       env_py=NAMED_ENV)
    assert project.fleet("migrate", "--jobs", "2").returncode == 0
    names = {r[0] for r in query(db_url, "SELECT conname FROM pg_constraint c JOIN "
                                 "pg_namespace n ON n.oid = c.connamespace "
                                 "WHERE n.nspname = 'svc_a' AND contype = 'c'")}
    assert names == {"ck_t__positive"}


def test_values_computed_in_python_differ_per_tenant(tmp_path: Path, db_url: str) -> None:
    seeded = _revision("9100aaaa0001", "9100aaaa0000", '''
        token = sa.table("t", sa.column("id", sa.Integer))
        op.add_column("t", sa.Column("token", sa.Text))
        op.execute(f"INSERT INTO t (id, token) VALUES (1, '{uuid.uuid4()}')")
    ''')
    project = _project(tmp_path, db_url, {"base.py": BASE, "seed.py": seeded},
                       tenants='["a", "b", "c"]')
    assert project.fleet("migrate", "--jobs", "2").returncode == 0
    tokens = {query(db_url, f"SELECT token FROM svc_{t}.t")[0][0] for t in "abc"}
    assert len(tokens) == 3


def test_a_revision_that_commits_by_itself_is_not_reported_migrated(tmp_path: Path,
                                                                      db_url: str) -> None:
    committing = _revision("9100aaaa0001", "9100aaaa0000", '''
        op.add_column("t", sa.Column("c", sa.Integer))
        op.get_bind().commit()
    ''')
    later = _revision("9100aaaa0002", "9100aaaa0001",
                      'op.add_column("t", sa.Column("d", sa.Integer))')
    project = _project(tmp_path, db_url, {"base.py": BASE, "commit.py": committing,
                                          "later.py": later}, tenants='["a"]')
    result = project.fleet("migrate", "--json")
    payload = json.loads(result.stdout)
    reached = version(db_url, "svc_a") if query(
        db_url, "SELECT to_regclass('svc_a.alembic_version')")[0][0] else []
    target = payload["targets"][0]
    if reached != ["9100aaaa0002"]:  # what fleet says matches what is committed
        assert result.returncode == 1
        assert target["outcome"] == "failed"
        assert target["to"] == reached
    else:
        assert target["outcome"] == "migrated"


def test_sql_after_a_downgrade_to_base_runs(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"base.py": BASE}, tenants='["a"]')
    assert project.fleet("migrate").returncode == 0
    assert project.fleet("downgrade", "svc", "base", "--tenant", "a", "--yes").returncode == 0
    sql = project.fleet("migrate", "--sql")
    assert sql.returncode == 0, sql.stderr
    query(db_url, "DROP TABLE svc_a.t")  # the downgrade above is a no-op 'pass'
    applied = query(db_url, "SET search_path TO svc_a; " + sql.stdout.split("\n", 1)[1])
    assert applied == [] and version(db_url, "svc_a") == ["9100aaaa0000"]


def test_session_settings_do_not_leak_into_the_next_tenant(tmp_path: Path, db_url: str) -> None:
    leaky = _revision("9100aaaa0001", "9100aaaa0000", '''
        op.execute("DO $$ BEGIN IF current_schema() = 'svc_a' THEN "
                   "PERFORM set_config('lock_timeout', '0', false); "
                   "PERFORM set_config('statement_timeout', '0', false); END IF; END $$")
        op.execute("CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock, "
                   "current_setting('statement_timeout') AS stmt")
        op.execute("PREPARE fleet_leak AS SELECT 1")  # would clash in the next tenant
        op.execute("CREATE TEMP TABLE fleet_leak_t (x integer)")  # likewise
    ''')
    project = _project(tmp_path, db_url, {"base.py": BASE, "leak.py": leaky})
    result = project.fleet("migrate", "--jobs", "1", "--lock-timeout", "3")
    assert result.returncode == 0, result.stderr
    assert query(db_url, "SELECT lock, stmt FROM svc_a.seen") == [("0", "0")]
    assert query(db_url, "SELECT lock, stmt FROM svc_b.seen") == [("3s", "1h")]


ENDING_STATEMENTS = {
    "ROLLBACK": 'op.execute("ROLLBACK")',
    "commit": 'op.execute("commit")',
    "SELECT 1; COMMIT": 'op.execute("SELECT 1; COMMIT")',
    # What came before commits, and the chained transaction goes on as the next one.
    "COMMIT AND CHAIN": 'op.execute("COMMIT AND CHAIN")',
    # With standard_conforming_strings off a backslash escapes a quote in '...': the
    # server runs the COMMIT a reader of the standard syntax takes for part of a string.
    "COMMIT between backslash-escaped quotes": 'op.execute("SELECT 1")\n'
                                               r'''op.execute(r"SELECT 'a\'' ; COMMIT; '''
                                               '''SELECT ''''")''',
}


@pytest.mark.parametrize("control", sorted(ENDING_STATEMENTS))
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_transaction_ended_by_a_statement_is_not_replayed(tmp_path: Path, db_url: str,
                                                           control: str, driver: str) -> None:
    """A revision whose SQL ends the transaction itself (``op.execute("ROLLBACK")``, a
    lower-case ``commit``) is not replayed inside the target's one transaction: replayed,
    a ROLLBACK dropped the DDL before it while the version row, written in the transaction
    the driver began next, said head, and fleet reported the target migrated. It runs
    through Alembic; a ROLLBACK fails the target (plain Alembic would record head without
    the DDL), a COMMIT commits what came before, as under plain Alembic, and what follows
    it stays in the tenant's schema."""
    # psycopg2 keeps no state of its own: after the COMMIT the server runs what follows in
    # autocommit, which the transaction guard must not take for a transaction ended.
    code, target = _from_base(tmp_path, db_url, f'''
        op.execute("SET standard_conforming_strings = off")
        op.add_column("t", sa.Column("c", sa.Integer))
        op.add_column("t", sa.Column("d", sa.Integer))
{textwrap.indent(ENDING_STATEMENTS[control], "        ")}
        op.create_table("later", sa.Column("id", sa.Integer))
    ''', driver)
    assert target.get("via") not in ("replay", "mixed"), target
    # A COMMIT at the end of a multi-statement string commits as a lone one does (the
    # transaction guard refused what followed it, with what came before committed).
    failed = control == "ROLLBACK"
    assert not failed or "ROLLBACK" in target["error"], target
    _ended_as_reported(db_url, code, target, failed=failed,
                       columns={"id"} if failed else {"id", "c", "d"})


ROLLING_BACK = {
    "connection": "op.get_bind().rollback()",
    # Behind SQLAlchemy's back: no event says so, the driver's state does.
    "driver connection": "op.get_bind().connection.dbapi_connection.rollback()",
    "commented statement": 'op.execute("/* undo */ ROLLBACK")',
    "driver commit": "op.get_bind().connection.dbapi_connection.commit()",
    "orm session": "from sqlalchemy.orm import Session\n"
                   "session = Session(bind=op.get_bind())\n"
                   "session.execute(sa.text('SELECT 1'))\n"
                   "session.rollback()",
}


@pytest.mark.parametrize("how", sorted(ROLLING_BACK))
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "at base"])
@pytest.mark.parametrize("per_revision", [False, True], ids=["one transaction",
                                                             "transaction_per_migration"])
def test_a_transaction_rolled_back_from_python_fails_the_target_by_name(
        tmp_path: Path, db_url: str, how: str, fresh: bool, per_revision: bool) -> None:
    """A revision that rolls the target's transaction back from Python (the connection's
    ``rollback()``, an ORM session's) loses what came before it, while Alembic goes on in a
    transaction the driver begins next. Fleet failed such a target, but with a misleading
    reason ("This transaction is inactive", "ended the transaction itself (commit())", or a
    missing version table with a hint about baselines), and with one transaction per
    revision committed the version row past a revision whose first half was gone. It names
    the revision and the rollback, and the schema keeps the revision it had (with one
    transaction per revision: the one before)."""
    ending = _revision("9100aaaa0001", "9100aaaa0000", f'''
        op.add_column("t", sa.Column("c", sa.Integer))
{textwrap.indent(ROLLING_BACK[how], "        ")}
        op.add_column("t", sa.Column("d", sa.Integer))
    ''')
    after = _revision("9100aaaa0002", "9100aaaa0001", '''
        with op.get_context().autocommit_block():
            op.execute("SELECT 1")
        op.add_column("t", sa.Column("e", sa.Integer))
    ''')
    env_py = ("from alembic_fleet.env import run_migrations\n\n"
              "run_migrations(transaction_per_migration=True)\n") if per_revision else None
    project = _project(tmp_path, db_url, {"base.py": BASE, "end.py": ending, "after.py": after},
                       tenants='["a"]', env_py=env_py)
    if not fresh:
        assert project.fleet("migrate", "--to", "9100aaaa0000").returncode == 0
    result = project.fleet("migrate", "--json")
    target = json.loads(result.stdout)["targets"][0]
    assert result.returncode == 1, target
    assert target["outcome"] == "failed", target
    assert "9100aaaa0001" in target["error"], target
    expected = {"connection": "rollback()", "orm session": "rollback()",
                "commented statement": "a ROLLBACK statement"}.get(how, "ended")
    assert expected in target["error"], target
    assert not query(db_url, "SELECT 1 FROM pg_tables WHERE schemaname = 'public' "
                     "AND tablename = 't'")  # nothing went to public
    if how == "driver commit":  # committed: it stays, as with commit() (the error says so)
        return
    if fresh and not per_revision:
        assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'svc_a'")
    else:
        assert version(db_url, "svc_a") == ["9100aaaa0000"]
        assert _columns(db_url, "svc_a") == {"id"}
    status = json.loads(project.fleet("status", "--json").stdout)["targets"][0]
    assert status["current"] == ([] if fresh and not per_revision else ["9100aaaa0000"])


ENDED_AND_BEGUN = {
    # The transaction ends and a new one begins before SQLAlchemy's next statement, so the
    # driver is never seen idle: only the transaction's identity tells.
    "driver rollback, raw cursor": "raw = op.get_bind().connection.dbapi_connection\n"
                                   "raw.rollback()\n"
                                   "raw.cursor().execute('SELECT 1')",
    "rollback and chain": 'op.execute("/* x */ ROLLBACK AND CHAIN")',
    "abort and chain": 'op.execute("/**/ABORT AND CHAIN")',
    "rollback then begin": 'op.execute("SELECT 1; /* x */ ROLLBACK; BEGIN")',
    "driver rollback": "op.get_bind().connection.dbapi_connection.rollback()",
    # Autocommit switched on by hand is not Alembic's autocommit_block(): that one commits
    # through SQLAlchemy first.
    "driver rollback, then autocommit": "raw = op.get_bind().connection.dbapi_connection\n"
                                        "raw.rollback()\n"
                                        "raw.autocommit = True",
    # Text that looks like a COMMIT without being one must not stand the guard down (a
    # SQL-standard function body, a dollar quote whose tag is not ASCII).
    "after a BEGIN ATOMIC body": 'op.execute("CREATE FUNCTION f1() RETURNS int LANGUAGE sql '
                                 'BEGIN ATOMIC SELECT 1; END")\n'
                                 "op.get_bind().connection.dbapi_connection.rollback()",
    "after a non-ASCII dollar quote": 'op.execute("SELECT $\u20ac$ ; COMMIT; $\u20ac$")\n'
                                      "op.get_bind().connection.dbapi_connection.rollback()",
    # Text that hides a ROLLBACK from a reader that does not end comments as the server
    # does, or takes part of a name for a dollar quote.
    "after a comment ended by CR": 'op.execute("SELECT 1; -- x\\rROLLBACK")',
    "inside a name with a dollar": 'op.execute("SELECT 1 AS x\u20ac$a$; ROLLBACK; '
                                   'SELECT 2 AS y\u20ac$a$")',
}


@pytest.mark.parametrize("how", sorted(ENDED_AND_BEGUN))
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "asyncpg"])
def test_a_transaction_ended_and_begun_again_fails_the_target(
        tmp_path: Path, db_url: str, how: str, driver: str) -> None:
    """Ending the target's transaction and beginning the next one before the next
    statement (a raw cursor after the driver's rollback, ``ROLLBACK AND CHAIN`` behind a
    comment, ``ROLLBACK; BEGIN`` in one string, any driver-level rollback under asyncpg)
    went unseen: the target was reported migrated with the DDL before it gone and what
    followed created in ``public``. The target fails; nothing is left in ``public``."""
    if driver == "psycopg2" and how == "rollback then begin":
        pytest.skip("psycopg2 sends the string as one query, as psycopg does: one case is enough")
    code, target = _from_base(tmp_path, db_url, f'''
        op.add_column("t", sa.Column("c", sa.Integer))
{textwrap.indent(ENDED_AND_BEGUN[how], "        ")}
        op.create_table("later", sa.Column("id", sa.Integer))
    ''', driver)
    _ended_as_reported(db_url, code, target, failed=True, columns={"id"})
    ledger = query(db_url, "SELECT outcome FROM fleet.run_targets WHERE schema_name = 'svc_a' "
                   "ORDER BY finished_at DESC LIMIT 1")
    assert ledger and ledger[0][0] == "failed", ledger


@pytest.mark.parametrize("rollback_first", [False, True],
                         ids=["commit", "commit and rollback()"])
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "asyncpg"])
def test_a_transaction_ended_after_a_commit_statement_fails_the_target(
        tmp_path: Path, db_url: str, driver: str, rollback_first: bool) -> None:
    """A ``COMMIT`` statement commits what came before, as under plain Alembic; the
    transaction the driver begins after it is guarded as the first was. The guard stood
    down for the rest of the target after one COMMIT (under asyncpg, which reports no
    transaction state, even after the first fix): the driver's rollback() then lost what
    followed while the version row moved to head and the target was reported migrated.
    psycopg2 and asyncpg run what follows a COMMIT in the server's autocommit until their
    own rollback(), so there a column added right after it stays and the target is
    migrated: what fleet reports must match the schema either way."""
    first = "op.get_bind().connection.dbapi_connection.rollback()" if rollback_first else ""
    code, target = _from_base(tmp_path, db_url, f'''
        op.add_column("t", sa.Column("c", sa.Integer))
        op.execute("COMMIT")
        {first}
        op.add_column("t", sa.Column("d", sa.Integer))
        op.get_bind().connection.dbapi_connection.rollback()
        op.create_table("later", sa.Column("id", sa.Integer))
    ''', driver)
    failed = driver == "psycopg" or rollback_first
    # c was committed by the COMMIT either way.
    _ended_as_reported(db_url, code, target, failed=failed,
                       columns={"id", "c"} if failed else {"id", "c", "d"})


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "asyncpg"])
def test_a_backslash_in_a_literal_is_read_as_the_session_reads_it(
        tmp_path: Path, db_url: str, driver: str) -> None:
    """Whether a backslash escapes a quote in ``'...'`` is the session's
    ``standard_conforming_strings``: text that holds a ROLLBACK under the other reading
    only is ordinary SQL, and was refused as a ROLLBACK."""
    revision = _revision("9100aaaa0001", "9100aaaa0000", r'''
        op.create_table("msgs", sa.Column("a", sa.Text), sa.Column("b", sa.Text))
        op.execute(r"INSERT INTO msgs VALUES ('\', 'Disk full; abort')")
        op.execute("SELECT set_config('standard_conforming_strings', 'off', false)")
        op.execute(r"INSERT INTO msgs VALUES ('it\'s done; rollback not needed', 'x')")
    ''')
    project = _project(tmp_path, db_url, {"base.py": BASE, "lit.py": revision},
                       tenants='["a"]', driver=driver)
    result = project.fleet("migrate", "--json")
    target = json.loads(result.stdout)["targets"][0]
    assert result.returncode == 0, target
    assert version(db_url, "svc_a") == ["9100aaaa0001"]
    assert sorted(query(db_url, "SELECT a, b FROM svc_a.msgs")) == [
        ("\\", "Disk full; abort"), ("it's done; rollback not needed", "x")]


@pytest.mark.parametrize("body, raised, at_line", [
    ('x = 1\nraise RuntimeError("boom")', "RuntimeError: boom", True),
    # Replayed (no Python ran for it): the file, not the line.
    ('op.execute("SELECT no_such_function()")', "UndefinedFunction", False),
], ids=["python", "replayed sql"])
def test_a_failing_revision_names_its_file_and_line(tmp_path: Path, db_url: str, body: str,
                                                    raised: str, at_line: bool) -> None:
    """A revision that raises says where: plain Alembic prints the traceback; fleet said
    only 'revision X: RuntimeError: boom', in the output, the JSON and the ledger alike."""
    failing = _revision("9100aaaa0001", "9100aaaa0000", body)
    project = _project(tmp_path, db_url, {"base.py": BASE, "fail.py": failing},
                       tenants='["a"]')
    line = failing.splitlines().index("    " + body.splitlines()[-1]) + 1
    result = project.fleet("migrate", "--json")
    target = json.loads(result.stdout)["targets"][0]
    assert result.returncode == 1 and target["outcome"] == "failed", target
    assert raised in target["error"], target
    where = "migrations/versions/fail.py" + (f", line {line}, in upgrade" if at_line else "")
    assert target["error"].endswith(f"({where})"), target
    assert where in project.fleet("migrate").stdout


def test_a_failure_after_revisions_committed_one_by_one_reports_where_the_target_is(
        tmp_path: Path, db_url: str) -> None:
    """With one transaction per revision, the revisions before a failing one stay
    committed: the report said the target was still where it started ('to': [], and
    'r2 -> r2' on the rerun), the ledger's row too."""
    second = _revision("9100aaaa0001", "9100aaaa0000",
                       'op.create_table("u", sa.Column("id", sa.Integer, primary_key=True))')
    failing = _revision("9100aaaa0002", "9100aaaa0001", 'op.execute("SELECT 1/0")')
    env_py = ("from alembic_fleet.env import run_migrations\n\n"
              "run_migrations(transaction_per_migration=True)\n")
    project = _project(tmp_path, db_url, {"base.py": BASE, "second.py": second,
                                          "fail.py": failing}, tenants='["a"]', env_py=env_py)
    result = project.fleet("migrate", "--json")
    target = json.loads(result.stdout)["targets"][0]
    assert result.returncode == 1 and target["outcome"] == "failed", target
    assert version(db_url, "svc_a") == ["9100aaaa0001"]
    assert target["from"] == [] and target["to"] == ["9100aaaa0001"], target
    [(recorded,)] = query(db_url, "SELECT to_revisions FROM fleet.run_targets "
                          "WHERE schema_name = 'svc_a'")
    assert list(recorded) == ["9100aaaa0001"], recorded


def test_an_error_raised_in_env_py_names_its_line(tmp_path: Path, db_url: str) -> None:
    env_py = ("from alembic_fleet.env import run_migrations\n\n"
              "raise KeyError('envboom')\nrun_migrations()\n")
    project = _project(tmp_path, db_url, {"base.py": BASE}, tenants='["a"]', env_py=env_py)
    result = project.fleet("migrate", "--json")
    target = json.loads(result.stdout)["targets"][0]
    assert result.returncode == 1 and target["outcome"] == "failed", target
    assert target["error"].endswith("(migrations/env.py, line 3, in <module>)"), target
