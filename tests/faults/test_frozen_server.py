"""A server that stops answering (a frozen host, a postmaster stopped by SIGSTOP): fleet gives
up on it within its connect timeout instead of waiting without limit.

The fault is real: a private PostgreSQL whose postmaster is stopped with SIGSTOP. The kernel
still accepts the TCP connection into the listen queue, so a client sees what it sees of a
frozen host: a connection that opens and then never answers. Sessions already open keep
working (their backends are not stopped), as on a server whose postmaster hangs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import DDL_LOG, private_tmp, query, version
from tests.faults.conftest import HEAD, kill_group, shop_project, start_fleet

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT = 10
"""Fleet's default connect timeout, in seconds (docs/safety.md)."""


@contextlib.contextmanager
def private_server(name: str) -> Iterator[tuple[EmbeddedServer, str]]:
    folder = private_tmp("fleet-test-frozen-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = server.url(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DDL_LOG)
        yield server, url
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(_postmaster(server), signal.SIGCONT)
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _postmaster(server: EmbeddedServer) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def frozen(server: EmbeddedServer) -> Iterator[None]:
    pid = _postmaster(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _finish(runner, limit: float) -> tuple[str, str, float]:
    started = time.monotonic()
    try:
        out, err = runner.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group(runner)
        raise AssertionError(
            f"fleet still waiting on a frozen server after {limit:.0f} s") from None
    return out, err, time.monotonic() - started


def _frozen_run(server: EmbeddedServer, project, *args: str,
                env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """``fleet ARGS`` started while ``server``'s postmaster is stopped: its exit code,
    output and seconds (the server answers again afterwards)."""
    with frozen(server):
        runner = start_fleet(project, *args, env=env)
        out, err, took = _finish(runner, 6 * CONNECT_TIMEOUT)
    return runner.returncode, out, err, took


@pytest.mark.parametrize("command", [["status", "--json"], ["migrate", "--json"],
                                     ["log", "--json"]])
def test_a_command_gives_up_on_a_frozen_server_within_its_connect_timeout(
        tmp_path: Path, command: list[str]) -> None:
    with private_server("frozen") as (server, url):
        project = shop_project(tmp_path / "p", url, 2)
        assert project.fleet("migrate").returncode == 0
        code, out, err, took = _frozen_run(server, project, *command)
        assert code == 2, out + err
        error = json.loads(out)["error"]
        assert "timeout" in error["message"], error
        assert error["message"].startswith("cannot connect to postgresql://"), error
        assert "connect_timeout" in error["hint"], error
        assert took < 3 * CONNECT_TIMEOUT, took
        # The server answers again: nothing was left behind that stops the next command.
        again = project.fleet("status", "--json")
        assert again.returncode == 0, again.stdout + again.stderr


def test_a_server_frozen_mid_run_ends_the_run_and_its_report_is_what_happened(
        tmp_path: Path) -> None:
    """The postmaster freezes while targets migrate: sessions already open (the workers'
    and fleet's own) go on, a session that must be opened fails after the connect timeout,
    and the run ends either way, reporting what the database holds; once the server
    answers, a rerun migrates whatever is left."""
    with private_server("frozenmid") as (server, url):
        project = shop_project(tmp_path / "p", url, 12, sleep=0.4)
        runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
        time.sleep(2.5)
        with frozen(server):
            out, err, took = _finish(runner, 10 * CONNECT_TIMEOUT)
        assert runner.returncode in (0, 1), out + err
        assert took < 6 * CONNECT_TIMEOUT, took
        payload = json.loads(out)
        outcomes = {t["schema"]: t["outcome"] for t in payload["targets"]}
        assert len(outcomes) == 12, outcomes
        # What the report says happened is what the database holds.
        for schema, outcome in outcomes.items():
            assert (version(url, schema) == [HEAD]) == (outcome == "migrated"), (schema, outcome)
        rerun = project.fleet("migrate", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert all(version(url, f"shop_s{i:03d}") == [HEAD] for i in range(12))


@pytest.mark.parametrize("how", ["url", "environment"])
def test_the_users_own_connect_timeout_wins(tmp_path: Path, how: str) -> None:
    """``?connect_timeout=`` in the URL, or libpq's ``PGCONNECT_TIMEOUT``, replaces the
    default: a shorter wait is the user's to choose (a longer one too)."""
    with private_server("frozenown") as (server, url):
        own = f"{url}&connect_timeout=2" if how == "url" else url
        project = shop_project(tmp_path / "p", own, 2)
        assert project.fleet("migrate").returncode == 0
        code, out, err, took = _frozen_run(
            server, project, "status", "--json",
            env={"PGCONNECT_TIMEOUT": "2"} if how == "environment" else {})
        assert code == 2, out + err
        assert "timeout" in json.loads(out)["error"]["message"], out
        assert took < CONNECT_TIMEOUT - 2, took


LEGACY_ENV = '''\
import os

from alembic import context
from sqlalchemy import create_engine, pool, text

schema = os.environ["ALEMBIC_SCHEMA"]
url = os.environ["DATABASE_URI"].replace("postgresql://", "postgresql+psycopg://", 1)
with create_engine(url, poolclass=pool.NullPool).connect() as connection:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET search_path TO "{schema}"'))
    connection.commit()
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()
'''


def test_plain_alembic_processes_of_a_legacy_env_give_up_too(tmp_path: Path) -> None:
    """A service whose env.py opens its own engine runs as ``alembic`` processes, which fleet
    cannot hand connect arguments: they get libpq's ``PGCONNECT_TIMEOUT`` instead, so a
    postmaster that freezes mid-run fails their targets instead of holding the run."""
    with private_server("frozenlegacy") as (server, url):
        project = shop_project(tmp_path / "p", url, 8, sleep=0.3)
        (project.root / "shop" / "migrations" / "env.py").write_text(LEGACY_ENV)
        runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
        time.sleep(4.0)
        with frozen(server):
            out, err, _ = _finish(runner, 12 * CONNECT_TIMEOUT)
        assert runner.returncode == 1, out + err
        payload = json.loads(out)
        outcomes = {t["schema"]: t["outcome"] for t in payload["targets"]}
        assert "failed" in outcomes.values(), outcomes
        for schema, outcome in outcomes.items():
            if outcome == "migrated":
                assert version(url, schema) == [HEAD], schema
        rerun = project.fleet("migrate", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert all(version(url, f"shop_s{i:03d}") == [HEAD] for i in range(8))


def test_a_stop_while_workers_wait_on_a_frozen_server_ends_at_once_and_is_recorded(
        tmp_path: Path) -> None:
    """The postmaster freezes inside the first target's first revision: the other workers
    wait to open their sessions. A SIGTERM then must end the run well inside Kubernetes'
    30 s grace period, with its report, and the ledger must count the targets it
    reports failed: the run's own session to the ledger still works (its backend is not
    frozen), so settling the cut-off targets opens no new session that would wait for
    the connect timeout, one target after another."""
    with private_server("frozenstop") as (server, url):
        project = shop_project(tmp_path / "p", url, 4, sleep=0.2)
        marker = tmp_path / "frozen-once"
        pidfile = server.pgdata / "postmaster.pid"
        first = project.root / "shop" / "migrations" / "versions" / "8000aaaa0001.py"
        first.write_text(first.read_text().replace("def upgrade():\n", (
            "def upgrade():\n"
            "    import os, signal\n"
            f"    if not os.path.exists({str(marker)!r}):\n"
            f"        open({str(marker)!r}, 'w').close()\n"
            f"        os.kill(int(open({str(pidfile)!r}).readline()), signal.SIGSTOP)\n")))
        try:
            runner = start_fleet(project, "migrate", "--json", "--jobs", "3")
            deadline = time.monotonic() + 60
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.0)  # the other workers are waiting for their sessions now
            runner.send_signal(signal.SIGTERM)
            out, err, took = _finish(runner, 10 * CONNECT_TIMEOUT)
        finally:
            os.kill(_postmaster(server), signal.SIGCONT)
        assert runner.returncode == 143, out + err
        assert took < CONNECT_TIMEOUT, took
        payload = json.loads(out)
        assert payload["end"] == "terminated", payload
        for target in payload["targets"]:
            if target["outcome"] == "migrated":
                assert version(url, target["schema"]) == [HEAD], target
        reported = {t["schema"]: t["outcome"] for t in payload["targets"]
                    if t["outcome"] in ("migrated", "failed")}
        assert "failed" in reported.values(), payload
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT outcome FROM fleet.runs").fetchall() == [
                ("terminated",)]
            assert dict(conn.execute(
                "SELECT schema_name, outcome FROM fleet.run_targets").fetchall()) == reported
            assert conn.execute("SELECT migrated, failed FROM fleet.runs").fetchone() == (
                payload["summary"]["migrated"], payload["summary"]["failed"])
        rerun = project.fleet("migrate", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr


def test_an_asyncpg_urls_own_timeout_is_taken_as_seconds_everywhere(tmp_path: Path) -> None:
    """asyncpg's connect timeout is ``?timeout=`` (libpq's ``connect_timeout`` means nothing
    to it): given in the URL it migrates (SQLAlchemy hands it over as a string, which
    asyncpg cannot add to a float), and fleet's own sessions, on psycopg, wait as long."""
    with private_server("frozenasync") as (server, url):
        own = url.replace("postgresql://", "postgresql+asyncpg://", 1) + "&timeout=3"
        project = shop_project(tmp_path / "p", own, 2)
        done = project.fleet("migrate", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        code, out, err, took = _frozen_run(server, project, "status", "--json")
        assert code == 2, out + err
        assert "timeout" in json.loads(out)["error"]["message"], out
        assert took < CONNECT_TIMEOUT - 2, took


@pytest.mark.parametrize("command", [["wait", "--timeout", "3"],
                                     ["migrate", "--wait-for-db", "3"]])
def test_waiting_for_a_frozen_server_ends_at_the_users_timeout(
        tmp_path: Path, command: list[str]) -> None:
    """``fleet wait --timeout S`` and ``--wait-for-db S`` give up when S has passed, not a
    connect timeout later: each attempt waits only for the time left."""
    with private_server("frozenwait") as (server, url):
        project = shop_project(tmp_path / "p", url, 2)
        assert project.fleet("migrate").returncode == 0
        code, out, err, took = _frozen_run(server, project, *command)
        assert code == 2, out + err
        assert "still not accepting connections after 3s" in out + err, out + err
        assert took < 3 + 3, took


def test_the_pg_dump_fleet_starts_gives_up_on_a_frozen_server(tmp_path: Path) -> None:
    """``tenants remove --dump`` runs pg_dump, which connects by itself: a server that
    freezes as it starts (a wrapper on PATH stops the postmaster, then runs the real one)
    fails the command within the connect timeout, and nothing is dropped."""
    with private_server("frozendump") as (server, url):
        project = shop_project(tmp_path / "p", url, 2)
        assert project.fleet("migrate").returncode == 0
        real = server.bin_path() / "pg_dump"
        tools = tmp_path / "bin"
        tools.mkdir()
        wrapper = tools / "pg_dump"
        pidfile = server.pgdata / "postmaster.pid"
        wrapper.write_text(
            "#!/bin/sh\n"
            'case "$1" in --version) ;; *) kill -STOP "$(head -1 '
            f"{pidfile})\" ;; esac\nexec {real} \"$@\"\n")
        wrapper.chmod(0o755)
        try:
            runner = start_fleet(project, "tenants", "remove", "s001", "--yes", "--json",
                                 "--dump", str(tmp_path / "s001.sql"),
                                 env={"PATH": f"{tools}:{os.environ['PATH']}"})
            out, err, took = _finish(runner, 6 * CONNECT_TIMEOUT)
        finally:
            os.kill(_postmaster(server), signal.SIGCONT)
        assert runner.returncode != 0, out + err
        assert took < 3 * CONNECT_TIMEOUT, took
        assert version(url, "shop_s001") == [HEAD]  # not dropped without its dump


def test_a_url_naming_a_connection_service_is_bounded_too(tmp_path: Path) -> None:
    """A service file usually says only where the server is: the connect timeout reaches
    its sessions through ``PGCONNECT_TIMEOUT`` (which the file may still override)."""
    with private_server("frozensvc") as (server, _url):
        services = tmp_path / "pg_service.conf"
        services.write_text(f"[frozensvc]\nhost={server.pgdata}\nport={_port(server)}\n"
                            "user=postgres\ndbname=frozensvc\n")
        project = shop_project(tmp_path / "p", "postgresql:///frozensvc?service=frozensvc", 2)
        env = {"PGSERVICEFILE": str(services)}
        done = project.fleet("migrate", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        code, out, err, took = _frozen_run(server, project, "status", "--json", env=env)
        assert code == 2, out + err
        assert took < 2 * CONNECT_TIMEOUT, took


def _port(server: EmbeddedServer) -> str:
    return (server.pgdata / "postmaster.pid").read_text().splitlines()[3].strip()


def test_waiting_names_only_the_frozen_database(tmp_path: Path, db_url: str) -> None:
    """One database frozen, another healthy: the frozen one may take all of ``--timeout``,
    but the healthy one is still asked, and only the frozen one is named as down."""
    with private_server("frozenpair") as (server, url):
        project = shop_project(tmp_path / "p", url, 1)
        shutil.copytree(project.root / "shop", project.root / "other")
        config = project.root / "fleet.toml"
        config.write_text(config.read_text() + (
            f'\n[services.other]\npath = "other"\nschema = "other_{{tenant}}"\n'
            f'database = "{db_url}"\n'))
        code, out, err, took = _frozen_run(server, project, "wait", "--timeout", "3", "--json")
        assert code == 2, out + err
        message = json.loads(out)["error"]["message"]
        assert "frozenpair" in message, message
        healthy = query(db_url, "SELECT current_database()")[0][0]
        assert f"/{healthy}" not in message, message
        assert took < 3 + 2 * 3, took
