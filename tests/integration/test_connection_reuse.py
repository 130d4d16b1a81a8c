"""One server session for fleet's own work in a command, handed on clean.

A command reads the catalog, checks the sessions are direct, reads the ledger, records the
run and migrates: each phase used to open a session of its own (eight for one new tenant),
which costs a connection's round trips, TLS and authentication each time on a remote server.
fleet's own sessions are now kept for the next phase of the same command, reset as
``DISCARD ALL`` resets one; the sessions revisions migrate on are never kept. These tests
check what that must never change: what a later phase or a forked worker finds in its
session, and that a session the server ended is replaced, not used.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from alembic_fleet.databases import Databases
from alembic_fleet.model.targets import Database
from tests.conftest import Project, query, temporary_role


def _sessions(watch: psycopg.Connection) -> int:
    """Sessions the server has counted for ``watch``'s database, once a backend that just
    ended has been counted (read on one open session, ``watch``, until it stays the
    same)."""
    seen = None
    for _ in range(40):
        watch.execute("SELECT pg_stat_clear_snapshot()")
        now = watch.execute("SELECT sessions FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()[0]
        if now == seen:
            return now
        seen = now
        time.sleep(0.1)
    return seen


def test_one_new_tenant_takes_three_sessions_not_eight(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    with psycopg.connect(example.db_url, autocommit=True) as watch:
        before = _sessions(watch)
        done = example.fleet("tenants", "add", "acme", "--jobs", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        opened = _sessions(watch) - before
    assert query(example.db_url, "SELECT version_num FROM auth_acme.alembic_version")
    # Fleet's own session, the second one that proves sessions are not pooled per
    # transaction (see check_session_pooling), and the session the targets migrate on.
    assert opened <= 3, opened


@pytest.fixture
def own(db_url: str, tmp_path) -> Databases:
    databases = Databases(tmp_path / "embedded")
    yield databases
    databases.dispose()


def _pid(connection) -> int:
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def test_a_kept_session_is_handed_on_as_a_new_one_would_be(db_url: str, own: Databases
                                                           ) -> None:
    database = Database(url=db_url)
    with temporary_role(db_url, "fleet_reuse") as role:
        query(db_url, f'GRANT "{role}" TO CURRENT_USER')
        with own.connect(database) as connection:
            first = _pid(connection)
            for statement in ("SET search_path = nowhere", "SET lock_timeout = '1ms'",
                              "SELECT pg_advisory_lock(4242)",
                              "CREATE TEMP TABLE left_behind (x int)",
                              "PREPARE left_behind AS SELECT 1", "LISTEN left_behind",
                              f'SET ROLE "{role}"'):
                connection.exec_driver_sql(statement)
            connection.commit()
            connection.exec_driver_sql("SELECT 1")  # and a transaction left open
        with own.connect(database) as connection:
            assert _pid(connection) == first  # the same session, kept
            state = connection.exec_driver_sql(
                "SELECT current_user = session_user, current_setting('search_path'), "
                "current_setting('lock_timeout'), "
                "(SELECT count(*) FROM pg_prepared_statements), "
                "(SELECT count(*) FROM pg_listening_channels()), "
                "to_regclass('pg_temp.left_behind') IS NULL").one()
            assert tuple(state) == (True, '"$user", public', "0", 0, 0, True)
            connection.rollback()
        # The advisory lock went with the reset: another session takes it at once.
        assert query(db_url, "SELECT pg_try_advisory_lock(4242)") == [(True,)]


def test_a_migration_session_is_never_kept(db_url: str, own: Databases) -> None:
    database = Database(url=db_url)
    with own.connect(database, for_migrations=True) as connection:
        migrating = _pid(connection)
        connection.rollback()
    with own.connect(database) as connection:
        assert _pid(connection) != migrating
    alive = query(db_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                  (migrating,))
    assert alive == [(0,)] or _gone(db_url, migrating)


def test_a_migration_session_made_again_after_it_was_lost_is_never_kept(
        db_url: str, own: Databases) -> None:
    """A target's retry after a lost connection reconnects the same connection object: the
    session it gets is a migration session too, never handed to fleet's next phase."""
    database = Database(url=db_url)
    with own.connect(database, for_migrations=True) as connection:
        lost = _pid(connection)
        connection.rollback()
        query(db_url, "SELECT pg_terminate_backend(%s)", (lost,))
        assert _gone(db_url, lost)
        with pytest.raises(DBAPIError):
            connection.exec_driver_sql("SELECT 1")
        connection.rollback()
        again = _pid(connection)  # reconnected, as a retry does
        connection.rollback()
    assert again != lost
    with own.connect(database) as connection:
        assert _pid(connection) not in (lost, again)
        connection.rollback()


def _gone(url: str, pid: int) -> bool:
    for _ in range(50):
        if query(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [
                (0,)]:
            return True
        time.sleep(0.05)
    return False


def test_a_forked_worker_never_uses_its_parents_session(db_url: str, own: Databases) -> None:
    database = Database(url=db_url)
    with own.connect(database) as connection:
        parents = _pid(connection)
        connection.rollback()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: its own session, then it ends as fleet's workers do
        code = 1
        try:
            with own.connect(database) as connection:
                mine = _pid(connection)
                connection.rollback()
            own.dispose()  # must not end the parent's session
            os.write(write, str(mine).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    childs = int(os.read(read, 64) or b"0")
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert childs not in (0, parents)
    with own.connect(database) as connection:  # the parent's kept session still works
        assert _pid(connection) == parents
        connection.rollback()


def test_a_kept_session_the_server_ended_is_replaced(db_url: str, own: Databases) -> None:
    database = Database(url=db_url)
    with own.connect(database) as connection:
        ended = _pid(connection)
        connection.rollback()
    assert query(db_url, "SELECT pg_terminate_backend(%s)", (ended,)) == [(True,)]
    assert _gone(db_url, ended)
    with own.connect(database) as connection:
        assert _pid(connection) != ended
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        connection.rollback()
