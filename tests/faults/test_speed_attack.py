"""Faults against the per-target round-trip savings: the session reset in one string, the
mixed plan inside one Alembic run, the version table read once, the failed target that
keeps its connection. Each runs the installed ``fleet`` against a real PostgreSQL."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, query, version

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
def superuser_role(db_url: str):
    import uuid
    name = f"attack2_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {name} SUPERUSER NOLOGIN")
    try:
        yield name
    finally:
        query(db_url, f"DROP ROLE IF EXISTS {name}")


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
