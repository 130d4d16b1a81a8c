"""Advisory locks per target, and the session settings that keep migrations polite.

**Scope: session-level advisory locks**, keyed on (service, schema) within the database
(advisory locks are per database, which completes the key). A session lock survives the
commits inside ``op.get_context().autocommit_block()`` (``CREATE INDEX CONCURRENTLY``) and
``transaction_per_migration``; a transaction lock would be released at the first of them and
let a second runner in. The price: it needs a real server session, so a transaction-pooling
PgBouncer (where consecutive transactions may run on different server connections) is
detected and refused (:func:`check_session_pooling`). The lock dies with the connection, so a
killed runner leaves no lock behind; ``client_connection_check_interval`` (PostgreSQL 14+)
makes the server notice a vanished client during a long statement too.

Waiting uses ``pg_try_advisory_lock`` in a loop, never a server-side wait: a runner waiting
for a target holds no lock that anything else could queue behind.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from sqlalchemy import text

from alembic_fleet.databases import SESSION_RESET as RESET
from alembic_fleet.exceptions import UsageError


def lock_key(service: str, schema: str) -> int:
    """A stable signed 64-bit key for (service, schema)."""
    digest = hashlib.blake2b(f"alembic-fleet\0{service}\0{schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def try_lock(connection: Any, key: int, wait_seconds: float) -> bool:
    """Take the target's session lock, polling for up to ``wait_seconds``."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    pause = 0.05
    while True:
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        connection.commit()
        if got:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.5)


def unlock(connection: Any, key: int) -> None:
    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    connection.commit()


def configure_session(connection: Any, *, lock_timeout: float, statement_timeout: float) -> None:
    """Timeouts for every statement of this session (values in seconds; 0 disables)."""
    settings = session_settings(connection, lock_timeout=lock_timeout,
                                statement_timeout=statement_timeout)
    # One round trip: this runs for every connection and after every migrated target.
    names = list(settings)
    calls = ", ".join(f"set_config(:n{i}, :v{i}, false)" for i in range(len(names)))
    params = {f"n{i}": n for i, n in enumerate(names)} | {
        f"v{i}": settings[n] for i, n in enumerate(names)}
    connection.execute(text(f"SELECT {calls}"), params)
    connection.commit()


def session_settings(connection: Any, *, lock_timeout: float, statement_timeout: float
                     ) -> dict[str, str]:
    """The settings fleet gives each session it migrates on."""
    settings = {
        "lock_timeout": milliseconds(lock_timeout),
        "statement_timeout": milliseconds(statement_timeout),
        # Who holds this session, as pg_stat_activity shows it: the fleet process's pid.
        "application_name": f"fleet {os.getpid()}",
    }
    if (connection.dialect.server_version_info or (0,)) >= (14,):
        settings["client_connection_check_interval"] = "2s"
    return settings


ASYNCPG_RESET = tuple(statement for statement in RESET if statement != "DEALLOCATE ALL")
"""The reset for asyncpg, one statement at a time (its prepared statements refuse several in
one string): it keeps server-side prepared statements of its own in a client cache that
``DEALLOCATE ALL`` would leave pointing at nothing (every later statement on the connection
would fail). The statements a revision prepared with SQL ``PREPARE`` go one by one
(:data:`SQL_PREPARED`): asyncpg's own are prepared through the protocol, never by SQL."""

SQL_PREPARED = "SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql"
"""The prepared statements a session made with SQL ``PREPARE`` (a revision's, not a
driver's)."""


def reset_and_configure_sql(settings: dict[str, str]) -> str:
    """One query string that resets a session as ``DISCARD ALL`` does (advisory locks
    included) and gives it ``settings``: for drivers that send a string without parameters
    as one simple query (psycopg, psycopg 2; psycopg forgets its prepared statements on
    seeing ``DEALLOCATE ALL``)."""
    calls = ", ".join(f"set_config({_literal(name)}, {_literal(value)}, false)"
                      for name, value in settings.items())
    return "; ".join(RESET) + f"; SELECT {calls}"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def milliseconds(seconds: float) -> str:
    """A timeout for PostgreSQL: 0 stays 0 (no limit); anything above rounds up to at
    least 1 ms, never down to 0, which would turn the limit off."""
    return "0ms" if seconds <= 0 else f"{max(1, round(seconds * 1000))}ms"


def check_session_pooling(connect: Any, where: str) -> None:
    """Refuse a transaction-pooling connection pooler (PgBouncer ``pool_mode=transaction``).

    Session advisory locks need every transaction of a client connection to run on the same
    server backend. Probe with two client connections: A and B each hold a transaction open
    (so they must be on two different backends), then both commit, and A starts a new
    transaction. Connected directly, A is still on its own backend; behind a transaction
    pooler, A's new transaction is served by whichever backend the pooler hands out (B's
    with PgBouncer's default LIFO reuse), and the backend ids differ.
    """
    first, second = connect(), connect()
    try:
        before = first.execute(text("SELECT pg_backend_pid()")).scalar()
        second.execute(text("SELECT pg_backend_pid()")).scalar()
        first.commit()
        second.commit()
        after = first.execute(text("SELECT pg_backend_pid()")).scalar()
        first.commit()
    finally:
        first.close()
        second.close()
    if before != after:
        raise UsageError(
            f"{where} is behind a transaction-pooling connection pooler (successive "
            "transactions of one connection ran on different server connections)",
            hint="point fleet at the database directly or at a session-pooling pool: its "
            "per-target locks are session locks",
        )
