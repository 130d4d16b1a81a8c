"""Turn configured databases into connections, with errors a user can act on.

This is the one place that creates SQLAlchemy engines. Embedded databases are created on the
embedded server on first use; real servers are never asked to create a database.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

from alembic_fleet import drivers
from alembic_fleet.embedded import SCRATCH_STARTED, EmbeddedServer, hold_lease
from alembic_fleet.exceptions import DatabaseUnavailableError, UsageError
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.targets import Database
from alembic_fleet.redact import display, first_line, register_secret, scrub

DRIVER = "postgresql+psycopg"

SESSION_RESET = ("CLOSE ALL", "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL",
                 "DEALLOCATE ALL", "UNLISTEN *", "SELECT pg_advisory_unlock_all()",
                 "DISCARD PLANS", "DISCARD TEMP", "DISCARD SEQUENCES")
"""What ``DISCARD ALL`` does, statement by statement (PostgreSQL's documentation gives this
list): unlike ``DISCARD ALL`` these may share one query string, sent in one round trip
(psycopg forgets its own prepared statements on seeing ``DEALLOCATE ALL``)."""

_KEPT: weakref.WeakSet[Engine] = weakref.WeakSet()
"""The engines that keep a session between the phases of a command (see
:meth:`Databases.engine`): a forked worker forgets their sessions, which are its parent's."""


def _forget_parents_sessions() -> None:
    """In a forked child: drop the parent's kept sessions without closing them (closing
    would end them for the parent too, through the shared socket)."""
    for engine in list(_KEPT):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parents_sessions)


def _hand_on_clean(dbapi_connection: Any, record: Any) -> None:
    """A session fleet keeps goes back as a new one would be: after SQLAlchemy's rollback,
    whatever a phase set on it (settings, a role, advisory locks, temporary tables,
    prepared statements, LISTEN) is reset, in one round trip. A session that cannot be
    reset is closed, and the next phase opens a new one."""
    if dbapi_connection is None:
        return
    try:
        dbapi_connection.autocommit = True  # the reset leaves no transaction open
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("; ".join(SESSION_RESET))
        finally:
            dbapi_connection.autocommit = False
    except Exception:
        record.invalidate()


def sqlalchemy_url(url: str) -> URL:
    """``url`` as a SQLAlchemy URL on the psycopg 3 driver (``postgres://`` accepted), for
    fleet's own connections: another driver's URL parameters are left out."""
    parsed = make_url(url)
    if parsed.password:
        register_secret(str(parsed.password))
    driver = drivers.for_url(url)
    if driver is not drivers.PSYCOPG and parsed.query:
        parsed = parsed.set(query=drivers.libpq_query(dict(parsed.query), driver))
    return parsed.set(drivername=DRIVER)


EMBEDDED_URLS = "FLEET_EMBEDDED_URLS"
"""The environment variable through which fleet hands a service's interpreter the URLs of
the embedded databases it started (that interpreter needs no embedded PostgreSQL package)."""
_embedded_urls: dict[str, str] = {}


def embedded_urls() -> dict[str, str]:
    """The embedded databases' URLs resolved by this process so far, by database name."""
    return dict(_embedded_urls)


def handed_urls() -> dict[str, str]:
    """The embedded databases' URLs fleet handed this process (a service's interpreter),
    by database name: their server is fleet's to start and stop."""
    return json.loads(os.environ.get(EMBEDDED_URLS, "{}") or "{}")


def libpq_url(url: URL) -> str:
    """A URL that psql, pg_dump and applications understand (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def explain_connection_error(exc: BaseException, where: str) -> DatabaseUnavailableError:
    """Wrap a driver error into a message naming the (redacted) database and a next step."""
    reason = first_line(exc)
    if "timeout expired" in reason or isinstance(exc, TimeoutError):
        return DatabaseUnavailableError(
            f"cannot connect to {where}: {reason}",
            hint="the server accepted no session in time: check that it is up and not "
            "overloaded, and the network to it; a slow server may need a longer wait: "
            f"?connect_timeout=SECONDS in its URL (default {drivers.CONNECT_TIMEOUT}; "
            "?timeout= for asyncpg) or PGCONNECT_TIMEOUT")
    return DatabaseUnavailableError(
        f"cannot connect to {where}: {reason}",
        hint="check that the server is running and the URL (DATABASE_URI or 'database' in "
        "fleet.toml) is right; without any URL fleet uses its embedded PostgreSQL",
    )


@dataclass
class Databases:
    """Resolves and caches one engine per configured database for a command's lifetime."""

    embedded_dir: Path
    _engines: dict[str, Engine] = field(default_factory=dict)
    _identities: dict[str, tuple[object, ...]] = field(default_factory=dict)
    borrowed: int = 0
    """How many check scratch leases this command holds (see
    :func:`~alembic_fleet.check.scratch_layer.scratch_server`): while one is held, the
    embedded server is used the way a check does, and stays the check's to stop."""

    @property
    def embedded(self) -> EmbeddedServer:
        return EmbeddedServer(self.embedded_dir)

    def url(self, database: Database) -> URL:
        """The SQLAlchemy URL of ``database``; starts the embedded server when it is used."""
        if database.url is not None:
            return sqlalchemy_url(database.url)
        name = database.embedded_name or "postgres"
        handed = handed_urls()
        if name in handed:  # a service's interpreter: fleet started the server already
            return sqlalchemy_url(handed[name])
        server = self.embedded
        hold_lease(self.embedded_dir)  # no check stops the server while this command runs
        admin = sqlalchemy_url(server.url("postgres"))
        if name != "postgres":
            _ensure_database(admin, name)
        url = server.url(name)
        if not self.borrowed:  # used outside a check: the server is the user's now
            (self.embedded_dir / SCRATCH_STARTED).unlink(missing_ok=True)
        _embedded_urls[name] = url
        return sqlalchemy_url(url)

    def engine(self, database: Database) -> Engine:
        """One engine per database, for fleet's own reads and writes (the catalog, the
        ledger, the checks). It keeps one session for the command's next phase instead of
        opening one per phase (eight for one new tenant; on a remote server each costs
        its round trips, TLS and authentication): handed on reset
        (:func:`_hand_on_clean`), tested alive before use (a session the server ended is
        replaced), never to a forked worker. Sessions beyond that one (a phase that holds
        two) really close. Targets migrate on another engine's sessions, never kept
        (:meth:`migration_engine`)."""
        engine = self._engines.get(database.key)
        if engine is None:
            url = self.url(database)
            engine = create_engine(url, poolclass=QueuePool, pool_size=1,
                                   max_overflow=-1, pool_pre_ping=True,
                                   connect_args=drivers.session_limits(drivers.PSYCOPG,
                                                                       url.query))
            event.listen(engine, "checkin", _hand_on_clean)
            _KEPT.add(engine)
            self._engines[database.key] = engine
        return engine

    def identity(self, database: Database, connection: Any = None) -> tuple[object, ...]:
        """Which database of which running server ``database`` reaches: when the server
        started (to the microsecond) and the database's name. Two URLs that differ in
        their spelling only (another driver, ``localhost`` for ``127.0.0.1``) reach one
        database, which only the server can tell. Not the cluster's system identifier: a
        server copied from another (a restored base backup, a snapshot, a promoted
        standby) keeps it, and two such databases are two; nor anything a role may be
        refused (``pg_postmaster_start_time()`` is everyone's). A server that will not
        answer leaves the URL as the identity. Asked once per command and database, on
        ``connection`` when one to that database is at hand."""
        found = self._identities.get(database.key)
        if found is None:
            if connection is None:
                with self.connect(database) as own:
                    return self.identity(database, own)
            try:
                found = tuple(connection.exec_driver_sql(
                    "SELECT pg_catalog.pg_postmaster_start_time(), "
                    "pg_catalog.current_database()").one())
            except DBAPIError:  # a server that will not say: the URL is the identity
                found = (database.key,)
            connection.rollback()
            self._identities[database.key] = found
        return found

    def migration_url(self, database: Database) -> URL:
        """The URL targets migrate on: the configured URL on the driver it names, with all
        its parameters (the embedded server: fleet's own URL)."""
        if database.url is None:
            return self.url(database)
        parsed = make_url(database.url)
        if parsed.password:
            register_secret(str(parsed.password))
        return parsed.set(drivername=drivers.for_url(database.url).drivername)

    def migration_engine(self, database: Database) -> Engine:
        """The engine targets migrate on: the driver the URL names (see :mod:`.drivers`),
        whose sessions close with their connection, on psycopg too: a revision may leave
        anything on a session (a driver adapter, a cache of thousands of tables) that no
        reset undoes, and a reconnect inside a target's retries must not change that.

        For an async driver this is the async engine's synchronous face, usable only inside
        :class:`~alembic_fleet.drivers.GreenletBridge`.
        """
        driver = drivers.for_url(database.url)
        key = f"{driver.name}:{database.key}"
        engine = self._engines.get(key)
        if engine is None:
            url = self.migration_url(database)
            limits = drivers.session_limits(driver, url.query)
            if driver.is_async:
                from sqlalchemy.ext.asyncio import create_async_engine

                engine = create_async_engine(url, poolclass=NullPool,
                                             connect_args=limits).sync_engine
            else:
                engine = create_engine(url, poolclass=NullPool, connect_args=limits)
            self._engines[key] = engine
        return engine

    def connect(self, database: Database, *, for_migrations: bool = False):
        """An open connection, or DatabaseUnavailableError with a readable reason.

        ``for_migrations``: on the service's own driver (see :meth:`migration_engine`).
        """
        try:
            engine = (self.migration_engine(database) if for_migrations
                      else self.engine(database))
            return engine.connect()
        except ArgumentError as exc:  # a URL SQLAlchemy parses only now (?port=x)
            raise UsageError(f"the URL of {display(database)} is not valid: {scrub(str(exc))}",
                             hint="fix it in DATABASE_URI or 'database' in fleet.toml; "
                             "nothing was executed") from None
        except DBAPIError as exc:
            raise explain_connection_error(exc, display(database)) from None
        except OSError as exc:  # asyncpg raises the socket's own error
            raise explain_connection_error(exc, display(database)) from None

    def probe(self, database: Database, seconds: float) -> None:
        """Open a session to ``database`` and run ``SELECT 1``, waiting at most ``seconds``
        (libpq's floor of 2) for the session, or DatabaseUnavailableError: ``fleet wait
        --timeout`` and ``--wait-for-db`` end at the user's time, not a connect timeout
        later. The URL's own ``connect_timeout`` counts when it is shorter."""
        url = self.url(database)
        limits = drivers.session_limits(drivers.PSYCOPG, url.query)
        own = url.query.get("connect_timeout")
        wait = max(2, math.ceil(seconds))
        with contextlib.suppress(TypeError, ValueError):
            if own is not None and 0 < float(own) < wait:
                wait = max(2, math.ceil(float(own)))
        engine = create_engine(url, poolclass=NullPool,
                               connect_args={**limits, "connect_timeout": str(wait)})
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            raise explain_connection_error(exc, display(database)) from None
        finally:
            engine.dispose()

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    def stop_embedded(self) -> None:
        """Stop the embedded server: this command's engines closed first, and the URLs of
        its databases forgotten, so that no interpreter fleet starts afterwards is handed
        the address of a stopped server."""
        self.dispose()
        self.embedded.stop()
        _embedded_urls.clear()


def _ensure_database(admin: URL, name: str) -> None:
    """Create database ``name`` on the embedded server when it does not exist yet."""
    engine = create_engine(admin, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args=drivers.session_limits(drivers.PSYCOPG, admin.query))
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_catalog.pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if not exists:
                try:
                    conn.exec_driver_sql(f"CREATE DATABASE {quote_ident(name)}")
                except DBAPIError as exc:
                    # Two runners may race to create it; losing that race is fine.
                    if "already exists" not in str(exc):
                        raise
    except DBAPIError as exc:
        raise explain_connection_error(exc, f"embedded:///{name}") from None
    finally:
        engine.dispose()
