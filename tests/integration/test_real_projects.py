"""Real projects as they are: their driver, their import paths, their noisy revisions.

Each case is one way a published project's history failed under fleet where plain Alembic
worked: a revision relying on psycopg2's client-side interpolation, an asyncpg project's
``%`` in driver SQL, an env.py that puts ``src/`` on ``sys.path``, revisions that print.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, DatabaseFactory, Project, query, version
from tests.integration.test_parallel import _service

pytestmark = pytest.mark.slow


def _revision(rev: str, down: str | None, body: str, header: str = "") -> str:
    return (f'import sqlalchemy as sa\nfrom alembic import op\n{header}\n'
            f'revision = "{rev}"\ndown_revision = {down!r}\nbranch_labels = None\n'
            f'depends_on = None\n\n\ndef upgrade():\n' + textwrap.indent(
                textwrap.dedent(body).strip(), "    ") + "\n\n\ndef downgrade():\n    pass\n")


def _project(tmp_path: Path, url: str, services: dict[str, dict[str, str]],
             extra: str = "", tenants: str = '["a", "b"]') -> Project:
    root = tmp_path / "proj"
    blocks = []
    for name, revisions in services.items():
        _service(root, name, revisions)
        blocks.append(f'[services.{name}]\npath = "{name}"\nschema = "{name}_{{tenant}}"\n')
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = {tenants}\n{extra}\n' + "\n".join(blocks))
    return Project(root, {"DATABASE_URI": url}, url, url)


def _driver_url(db_url: str, driver: str) -> str:
    return db_url.replace("postgresql://", f"postgresql+{driver}://", 1)


# -- drivers ---------------------------------------------------------------------------------

LITERAL = _revision("7100aaaa0001", None, '''
    op.create_table("t", sa.Column("n", sa.Integer))
    t = sa.table("t", sa.column("n", sa.Integer))
    # Works with psycopg2's client-side interpolation; psycopg 3 binds '0' as a string.
    op.get_bind().execute(t.insert().values(n=sa.literal("0")))
''')

PERCENT_I = _revision("7200aaaa0001", None, '''
    name = op.get_bind().exec_driver_sql("SELECT format('%I', 'made_by_format')").scalar()
    op.create_table(name, sa.Column("id", sa.Integer))
''')


def test_a_psycopg2_project_runs_on_psycopg2(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, _driver_url(db_url, "psycopg2"),
                       {"svc": {"7100aaaa0001_literal.py": LITERAL}})
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    for schema in ("svc_a", "svc_b"):
        assert version(db_url, schema) == ["7100aaaa0001"]
        assert query(db_url, f"SELECT n FROM {schema}.t") == [(0,)]
    ledger = query(db_url, "SELECT schema_name, outcome FROM fleet.run_targets ORDER BY 1")
    assert ledger == [("svc_a", "migrated"), ("svc_b", "migrated")]
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["summary"]["migrated"] == 0


def test_the_same_revision_fails_on_psycopg3_as_it_would_under_plain_alembic(
        tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"svc": {"7100aaaa0001_literal.py": LITERAL},
                                          "fmt": {"7200aaaa0001_format.py": PERCENT_I}})
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1
    failed = {t["service"]: t for t in json.loads(result.stdout)["targets"]}
    assert "DatatypeMismatch" in failed["svc"]["error"]
    assert "postgresql+psycopg2://" in failed["svc"]["hint"]  # what to do about it
    assert "placeholder" in failed["fmt"]["hint"] and "asyncpg" in failed["fmt"]["hint"]


def test_failures_of_a_projects_setup_say_which_key_fixes_them(tmp_path: Path,
                                                                db_url: str) -> None:
    query(db_url, "CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions")
    needs_table = _revision("7110aaaa0001", None, 'op.add_column("made_by_create_all", '
                            'sa.Column("x", sa.Integer))')
    needs_citext = _revision("7120aaaa0001", None, 'op.execute("CREATE TABLE t (e citext)")')
    project = _project(tmp_path, db_url, {"base": {"7110aaaa0001_b.py": needs_table},
                                          "ext": {"7120aaaa0001_e.py": needs_citext}})
    result = project.fleet("migrate", "--json", "--tenant", "a")
    assert result.returncode == 1
    failed = {t["service"]: t for t in json.loads(result.stdout)["targets"]}
    assert "baseline" in failed["base"]["hint"]
    assert "search_path" in failed["ext"]["hint"]


def test_an_asyncpg_project_runs_on_asyncpg(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, _driver_url(db_url, "asyncpg"),
                       {"svc": {"7200aaaa0001_format.py": PERCENT_I}})
    result = project.fleet("migrate", "--json", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    for schema in ("svc_a", "svc_b"):
        assert version(db_url, schema) == ["7200aaaa0001"]
        assert query(db_url, "SELECT 1 FROM pg_tables WHERE schemaname = %s "
                     "AND tablename = 'made_by_format'", (schema,)) == [(1,)]
    status = project.fleet("status", "--json")
    assert status.returncode == 0, status.stderr
    # Plain alembic in the service folder goes through the same driver.
    alembic = project.alembic("svc", "upgrade", "head", env={"ALEMBIC_SCHEMA": "svc_c"})
    assert alembic.returncode == 0, alembic.stderr
    assert version(db_url, "svc_c") == ["7200aaaa0001"]


def test_an_unknown_driver_is_a_clear_configuration_error(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, _driver_url(db_url, "pg8000"),
                       {"svc": {"7200aaaa0001_format.py": PERCENT_I}})
    result = project.fleet("migrate")
    assert result.returncode == 2
    assert "pg8000" in result.stderr and "psycopg2" in result.stderr
    assert "asyncpg" in result.stderr
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'svc_%'")


def test_a_missing_driver_names_the_extra_to_install(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, _driver_url(db_url, "psycopg2"),
                       {"svc": {"7100aaaa0001_literal.py": LITERAL}})
    # A psycopg2 that cannot be imported, first on the path: as if it were not installed.
    shadow = tmp_path / "shadow" / "psycopg2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg2')\n")
    result = project.fleet("migrate", env={"PYTHONPATH": str(shadow.parent)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "alembic-fleet[psycopg2]" in result.stderr
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'svc_%'")


def test_a_driver_missing_in_the_services_own_environment_is_refused_first(
        tmp_path: Path, db_url: str) -> None:
    """The service migrates in its own interpreter, which has no psycopg2 (fleet's has):
    the run is refused before anything runs, saying where to install it (each target
    failed with an internal error, 'a bug in alembic-fleet')."""
    project = _project(tmp_path, _driver_url(db_url, "psycopg2"),
                       {"svc": {"7100aaaa0001_literal.py": LITERAL}})
    python = _own_venv(project.root / "svc", "unused_mod", "1")
    shadow = python.parent.parent / "own" / "psycopg2"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg2')\n")
    result = project.fleet("migrate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "psycopg2" in result.stderr and "svc" in result.stderr, result.stderr
    assert "bug in alembic-fleet" not in result.stderr
    assert str(python) in result.stderr or ".venv" in result.stderr, result.stderr
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'svc_%'")


# -- output ----------------------------------------------------------------------------------

NOISY_ENV = '''\
import logging
import sys

from alembic_fleet.env import run_migrations

print("env.py says hello")
logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True)
run_migrations()
'''

NOISY = _revision("7300aaaa0001", None, '''
    print("upgrade prints to stdout")
    op.create_table("t", sa.Column("id", sa.Integer))
''', header='print("module level print")\n')

NOISY_ONLINE = _revision("7300bbbb0001", None, '''
    print("online upgrade prints to stdout")
    op.get_bind().exec_driver_sql("SELECT 1")
    op.create_table("t", sa.Column("id", sa.Integer))
''')


def test_revision_output_goes_to_stderr_and_json_stays_one_object(tmp_path: Path,
                                                                   db_url: str) -> None:
    project = _project(tmp_path, db_url, {"noisy": {"7300aaaa0001_noisy.py": NOISY},
                                          "online": {"7300bbbb0001_online.py": NOISY_ONLINE}})
    for name in ("noisy", "online"):
        (project.root / name / "migrations" / "env.py").write_text(NOISY_ENV)
    for args in (("migrate", "--json", "--jobs", "2"), ("status", "--json"),
                 ("migrate", "--json"), ("check", "--json"), ("migrate", "--dry-run", "--json")):
        result = project.fleet(*args)
        assert result.returncode in (0, 1, 3), (args, result.stdout, result.stderr)
        json.loads(result.stdout)  # exactly one object, nothing before or after
    first = project.fleet("migrate", "--json", "--tenant", "c", env={"TENANTS": "c"})
    assert json.loads(first.stdout)["summary"]["migrated"] == 2
    assert "upgrade prints to stdout" in first.stderr
    assert "online upgrade prints to stdout" in first.stderr
    sql = project.fleet("migrate", "noisy", "--sql", "--tenant", "d", env={"TENANTS": "d"})
    assert sql.returncode == 0, sql.stderr
    assert "prints to stdout" not in sql.stdout and "hello" not in sql.stdout
    assert "CREATE TABLE" in sql.stdout


# -- import paths ----------------------------------------------------------------------------

PATH_ENV = '''\
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from alembic_fleet.env import run_migrations  # noqa: E402

run_migrations()
'''

USES_SRC = _revision("7400aaaa0001", None, '''
    op.create_table("t", sa.Column("id", sa.Integer), sa.Column("kind", KIND))
''', header="from shapes.types import KIND\n")

USES_FOLDER = _revision("7400bbbb0001", None, '''
    op.create_table("t", sa.Column("id", sa.Integer), sa.Column("kind", WIDTH))
''', header="from folder_types import WIDTH\n")


def test_imports_resolve_as_plain_alembic_resolves_them(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"src": {"7400aaaa0001_src.py": USES_SRC},
                                          "folder": {"7400bbbb0001_folder.py": USES_FOLDER}})
    (project.root / "src" / "migrations" / "env.py").write_text(PATH_ENV)
    package = project.root / "src" / "src" / "shapes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "types.py").write_text("import sqlalchemy as sa\nKIND = sa.String(7)\n")
    (project.root / "folder" / "folder_types.py").write_text(
        "import sqlalchemy as sa\nWIDTH = sa.String(9)\n")
    (project.root / "folder" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nprepend_sys_path = .\n")
    alembic = project.alembic("src", "upgrade", "head", env={"ALEMBIC_SCHEMA": "src_plain"})
    assert alembic.returncode == 0, alembic.stderr
    for args in (("migrate", "--jobs", "2"), ("status",)):
        result = project.fleet(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    check = project.fleet("check", "--json")  # findings (no downgrades) exit 3, loads work
    assert check.returncode == 3, check.stdout + check.stderr
    assert {f["code"] for f in json.loads(check.stdout)["findings"]} <= {"FC201", "FC202", "FC302"}
    assert version(db_url, "src_a") == ["7400aaaa0001"]
    assert version(db_url, "folder_b") == ["7400bbbb0001"]
    width = query(db_url, "SELECT character_maximum_length FROM information_schema.columns "
                  "WHERE table_schema = 'folder_a' AND column_name = 'kind'")
    assert width == [(9,)]


def test_an_import_that_still_fails_names_service_file_module_and_fix(
        tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"src": {"7400aaaa0001_src.py": USES_SRC}})
    for args in (("status",), ("migrate",), ("migrate", "--json")):
        result = project.fleet(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        shown = result.stdout + result.stderr
        assert "internal error" not in shown
        assert "service 'src'" in shown and "7400aaaa0001_src.py" in shown
        assert "shapes" in shown and "sys.path" in shown
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'src_%'")


# -- each service's own interpreter ----------------------------------------------------------

def _own_venv(folder: Path, module: str, value: str) -> Path:
    """A virtual environment in ``folder/.venv`` that sees fleet's packages (alembic-fleet,
    Alembic, SQLAlchemy: as if installed there) plus one module of its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / ".venv")],
                   check=True)
    purelib = Path(subprocess.run(
        [str(folder / ".venv" / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    own = folder / ".venv" / "own"
    own.mkdir()
    (own / f"{module}.py").write_text(f"import sqlalchemy as sa\nTYPE = sa.String({value})\n")
    fleet_site = sysconfig.get_path("purelib")
    (purelib / "fleet_test.pth").write_text(
        f"{own}\nimport site; site.addsitedir({fleet_site!r})\n"
        # Counts this interpreter's starts where a test asks for it.
        "import os; p = os.environ.get('FLEET_TEST_STARTS'); "
        "p and open(p, 'a').write(f\"{' '.join(__import__('sys').argv[1:2])} {os.getpid()}\\n\")\n")
    return folder / ".venv" / "bin" / "python"


def _uses(module: str, rev: str) -> str:
    return _revision(rev, None, '''
        op.create_table("t", sa.Column("id", sa.Integer), sa.Column("v", TYPE))
    ''', header=f"from {module} import TYPE\n")


def test_each_service_runs_in_its_own_environment(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"left": {"7500aaaa0001_l.py": _uses("only_left",
                                                                             "7500aaaa0001")},
                                          "right": {"7500bbbb0001_r.py": _uses("only_right",
                                                                              "7500bbbb0001")}},
                       tenants='["a", "b", "c"]')
    _own_venv(project.root / "left", "only_left", "11")  # found as .venv (no key)
    _own_venv(project.root / "right", "only_right", "22")
    # The command form, with a process in between that stays (as 'uv run' does).
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace(
        '[services.right]\n', '[services.right]\npython = ["sh", "-c", '
        '".venv/bin/python \\"$@\\"; exit $?", "sh"]\n'))
    for module in ("only_left", "only_right"):  # not importable by fleet itself
        assert subprocess.run([sys.executable, "-c", f"import {module}"],
                              capture_output=True).returncode != 0
    status = project.fleet("status", "--json")
    assert status.returncode == 3, status.stdout + status.stderr  # pending
    result = project.fleet("migrate", "--json", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"]["migrated"] == 6
    for tenant in ("a", "b", "c"):
        assert version(db_url, f"left_{tenant}") == ["7500aaaa0001"]
        assert version(db_url, f"right_{tenant}") == ["7500bbbb0001"]
    widths = query(db_url, "SELECT table_schema, character_maximum_length FROM "
                   "information_schema.columns WHERE column_name = 'v' ORDER BY 1")
    assert widths == [("left_a", 11), ("left_b", 11), ("left_c", 11),
                      ("right_a", 22), ("right_b", 22), ("right_c", 22)]
    assert query(db_url, "SELECT count(*) FROM fleet.run_targets WHERE outcome = 'migrated'"
                 ) == [(6,)]
    again = project.fleet("migrate", "--json", "--jobs", "1")
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["migrated"] == 0
    assert project.fleet("status").returncode == 0
    # No worker is left behind.
    leftover = subprocess.run(["pgrep", "-f", "alembic_fleet.remote"], capture_output=True,
                              text=True)
    assert str(project.root) not in leftover.stdout


def test_one_job_does_not_restart_a_service_interpreter_per_target(tmp_path: Path,
                                                                   db_url: str) -> None:
    project = _project(tmp_path, db_url, {"left": {"7500aaaa0001_l.py": _uses("only_left",
                                                                             "7500aaaa0001")},
                                          "plain": {"7300aaaa0001_noisy.py": NOISY}},
                       tenants='["a", "b", "c", "d", "e"]')
    _own_venv(project.root / "left", "only_left", "11")
    starts = tmp_path / "starts.txt"
    result = project.fleet("migrate", "--json", "--jobs", "1",
                           env={"FLEET_TEST_STARTS": str(starts)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"]["migrated"] == 10
    workers = {line for line in starts.read_text().splitlines() if line.startswith("worker")}
    assert len(workers) == 1, starts.read_text()  # one process, not one per target


def test_python_fleet_keeps_fleets_interpreter(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"svc": {"7500aaaa0001_l.py": _uses("only_left",
                                                                            "7500aaaa0001")}})
    _own_venv(project.root / "svc", "only_left", "11")
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('[services.svc]\n',
                                             '[services.svc]\npython = "fleet"\n'))
    result = project.fleet("migrate")
    assert result.returncode == 2  # only_left exists only in the service's own environment
    assert "only_left" in result.stderr and "7500aaaa0001_l.py" in result.stderr


def test_another_alembic_fleet_version_in_the_service_environment_is_refused(
        tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {"svc": {"7500aaaa0001_l.py": _uses("only_left",
                                                                            "7500aaaa0001")}})
    python = _own_venv(project.root / "svc", "only_left", "11")
    stub = project.root / "svc" / ".venv" / "own" / "alembic_fleet"
    stub.mkdir()
    (stub / "__init__.py").write_text('__version__ = "0.0.1"\n')
    (stub / "remote.py").write_text(
        (REPO / "src" / "alembic_fleet" / "remote.py").read_text())
    assert subprocess.run([str(python), "-c", "import alembic_fleet as a; "
                           "assert a.__version__ == '0.0.1'"]).returncode == 0
    for args in (("status",), ("migrate",)):
        result = project.fleet(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "0.0.1" in result.stderr and "install alembic-fleet==" in result.stderr
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'svc_%'")


def test_commands_that_import_revisions_run_them_in_the_service_environment(
        tmp_path: Path, db_url: str, databases: DatabaseFactory) -> None:
    two = _revision("7500aaaa0002", "7500aaaa0001", '''
        op.add_column("t", sa.Column("w", TYPE))
    ''', header="from only_left import TYPE\n").replace(
        "def downgrade():\n    pass", 'def downgrade():\n    op.drop_column("t", "w")')
    first = _uses("only_left", "7500aaaa0001").replace(
        "def downgrade():\n    pass", 'def downgrade():\n    op.drop_table("t")')
    project = _project(tmp_path, db_url, {"left": {"7500aaaa0001_l.py": first,
                                                   "7500aaaa0002_l.py": two},
                                          "plain": {"7300aaaa0001_noisy.py": NOISY}})
    _own_venv(project.root / "left", "only_left", "11")
    sql = project.fleet("migrate", "--sql", "--tenant", "a")
    assert sql.returncode == 0, sql.stderr
    assert "-- left/left_a" in sql.stdout and "-- plain/plain_a" in sql.stdout
    assert "VARCHAR(11)" in sql.stdout
    assert project.fleet("migrate", "--to", "7500aaaa0001", "left").returncode == 0
    assert version(db_url, "left_a") == ["7500aaaa0001"]
    assert project.fleet("migrate").returncode == 0
    down = project.fleet("downgrade", "left", "--tenant", "b", "7500aaaa", "--yes")
    assert down.returncode == 2, down.stderr  # an ambiguous partial id, as Alembic says
    assert "service 'left'" in down.stderr and "'7500aaaa'" in down.stderr
    down = project.fleet("downgrade", "left", "--tenant", "b", "7500aaaa0001", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert version(db_url, "left_b") == ["7500aaaa0001"]
    check = project.fleet("check", "--json", "--all",
                          env={"FLEET_SCRATCH_DATABASE_URL": databases.create("fleet_s")})
    assert check.returncode in (0, 3), check.stdout + check.stderr
    payload = json.loads(check.stdout)
    assert set(payload["checks"]) >= {"left", "plain"}, payload
    assert "cannot load" not in check.stdout
    history = project.fleet("history", "left")
    assert history.returncode == 0 and "7500aaaa0002" in history.stdout


STATEFUL = _revision("7800aaaa0001", None, '''
    op.get_bind()  # runs online
    SEEN.append(1)  # module state, fresh in every plain alembic process
    op.create_table(f"t{len(SEEN)}", sa.Column("id", sa.Integer))
''', header="SEEN = []\n")


def test_module_state_of_a_revision_does_not_carry_to_the_next_target(tmp_path: Path,
                                                                     db_url: str) -> None:
    project = _project(tmp_path, db_url, {"svc": {"7800aaaa0001_s.py": STATEFUL}},
                       tenants='["a", "b", "c"]')
    result = project.fleet("migrate", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    for schema in ("svc_a", "svc_b", "svc_c"):
        assert query(db_url, "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                     "AND tablename LIKE 't%%'", (schema,)) == [("t1",)]


STREAMING = _revision("7900aaaa0002", "7900aaaa0001", """
    bind = op.get_bind()
    op.add_column("t", sa.Column("w", sa.Integer))
    time.sleep(0.3)  # the lock budget is set again before the next statement
    # Streamed rows, as an ORM query's yield_per() does: a server-side cursor.
    rows = bind.execute(sa.text("SELECT id FROM t").execution_options(stream_results=True))
    assert sorted(r.id for r in rows) == [1, 2]
""", header="import time\n")


def test_a_revision_streaming_rows_keeps_its_server_side_cursor(tmp_path: Path,
                                                                db_url: str) -> None:
    first = _revision("7900aaaa0001", None, '''
        op.create_table("t", sa.Column("id", sa.Integer))
        op.execute("INSERT INTO t VALUES (1), (2)")
    ''')
    project = _project(tmp_path, db_url, {"svc": {"7900aaaa0001_a.py": first,
                                                  "7900aaaa0002_b.py": STREAMING}},
                       tenants='["a"]')
    result = project.fleet("migrate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert version(db_url, "svc_a") == ["7900aaaa0002"]


def test_check_with_the_embedded_scratch_reaches_a_service_in_its_own_environment(
        tmp_path: Path, db_url: str) -> None:
    """``fleet check`` against a configured server, with its scratch database on the
    project's embedded server (no scratch URL): the services in fleet's interpreter are
    checked first and the embedded server stopped after them, then a service in its own
    interpreter was handed the URL of that stopped server ("cannot connect")."""
    project = _project(tmp_path, db_url, {"left": {"7500aaaa0001_l.py": _uses(
        "only_left", "7500aaaa0001")}, "plain": {"7300aaaa0001_noisy.py": NOISY}})
    _own_venv(project.root / "left", "only_left", "11")
    check = project.fleet("check", "--json", "--all",
                          env={"FLEET_SCRATCH_DATABASE_URL": ""})
    assert check.returncode in (0, 3), check.stdout + check.stderr
    assert "cannot connect" not in check.stdout + check.stderr
    ran = json.loads(check.stdout)["checks"]
    assert all(any("scratch" in step for step in ran[s]) for s in ("left", "plain")), ran
    assert not (project.root / ".fleet" / "pgdata" / "postmaster.pid").exists()
