"""The limits on every session fleet opens (a connect timeout, TCP keepalives, a TCP user
timeout): present on fleet's own sessions and on the sessions targets migrate on, whatever
the driver, and never in place of what the URL itself sets. What they do against a frozen
server is in tests/faults/test_frozen_server.py."""

from __future__ import annotations

import pytest

from alembic_fleet import drivers
from alembic_fleet.databases import Databases
from alembic_fleet.exceptions import UsageError
from alembic_fleet.model.targets import Database


@pytest.fixture
def own(tmp_path) -> Databases:
    databases = Databases(tmp_path / "embedded")
    yield databases
    databases.dispose()


def _libpq_parameters(connection) -> dict[str, str]:
    raw = connection.connection.dbapi_connection
    if hasattr(raw, "get_dsn_parameters"):  # psycopg2
        return dict(raw.get_dsn_parameters())
    return dict(raw.info.get_parameters())


def _with(url: str, extra: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def test_fleets_own_sessions_carry_the_limits(own: Databases, db_url: str) -> None:
    with own.connect(Database(url=db_url)) as connection:
        parameters = _libpq_parameters(connection)
    for key, value in drivers.LIBPQ_LIMITS.items():
        assert parameters.get(key) == value, (key, parameters)


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg2"])
def test_migration_sessions_carry_the_limits_on_their_own_driver(
        own: Databases, db_url: str, scheme: str) -> None:
    url = db_url.replace("postgresql://", f"{scheme}://", 1)
    with own.connect(Database(url=url), for_migrations=True) as connection:
        parameters = _libpq_parameters(connection)
        assert connection.dialect.driver == (scheme.partition("+")[2] or "psycopg")
    for key, value in drivers.LIBPQ_LIMITS.items():
        assert parameters.get(key) == value, (key, parameters)


def test_what_the_url_sets_is_kept(own: Databases, db_url: str) -> None:
    url = _with(db_url, "connect_timeout=3&keepalives_idle=7")
    for for_migrations in (False, True):
        with own.connect(Database(url=url), for_migrations=for_migrations) as connection:
            parameters = _libpq_parameters(connection)
        assert parameters["connect_timeout"] == "3"
        assert parameters["keepalives_idle"] == "7"
        assert parameters["keepalives_count"] == drivers.LIBPQ_LIMITS["keepalives_count"]


def test_the_limits_by_driver_and_what_the_user_set() -> None:
    psycopg2 = drivers.DRIVERS["psycopg2"]
    asyncpg = drivers.DRIVERS["asyncpg"]
    bare: dict[str, str] = {}
    assert drivers.session_limits(psycopg2, {}, bare) == drivers.LIBPQ_LIMITS
    assert drivers.session_limits(asyncpg, {}, bare) == {"timeout": drivers.CONNECT_TIMEOUT}
    # asyncpg's own key, as seconds (SQLAlchemy hands asyncpg the URL's text).
    assert drivers.session_limits(asyncpg, {"timeout": "4"}, bare) == {"timeout": 4.0}
    with pytest.raises(UsageError, match="not a number of seconds"):
        drivers.session_limits(asyncpg, {"timeout": "soon"}, bare)
    assert "connect_timeout" not in drivers.session_limits(
        drivers.PSYCOPG, {"connect_timeout": "4"}, bare)
    # A connection service's file may set them: nothing is given in its place.
    assert drivers.session_limits(drivers.PSYCOPG, {"service": "main"}, bare) == {}
    timeout = {"PGCONNECT_TIMEOUT": "4"}
    limits = drivers.session_limits(drivers.PSYCOPG, {}, timeout)
    assert "connect_timeout" not in limits and limits["keepalives"] == "1"
    assert drivers.session_limits(asyncpg, {}, timeout) == {"timeout": 4.0}
    assert drivers.session_limits(drivers.PSYCOPG, {}, {"PGSERVICE": "main"}) == {}


def test_fleets_own_sessions_on_an_asyncpg_url_wait_as_long_as_it_says() -> None:
    """fleet's own sessions are psycopg's: asyncpg's ``?timeout=`` becomes libpq's
    ``connect_timeout`` (whole seconds, at least libpq's 2), its other keys are left out."""
    asyncpg = drivers.DRIVERS["asyncpg"]
    assert drivers.libpq_query({"timeout": "30", "command_timeout": "5"}, asyncpg) == {
        "connect_timeout": "30"}
    assert drivers.libpq_query({"timeout": "0.5"}, asyncpg) == {"connect_timeout": "2"}
    assert drivers.libpq_query({"timeout": "7", "connect_timeout": "9"}, asyncpg) == {
        "connect_timeout": "9"}


def test_an_older_libpq_is_not_given_tcp_user_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq before 12 refuses every session that names ``tcp_user_timeout``."""
    import psycopg

    monkeypatch.setattr(psycopg.pq, "version", lambda: 110022)
    limits = drivers.session_limits(drivers.PSYCOPG, {}, {})
    assert "tcp_user_timeout" not in limits and limits["connect_timeout"] == "10"


@pytest.mark.parametrize("users", [None, "25", ""])
def test_the_application_fleet_run_starts_sees_the_users_environment(
        tmp_path, db_url: str, users: str | None) -> None:
    """fleet bounds its own sessions and its helpers' with ``PGCONNECT_TIMEOUT``; the
    application ``fleet run`` hands the process to is the user's: it sees what the user set,
    and nothing fleet added."""
    from tests.faults.conftest import shop_project

    project = shop_project(tmp_path / "p", db_url, 1)
    env = {"PGCONNECT_TIMEOUT": users} if users is not None else {}
    done = project.fleet("run", "--", "sh", "-c",
                         'echo "timeout=[${PGCONNECT_TIMEOUT-unset}]"; yes | head -1',
                         env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "unset" if users is None else users
    assert f"timeout=[{expected}]" in done.stdout, done.stdout
    # Python ignores SIGPIPE; the program exec'd in its place gets it back.
    assert "Broken pipe" not in done.stderr, done.stderr
