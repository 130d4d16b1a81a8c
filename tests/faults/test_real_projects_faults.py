"""Faults in drivers, services' own interpreters, import paths and output, found by an
attack on them: asyncpg past its first target, a downgrade on asyncpg, asyncpg-only URL
parameters, same-named packages under src/, interpreters that print, exit, hang or are
broken, passwords quoted by failing revisions, a run row after every session was
terminated, and delegated commands outliving fleet. Each test failed before its fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query, script, version
from tests.integration.test_real_projects import (
    _driver_url,
    _own_venv,
    _project,
    _revision,
)

pytestmark = pytest.mark.slow

TABLE = _revision("a12a00000001", None, '''
    op.create_table("t", sa.Column("id", sa.Integer))
''').replace("def downgrade():\n    pass", 'def downgrade():\n    op.drop_table("t")')


# -- F1: asyncpg, more than one target per worker -----------------------------------------

def test_asyncpg_worker_survives_its_second_target(tmp_path: Path, db_url: str) -> None:
    """_reset_session runs DISCARD ALL between targets: asyncpg's client-side statement
    cache still names the deallocated server-side statements, so every later target on that
    connection fails with 'prepared statement "__asyncpg_stmt_N__" does not exist'."""
    project = _project(tmp_path, _driver_url(db_url, "asyncpg"), {"svc": {
        "a12a00000001_t.py": TABLE}}, tenants='["a", "b", "c", "d"]')
    result = project.fleet("migrate", "--jobs", "1", "--json")
    assert "prepared statement" not in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"]["migrated"] == 4


def test_asyncpg_lock_timeout_is_retried_not_turned_into_another_error(
        tmp_path: Path, db_url: str) -> None:
    """A lock timeout is transient: the retry on the same (DISCARDed) asyncpg connection
    fails with SQLSTATE 26000 instead, which is not retried and hides the real cause."""
    two = _revision("a12a00000002", "a12a00000001", '''
        op.add_column("t", sa.Column("x", sa.Integer))
    ''')
    project = _project(tmp_path, _driver_url(db_url, "asyncpg"),
                       {"svc": {"a12a00000001_t.py": TABLE}}, tenants='["a"]')
    assert project.fleet("migrate").returncode == 0
    (project.root / "svc" / "migrations" / "versions" / "a12a00000002_t.py").write_text(two)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE svc_a.t")
        release = threading.Timer(3.0, holder.rollback)
        release.start()
        result = project.fleet("migrate", "--lock-timeout", "1", "--retries", "5", "--json")
        release.join()
    assert "prepared statement" not in result.stdout, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


# -- F9: downgrade on asyncpg ----------------------------------------------------------------

@pytest.mark.parametrize("own_python", [False, True])
def test_asyncpg_downgrade(tmp_path: Path, db_url: str, own_python: bool) -> None:
    """commands.downgrade connects with for_migrations=True outside any GreenletBridge:
    'internal error: MissingGreenlet' (in fleet's interpreter and in the service's)."""
    project = _project(tmp_path, _driver_url(db_url, "asyncpg"),
                       {"svc": {"a12a00000001_t.py": TABLE}}, tenants='["a"]')
    if own_python:
        _own_venv(project.root / "svc", "unused_mod", "1")
    assert project.fleet("migrate").returncode == 0
    result = project.fleet("downgrade", "svc", "--tenant", "a", "base", "--yes")
    assert "MissingGreenlet" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert version(db_url, "svc_a") == []


# -- F7: asyncpg-only URL parameters ----------------------------------------------------------

def test_asyncpg_url_parameters_plain_alembic_accepts(tmp_path: Path, db_url: str) -> None:
    """fleet's own psycopg 3 connections get the asyncpg URL's query verbatim and refuse it
    ('invalid connection option'), though the URL works for the service's driver."""
    url = _driver_url(db_url, "asyncpg") + ("&" if "?" in db_url else "?") + (
        "prepared_statement_cache_size=0")
    project = _project(tmp_path, url, {"svc": {"a12a00000001_t.py": TABLE}}, tenants='["a"]')
    alembic = project.alembic("svc", "upgrade", "head", env={"ALEMBIC_SCHEMA": "svc_plain"})
    assert alembic.returncode == 0, alembic.stderr
    result = project.fleet("migrate")
    assert result.returncode == 0, result.stdout + result.stderr


# -- F6: same-named packages put on sys.path by env.py / prepend_sys_path --------------------

@pytest.mark.parametrize("how", ["env.py", "prepend_sys_path"])
def test_services_with_same_package_under_src_do_not_cross_import(
        tmp_path: Path, db_url: str, how: str) -> None:
    """isolate_imports only forgets modules named like the service folder's top-level
    entries; a package found through src/ (env.py's sys.path.insert or prepend_sys_path =
    src) stays cached, and its folder stays on sys.path: service 'two' silently gets 'one's
    package (VARCHAR(11) instead of 22). Plain alembic in each folder gets it right."""
    def uses(rev: str) -> str:
        return _revision(rev, None, '''
            op.create_table("t", sa.Column("id", sa.Integer), sa.Column("v", KIND))
        ''', header="from shapes.types import KIND\n")
    project = _project(tmp_path, db_url, {"one": {"a12b00000001_o.py": uses("a12b00000001")},
                                          "two": {"a12c00000001_t.py": uses("a12c00000001")}})
    for name, width in (("one", 11), ("two", 22)):
        folder = project.root / name
        package = folder / "src" / "shapes"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "types.py").write_text(f"import sqlalchemy as sa\nKIND = sa.String({width})\n")
        if how == "env.py":
            (folder / "migrations" / "env.py").write_text(
                "import os, sys\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), "
                "'..', 'src'))\nfrom alembic_fleet.env import run_migrations\nrun_migrations()\n")
        else:
            (folder / "alembic.ini").write_text(
                "[alembic]\nscript_location = %(here)s/migrations\nprepend_sys_path = src\n")
    result = project.fleet("migrate", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    widths = query(db_url, "SELECT table_schema, character_maximum_length FROM "
                   "information_schema.columns WHERE column_name = 'v' ORDER BY 1")
    assert widths == [("one_a", 11), ("one_b", 11), ("two_a", 22), ("two_b", 22)]


# -- F2 / F3 / F4 / F5: hostile interpreters --------------------------------------------------

def _venv_with_sitecustomize(project_root: Path, code: str) -> None:
    python = _own_venv(project_root / "svc", "unused_mod", "1")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "sitecustomize.py").write_text(code)


def test_service_python_printing_at_startup(tmp_path: Path, db_url: str) -> None:
    """A sitecustomize (or .pth, or a wrapper) printing to stdout before the protocol starts
    corrupts the pickled answer of 'remote call': every command fails with 'internal error:
    UnpicklingError: invalid load key'."""
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": TABLE}})
    _venv_with_sitecustomize(project.root, "print('hello from sitecustomize')\n")
    for args in (("status", "--json"), ("migrate", "--json")):
        result = project.fleet(*args)
        assert "UnpicklingError" not in result.stdout + result.stderr, (args, result.stdout)
        assert result.returncode in (0, 3), (args, result.stdout, result.stderr)
        json.loads(result.stdout)


def test_interpreter_exiting_zero_without_answer_is_not_an_interrupt(
        tmp_path: Path, db_url: str) -> None:
    """pickle.loads(b'') raises EOFError, which click turns into Abort: exit 130
    'interrupted' for what is a broken interpreter (exit 2 expected, naming the service)."""
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": TABLE}})
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('[services.svc]\n',
                                             '[services.svc]\npython = "/bin/true"\n'))
    result = project.fleet("status")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "service 'svc'" in result.stderr


def test_revision_calling_sys_exit_in_service_interpreter(tmp_path: Path, db_url: str) -> None:
    """SystemExit from a revision module escapes remote._call (it catches Exception only):
    with code 0 the coordinator reports 'interrupted' (130), with another code 'cannot run
    its interpreter' — never the file that did it."""
    bad = _revision("a12a00000001", None, "pass", header="import sys\nsys.exit(0)\n")
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": bad}})
    _own_venv(project.root / "svc", "unused_mod", "1")
    result = project.fleet("status")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "a12a00000001_t.py" in result.stderr, result.stderr


def test_hanging_interpreter_does_not_hang_fleet(tmp_path: Path, db_url: str) -> None:
    """interpreters.call has no timeout (START_TIMEOUT covers workers only): an interpreter
    that hangs at start hangs 'fleet status' forever, silently."""
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": TABLE}})
    project.env["FLEET_INTERPRETER_TIMEOUT"] = "3"
    hang = project.root / "svc" / "hang"
    hang.write_text("#!/bin/sh\nsleep 600\n")
    hang.chmod(0o755)
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('[services.svc]\n',
                                             '[services.svc]\npython = "hang"\n'))
    started = time.monotonic()
    process = subprocess.Popen([script("fleet"), "status"], cwd=project.root,
                               env={**os.environ, **project.env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        process.wait(60)  # far longer than the interpreter's start timeout
    except subprocess.TimeoutExpired:
        pytest.fail(f"fleet status still waiting after {time.monotonic() - started:.0f}s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # fleet and the hanging interpreter
        process.wait()
    assert process.returncode == 2
    assert "FLEET_INTERPRETER_TIMEOUT" in process.stderr.read().decode()


def test_broken_venv_is_not_silently_replaced_by_fleets_python(tmp_path: Path,
                                                               db_url: str) -> None:
    """A .venv whose bin/python is a dangling symlink (its base Python was upgraded away)
    is skipped by default_for (Path.exists() follows the link): the service's code then
    runs in fleet's interpreter without a word."""
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": TABLE}})
    bin_dir = project.root / "svc" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to("/nonexistent/python3.99")
    result = project.fleet("status")
    assert result.returncode == 2, result.stdout + result.stderr
    assert ".venv" in result.stderr


# -- F8: passwords in import and --sql errors ---------------------------------------------------

@pytest.mark.parametrize("own_python", [False, True])
def test_password_quoted_by_a_failing_revision_is_scrubbed(tmp_path: Path, db_url: str,
                                                            own_python: bool) -> None:
    """_load_error (scripts.py) and remote._call's internal error do not scrub(): the
    password registered from the URL is printed as is (the same error while migrating
    online is scrubbed)."""
    secret = "hunter2SECRETpw"
    url = db_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in url  # trust auth: the password is not checked, only carried
    at_import = _revision("a12a00000001", None, "pass",
                          header=f'raise RuntimeError("settings: password={secret}")\n')
    in_upgrade = _revision("a12d00000001", None,
                           f'raise RuntimeError("cannot reach db with password {secret}")')
    project = _project(tmp_path, url, {"svc": {"a12a00000001_t.py": at_import}},
                       tenants='["a"]')
    other = _project(tmp_path / "other", url, {"svc": {"a12d00000001_t.py": in_upgrade}},
                     tenants='["a"]')
    if own_python:
        _own_venv(project.root / "svc", "unused_mod", "1")
        _own_venv(other.root / "svc", "unused_mod", "1")
    shown = []
    for args in (("status",), ("migrate", "--json")):
        result = project.fleet(*args)
        shown.append(result.stdout + result.stderr)
    result = other.fleet("migrate", "--sql")
    shown.append(result.stdout + result.stderr)
    assert all(secret not in text for text in shown), shown


# -- F10: the run row after a server restart -------------------------------------------------

def test_run_row_is_closed_after_connections_were_reset(tmp_path: Path, db_url: str) -> None:
    """The recorder keeps one psycopg 3 connection for the whole run; a server restart
    (here: every session terminated) mid-run is survived by the targets (retried) but the
    run row stays outcome 'running', migrated 0, finished_at NULL, forever."""
    slow = _revision("a12a00000001", None, '''
        op.create_table("t", sa.Column("id", sa.Integer))
        op.execute("SELECT pg_sleep(3)")
    ''')
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": slow}})
    process = subprocess.Popen([script("fleet"), "migrate", "--jobs", "2"], cwd=project.root,
                               env={**os.environ, **project.env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if query(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                 "current_database() AND query LIKE '%%pg_sleep(3%%' AND state = 'active' "
                 "AND pid <> pg_backend_pid()")[0][0]:
            break
        time.sleep(0.2)
    query(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
          "current_database() AND pid <> pg_backend_pid()")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    runs = query(db_url, "SELECT outcome, migrated, finished_at IS NOT NULL FROM fleet.runs")
    assert runs == [("succeeded", 2, True)], (runs, err)


# -- F11: a delegated command outlives the coordinator ---------------------------------------

SLOW_DOWN = _revision("a12a00000001", None, '''
    op.create_table("t", sa.Column("id", sa.Integer))
''').replace("def downgrade():\n    pass",
             'def downgrade():\n    op.execute("SELECT pg_sleep(6)")\n    op.drop_table("t")')


@pytest.mark.parametrize(("wrapper", "signum"), [(False, signal.SIGKILL),
                                                 (True, signal.SIGTERM)])
def test_delegated_downgrade_dies_with_fleet(tmp_path: Path, db_url: str, wrapper: bool,
                                             signum: int) -> None:
    """'remote call' processes get neither the lifeline nor a parent-death signal (only
    workers do): SIGKILL of fleet, or SIGTERM with a process in between (uv run, sh -c)
    where subprocess.run's kill() reaches only the wrapper, leaves the service interpreter
    running the downgrade to its COMMIT after fleet reported it killed / 'terminated'
    (exit 143)."""
    project = _project(tmp_path, db_url, {"svc": {"a12a00000001_t.py": SLOW_DOWN}},
                       tenants='["a"]')
    _own_venv(project.root / "svc", "unused_mod", "1")
    if wrapper:
        toml = project.root / "fleet.toml"
        toml.write_text(toml.read_text().replace(
            '[services.svc]\n', '[services.svc]\npython = ["sh", "-c", '
            '".venv/bin/python \\"$@\\"; exit $?", "sh"]\n'))
    assert project.fleet("migrate").returncode == 0
    process = subprocess.Popen([script("fleet"), "downgrade", "svc", "--tenant", "a", "base",
                                "--yes"], cwd=project.root, env={**os.environ, **project.env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not query(
            db_url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE '%%pg_sleep(6%%' AND pid <> pg_backend_pid()"):
        time.sleep(0.2)
    process.send_signal(signum)
    process.communicate(timeout=60)
    time.sleep(8)  # longer than the downgrade's pg_sleep
    assert version(db_url, "svc_a") == ["a12a00000001"], "the downgrade committed after fleet died"
