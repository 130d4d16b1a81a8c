"""Faults against the per-target round-trip savings: the session reset in one string, the
mixed plan inside one Alembic run, the version table read once, the failed target that
keeps its connection. Each runs the installed ``fleet`` against a real PostgreSQL."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, query, temporary_role, version

pytestmark = pytest.mark.slow

ENV = "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n"

RECORD = '''
    bind = op.get_bind()
    bind.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS public.attack_seen (schema_name text, lock_timeout text, "
        "statement_timeout text, app text, who text, path text, temps int, "
        "locks int, prepared int, cursors int, listens int)")
    bind.exec_driver_sql(
        "INSERT INTO public.attack_seen SELECT current_schema(), "
        "current_setting('lock_timeout'), current_setting('statement_timeout'), "
        "current_setting('application_name'), current_user, current_setting('search_path'), "
        "(SELECT count(*) FROM pg_class WHERE relpersistence = 't')::int, "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        " AND pid = pg_backend_pid())::int, "
        "(SELECT count(*) FROM pg_prepared_statements WHERE from_sql)::int, "
        "(SELECT count(*) FROM pg_cursors WHERE is_holdable)::int, "
        "(SELECT count(*) FROM pg_listening_channels())::int")
'''


def _revision(number: int, body: str, prefix: str = "9100aaaa") -> str:
    rev = f"{prefix}{number:04d}"
    down = f"{prefix}{number - 1:04d}" if number > 1 else None
    return (f"import os\nimport sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            f"depends_on = None\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip() or "pass", "    ")
            + "\n\n\ndef downgrade():\n    pass\n")


def _project(tmp_path: Path, db_url: str, bodies: list[str], *, tenants: int = 3,
             extra: str = "", env_py: str = ENV, url: str | None = None) -> Project:
    root = tmp_path / "proj"
    versions = root / "svc" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "svc" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "svc" / "migrations" / "env.py").write_text(env_py)
    for number, body in enumerate(bodies, 1):
        (versions / f"9100aaaa{number:04d}_r.py").write_text(_revision(number, body))
    names = ", ".join(f'"t{i}"' for i in range(1, tenants + 1))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\nlock_timeout = 3\n'
        f'statement_timeout = 60\n{extra}\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    return Project(root, {"DATABASE_URI": url or db_url}, db_url, db_url)


def _head(count: int) -> str:
    return f"9100aaaa{count:04d}"


def _targets(result) -> dict[str, dict]:
    assert result.stdout, result.stderr
    return {t["schema"]: t for t in json.loads(result.stdout)["targets"]}


KILL_OWN_BACKEND = '''
    bind = op.get_bind()
    if bind.exec_driver_sql("SELECT current_schema()").scalar() == "svc_t1":
        try:
            bind.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        except Exception:
            pass
        raise RuntimeError("the revision gave up")
    op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))
'''


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2",
                                    "postgresql+asyncpg"])
def test_the_target_after_a_lost_connection_runs_with_fleets_settings(
        tmp_path: Path, db_url: str, scheme: str) -> None:
    """A revision fails with an error of its own after its connection died: the next
    target on that worker runs on a new connection, under fleet's lock_timeout,
    statement_timeout and application name, not the server's defaults."""
    url = db_url.replace("postgresql://", scheme + "://", 1)
    project = _project(tmp_path, db_url, [KILL_OWN_BACKEND, RECORD], url=url)
    result = project.fleet("migrate", "--json", "--jobs", "1", "--retries", "0")
    targets = _targets(result)
    assert targets["svc_t1"]["outcome"] == "failed", targets
    assert "gave up" in targets["svc_t1"]["error"], targets
    assert targets["svc_t2"]["outcome"] == "migrated", targets
    assert targets["svc_t3"]["outcome"] == "migrated", targets
    seen = query(db_url, "SELECT schema_name, lock_timeout, statement_timeout, app "
                 "FROM public.attack_seen ORDER BY 1")
    assert [row[:3] for row in seen] == [("svc_t2", "3s", "1min"), ("svc_t3", "3s", "1min")]
    assert all(row[3].startswith("fleet ") for row in seen), seen


SESSION_CHANGES = """
    op.execute("SET ROLE {role}")
    op.execute("SET lock_timeout = 0")
    op.execute("SET statement_timeout = 0")
    op.execute("SET application_name = 'not fleet'")
    op.execute("SET search_path = public")
    op.execute("CREATE TEMP TABLE attack_tmp (n int)")
    op.execute("PREPARE attack_p AS SELECT 1")
    op.execute("LISTEN attack_chan")
    op.execute("DECLARE attack_c CURSOR WITH HOLD FOR SELECT 1")
    op.execute("SELECT pg_advisory_lock(4242)")
"""


@pytest.fixture
def superuser_role(db_url: str) -> Iterator[str]:
    with temporary_role(db_url, "fleet_test_su", "SUPERUSER NOLOGIN") as role:
        yield role


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2",
                                    "postgresql+asyncpg"])
@pytest.mark.parametrize("how", ["replayed", "online"])
def test_what_a_revision_leaves_in_the_session_is_gone_for_the_next_target(
        tmp_path: Path, db_url: str, superuser_role: str, scheme: str, how: str) -> None:
    """Role, settings, temporary tables, prepared statements, cursors, LISTENs and advisory
    locks a revision leaves on the session: the next target on the worker sees none of
    them, runs under fleet's settings and holds its own target lock only."""
    changes = SESSION_CHANGES.format(role=superuser_role)
    if how == "online":
        changes = "op.get_bind()\n" + textwrap.dedent(changes)
    url = db_url.replace("postgresql://", scheme + "://", 1)
    project = _project(tmp_path, db_url, [RECORD, changes], url=url)
    result = project.fleet("migrate", "--json", "--jobs", "1", "--retries", "0")
    targets = _targets(result)
    assert {t["outcome"] for t in targets.values()} == {"migrated"}, [
        (t["schema"], t["error"]) for t in targets.values()]
    assert {t["via"] for t in targets.values()} == {"mixed" if how == "replayed" else "online"}
    seen = query(db_url, "SELECT schema_name, lock_timeout, statement_timeout, app, who, "
                 "temps, locks, prepared, cursors, listens FROM public.attack_seen ORDER BY 1")
    assert [row[0] for row in seen] == ["svc_t1", "svc_t2", "svc_t3"]
    first = seen[0][1:]
    for row in seen:
        assert row[1:] == first, seen
    assert first[:2] == ("3s", "1min") and first[2].startswith("fleet ")
    assert first[3:] == ("postgres", 0, 1, 0, 0, 0), seen
    for schema in ("svc_t1", "svc_t2", "svc_t3"):
        assert version(db_url, schema) == [_head(2)]


def _positions(count: int, online: set[int]) -> list[str]:
    """``count`` revisions building table ``t``; those in ``online`` read the database."""
    bodies = []
    for number in range(1, count + 1):
        if number == 1:
            body = ('op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))\n'
                    'op.execute("INSERT INTO t (id) VALUES (1), (2)")\n')
        else:
            body = f'op.add_column("t", sa.Column("c{number}", sa.Integer))\n'
        if number in online:
            body += (f'rows = op.get_bind().exec_driver_sql("SELECT count(*) FROM t").scalar()\n'
                     f'op.create_table("seen_{number}", sa.Column("n", sa.Integer))\n'
                     f'op.execute(f"INSERT INTO seen_{number} (n) VALUES ({{rows}})")\n')
        bodies.append(body)
    return bodies


def _online_id(online: set[int]) -> str:
    return "online-" + "-".join(map(str, sorted(online)))


LAYOUTS = [{1}, {5}, {1, 2}, {4, 5}, {2, 4}, {1, 3, 5}]


@pytest.mark.parametrize("online", LAYOUTS, ids=_online_id)
@pytest.mark.parametrize("broken", [1, 2, 3, 4, 5])
def test_a_failure_anywhere_in_a_mixed_plan_names_its_revision_and_rolls_back(
        tmp_path: Path, db_url: str, online: set[int], broken: int) -> None:
    bodies = _positions(5, online)
    bodies[broken - 1] += 'op.execute("SELECT 1/0")\n'
    project = _project(tmp_path, db_url, bodies, tenants=1)
    # A schema half way first, so the plan starts from a version row.
    result = project.fleet("migrate", "--json")
    target = _targets(result)["svc_t1"]
    assert target["outcome"] == "failed"
    assert target["error"].startswith(f"revision {_head(broken)}: "), target["error"]
    assert "division by zero" in target["error"], target["error"]
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'svc_t1'")
    assert not query(db_url, "SELECT 1 FROM fleet.applied_revisions")


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2",
                                    "postgresql+asyncpg"])
@pytest.mark.parametrize("online", LAYOUTS, ids=_online_id)
def test_a_mixed_plan_on_every_driver_builds_what_plain_alembic_builds(
        tmp_path: Path, db_url: str, online: set[int], scheme: str) -> None:
    from tests.integration.test_sql_and_alembic import _dump

    url = db_url.replace("postgresql://", scheme + "://", 1)
    project = _project(tmp_path, db_url, _positions(5, online), tenants=2, url=url)
    plain = project.alembic("svc", "upgrade", "head", env={"ALEMBIC_SCHEMA": "svc_plain"})
    assert plain.returncode == 0, plain.stderr
    middle = project.fleet("migrate", "--json", "--to", _head(3), "--tenant", "t2")
    assert middle.returncode == 0, middle.stdout + middle.stderr
    assert version(db_url, "svc_t2") == [_head(3)]
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    targets = _targets(result)
    assert targets["svc_t1"]["via"] == "mixed"
    reference = _dump(db_url, "svc_plain").replace("svc_plain", "SCHEMA")
    for schema in ("svc_t1", "svc_t2"):
        assert version(db_url, schema) == [_head(5)]
        assert _dump(db_url, schema).replace(schema, "SCHEMA") == reference
        for number in online:
            assert query(db_url, f"SELECT n FROM {schema}.seen_{number}") == [(2,)]
        assert query(db_url, "SELECT revision FROM fleet.applied_revisions "
                     "WHERE schema_name = %s ORDER BY 1", (schema,)) == [
            (_head(n),) for n in range(1, 6)]
        assert query(db_url, "SELECT to_revisions FROM fleet.run_targets "
                     "WHERE schema_name = %s ORDER BY finished_at DESC LIMIT 1", (schema,)) \
            == [([_head(5)],)]


FANCY_ENV = '''\
import sqlalchemy as sa
from alembic import context

from alembic_fleet.env import run_migrations

print("env.py of svc runs")
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s"})


def include_object(obj, name, type_, reflected, compare_to):
    return not name.startswith("tmp_")


context.config.set_main_option("fleet_attack", "1")
run_migrations(target_metadata=metadata, include_object=include_object, compare_type=True)
'''


@pytest.mark.parametrize("online", [{1}, {2}, {3}, {1, 3}], ids=_online_id)
def test_a_mixed_plan_with_a_baseline_and_a_busy_env_py_builds_what_alembic_builds(
        tmp_path: Path, db_url: str, online: set[int]) -> None:
    from tests.integration.test_sql_and_alembic import _dump

    bodies = [
        'op.add_column("legacy", sa.Column("email", sa.Text))\n'
        'op.create_unique_constraint(None, "legacy", ["email"])\n',
        'op.create_table("t", sa.Column("id", sa.Integer), sa.Column("legacy_id", sa.Integer,'
        ' sa.ForeignKey("legacy.id")), sa.PrimaryKeyConstraint("id"))\n'
        'op.create_check_constraint("positive", "t", "id > 0")\n',
        'op.create_index(None, "t", ["legacy_id"])\n'
        'op.execute("INSERT INTO legacy (id, email) VALUES (7, \'x\')")\n',
    ]
    for number in online:
        bodies[number - 1] += (
            'n = op.get_bind().exec_driver_sql("SELECT count(*) FROM legacy").scalar()\n'
            f'op.execute(f"COMMENT ON TABLE legacy IS \'seen {number}: {{n}}\'")\n')
    project = _project(tmp_path, db_url, bodies, tenants=2, env_py=FANCY_ENV)
    (project.root / "svc" / "baseline.sql").write_text(
        "CREATE TABLE legacy (id integer PRIMARY KEY);\nINSERT INTO legacy VALUES (1);\n")
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text() + 'baseline = "baseline.sql"\n')
    plain = project.alembic("svc", "upgrade", "head", env={"ALEMBIC_SCHEMA": "svc_plain"})
    assert plain.returncode == 0, plain.stderr
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    targets = _targets(result)
    assert {t["via"] for t in targets.values()} == {"mixed"}
    reference = _dump(db_url, "svc_plain").replace("svc_plain", "SCHEMA")
    for schema in ("svc_t1", "svc_t2"):
        assert version(db_url, schema) == [_head(3)]
        assert _dump(db_url, schema).replace(schema, "SCHEMA") == reference
        assert query(db_url, f"SELECT count(*) FROM {schema}.legacy") == [(2,)]


@pytest.mark.parametrize("victim", ["worker", "runner"])
def test_the_ledger_agrees_after_kills_during_mixed_plans(tmp_path: Path, db_url: str,
                                                          victim: str) -> None:
    """Kills at random moments while every target runs a mixed plan (revision 3 reads the
    database): the ledger agrees with the version tables after each."""
    import random

    from tests.faults.conftest import HEAD, shop_project
    from tests.faults.test_ledger_agreement import _assert_ledger_agrees, kill_and_check

    rng = random.Random(f"mixed-{victim}")
    tenants = 12
    project = shop_project(tmp_path / "p", db_url, tenants, sleep=0.05)
    third = project.root / "shop" / "migrations" / "versions" / "8000aaaa0003.py"
    third.write_text(third.read_text().replace(
        '    op.execute("SELECT pg_sleep(0.05)")',
        '    op.get_bind().exec_driver_sql("SELECT pg_sleep(0.05)")'))
    assert kill_and_check(project, db_url, tenants, victim, rng, trials=5, latest=2.0,
                          restarts=1.0) > 0
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert {t["via"] for t in json.loads(rerun.stdout)["targets"]
            if t["outcome"] == "migrated"} <= {"mixed"}
    assert all(version(db_url, f"shop_s{i:03d}") == [HEAD] for i in range(tenants))
    _assert_ledger_agrees(db_url, tenants)


@pytest.mark.parametrize("env_py", [ENV, ENV.replace(
    "run_migrations()", "run_migrations(transaction_per_migration=True)")],
    ids=["one-transaction", "per-migration"])
def test_downgrade_and_upgrade_again_keep_one_checksum_row_per_applied_revision(
        tmp_path: Path, db_url: str, env_py: str) -> None:
    bodies = _positions(4, {3})
    project = _project(tmp_path, db_url, bodies, tenants=1, env_py=env_py)
    for index in range(4):  # downgrades that drop what the upgrades made
        bodies_path = project.root / "svc" / "migrations" / "versions" / \
            f"9100aaaa{index + 1:04d}_r.py"
        drop = ('op.drop_table("t")' if index == 0 else
                f'op.drop_column("t", "c{index + 1}")')
        if index + 1 == 3:
            drop = 'op.drop_table("seen_3")\n    ' + drop
        bodies_path.write_text(bodies_path.read_text().replace(
            "def downgrade():\n    pass", f"def downgrade():\n    {drop}"))

    def applied() -> list[str]:
        return [r[0] for r in query(db_url, "SELECT revision FROM fleet.applied_revisions "
                                    "WHERE schema_name = 'svc_t1' ORDER BY 1")]

    assert project.fleet("migrate", "--json").returncode == 0
    assert applied() == [_head(n) for n in range(1, 5)]
    down = project.fleet("downgrade", "svc", "-3", "--tenant", "t1", "--yes", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert version(db_url, "svc_t1") == [_head(1)]
    assert applied() == [_head(1)]
    again = project.fleet("migrate", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert version(db_url, "svc_t1") == [_head(4)]
    assert applied() == [_head(n) for n in range(1, 5)]
    down = project.fleet("downgrade", "svc", "base", "--tenant", "t1", "--yes", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    assert applied() == []


AUTOCOMMIT = [
    'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))\n',
    'with op.get_context().autocommit_block():\n'
    '    op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_t_id ON t (id)")\n',
    'op.add_column("t", sa.Column("c", sa.Integer))\n'
    'if os.environ.get("ATTACK_FAIL"):\n'
    '    op.execute("SELECT 1/0")\n'
    'if os.environ.get("ATTACK_SLEEP"):\n'
    '    op.execute("SELECT pg_sleep(30)")\n',
]


def _applied(db_url: str, schema: str) -> list[str]:
    return [r[0] for r in query(db_url, "SELECT revision FROM fleet.applied_revisions "
                                "WHERE schema_name = %s ORDER BY 1", (schema,))]


def test_revisions_committed_by_an_autocommit_block_keep_their_checksum_rows(
        tmp_path: Path, db_url: str) -> None:
    """An autocommit_block commits the revisions before it (Alembic commits the
    transaction first): their checksum rows must be in that commit, not gathered for a
    final commit that a later failing revision never reaches."""
    project = _project(tmp_path, db_url, AUTOCOMMIT, tenants=1)
    result = project.fleet("migrate", "--json", env={"ATTACK_FAIL": "1"})
    target = _targets(result)["svc_t1"]
    assert target["outcome"] == "failed" and "division by zero" in target["error"], target
    assert version(db_url, "svc_t1") == [_head(1)]
    assert _applied(db_url, "svc_t1") == [_head(1)]
    again = project.fleet("migrate", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert version(db_url, "svc_t1") == [_head(3)]
    assert _applied(db_url, "svc_t1") == [_head(1), _head(2), _head(3)]


def test_a_runner_killed_after_an_autocommit_block_leaves_the_ledger_agreeing(
        tmp_path: Path, db_url: str) -> None:
    import time

    from tests.faults.conftest import kill_group, start_fleet

    project = _project(tmp_path, db_url, AUTOCOMMIT, tenants=1)
    runner = start_fleet(project, "migrate", "--json", env={"ATTACK_SLEEP": "1"})
    deadline = time.monotonic() + 60
    while not query(db_url, "SELECT 1 FROM pg_stat_activity WHERE datname = "
                    "current_database() AND query LIKE 'SELECT pg_sleep(30)%%'"):
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.1)
    kill_group(runner)
    assert version(db_url, "svc_t1") == [_head(1)]
    assert _applied(db_url, "svc_t1") == [_head(1)]


def test_two_runners_racing_on_mixed_plans_migrate_each_target_once(
        tmp_path: Path, db_url: str) -> None:
    """Each target's lock goes with the one-string session reset: the second runner takes
    the targets the first is done with at once, never migrates one twice, and the ledger
    has one checksum row per revision."""
    from tests.faults.conftest import start_fleet

    bodies = _positions(4, {2})
    bodies[2] += 'op.execute("SELECT pg_sleep(0.2)")\n'
    project = _project(tmp_path, db_url, bodies, tenants=8,
                       extra="lock_wait = 30\n")
    runners = [start_fleet(project, "migrate", "--json", "--jobs", "2") for _ in range(2)]
    outs = [runner.communicate(timeout=240) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], outs
    outcomes: dict[str, list[str]] = {}
    for out, _err in outs:
        for target in json.loads(out)["targets"]:
            outcomes.setdefault(target["schema"], []).append(target["outcome"])
    for schema, seen in outcomes.items():
        assert sorted(seen) == ["migrated", "skipped"], (schema, seen)
        assert version(db_url, schema) == [_head(4)]
        assert _applied(db_url, schema) == [_head(n) for n in range(1, 5)]
        assert query(db_url, f"SELECT n FROM {schema}.seen_2") == [(2,)]
    assert not query(db_url, "SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = "
                     "l.database WHERE l.locktype = 'advisory' AND d.datname = "
                     "current_database()")


def test_without_a_ledger_a_mixed_plan_reads_where_it_ended(tmp_path: Path,
                                                              db_url: str) -> None:
    """With ``ledger = false`` there is no in-transaction read to trust: the version table
    is read after the commit, and a failed target still reports where it stayed."""
    bodies = _positions(4, {2})
    bodies[3] += 'if os.environ.get("ATTACK_FAIL"):\n    op.execute("SELECT 1/0")\n'
    project = _project(tmp_path, db_url, bodies, tenants=2, extra="ledger = false\n")
    failed = project.fleet("migrate", "--json", "--tenant", "t1", env={"ATTACK_FAIL": "1"})
    target = _targets(failed)["svc_t1"]
    assert target["outcome"] == "failed" and target["error"].startswith(
        f"revision {_head(4)}: "), target
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    for target in _targets(result).values():
        assert target["via"] == "mixed" and target["to"] == [_head(4)], target
    assert version(db_url, "svc_t1") == version(db_url, "svc_t2") == [_head(4)]
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'fleet'")
