"""Sees a target's transaction ended while its migration goes on.

A revision can end the transaction fleet migrates a target in: a ``ROLLBACK`` statement,
the driver connection's own ``rollback()`` or ``commit()``, ``ROLLBACK AND CHAIN``. Alembic
goes on in the transaction the driver begins next: the version row moves on while what came
before is gone (or committed apart from it), and the rolled-back ``SET search_path`` sends
what follows into ``public``. Plain Alembic records such a schema at its new revision; fleet
fails the target instead, and what the next transaction holds rolls back with it.

Three checks, cheapest first:

* :func:`refuse_rollback`: a statement that rolls the whole transaction back is refused
  before it runs (:data:`ROLLS_BACK`, read past comments and literals).
* The driver's own state (psycopg, psycopg2, asyncpg): once a statement ran in the transaction
  SQLAlchemy has open, the driver's stays open until SQLAlchemy ends it; a driver idle
  before the next statement had it ended behind SQLAlchemy's back.
* The transaction's identity: its first statement assigns it a transaction id
  (``txid_current()``); before every write of the version table and before SQLAlchemy
  commits, the id must still be the one in effect (``txid_current_if_assigned()``). This
  sees what the driver's state cannot: a transaction ended and the next one begun before
  SQLAlchemy's next statement (a raw cursor after the driver's ``rollback()``, ``ROLLBACK
  AND CHAIN``, ``ROLLBACK; BEGIN`` in one string), and every driver (another driver may
  report no state). Two round trips per transaction and one per revision.

A ``COMMIT`` statement (``AND CHAIN`` too) commits what came before, as under plain Alembic
(see :data:`COMMITS`): once the server says the transaction did end, the guard stands down
until the driver has a transaction open again, then guards that one as it did the first
(psycopg begins one at the next statement; psycopg2 and asyncpg run what follows in the
server's autocommit until their own ``rollback()`` or ``commit()``; a driver that reports no
state leaves the guard down).

Autocommit switched on under a transaction: Alembic's ``autocommit_block()`` commits it
first; a revision that rolled it back and then set the driver's ``autocommit`` by hand did
not, and what followed went into ``public`` in autocommit. The first statement in autocommit
asks the server how that transaction ended (``txid_status()``): committed, the revision goes
on in autocommit as under plain Alembic; otherwise the target fails.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from sqlalchemy import event

from alembic_fleet.alembic_bridge.failures import TransactionRolledBack
from alembic_fleet.model.sql_text import skeleton

ROLLS_BACK = re.compile(
    r"(?:^|;)\s*(?:ROLLBACK|ABORT)\b(?!\s+(?:WORK\s+|TRANSACTION\s+)?TO\b)", re.IGNORECASE)
"""A statement that rolls the whole transaction back (not ``ROLLBACK TO SAVEPOINT``;
``AND CHAIN`` too), anywhere in a multi-statement string's :func:`.skeleton`."""

COMMITS = re.compile(r"(?:^|;)\s*(?:COMMIT|END)\b", re.IGNORECASE)
"""A statement that commits the transaction, anywhere in a multi-statement string's
:func:`.skeleton` (``AND CHAIN`` too: what came before commits as with a COMMIT, and the
chained transaction is guarded as the next one)."""

_ROLLBACK_WORD = re.compile(r"ROLLBACK|ABORT", re.IGNORECASE)
_COMMIT_WORD = re.compile(r"COMMIT|END", re.IGNORECASE)
"""The words :data:`ROLLS_BACK` and :data:`COMMITS` need, looked for in the raw text
first: most statements hold neither, and then :func:`.skeleton` (a Python loop over every
character) need not read them."""

_WRITES = re.compile(r"\s*(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s", re.IGNORECASE)


def refuse_rollback(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    """Fail a revision that rolls the target's transaction back with a SQL ``ROLLBACK``
    (``op.execute("ROLLBACK")``). The driver opens a new transaction for what follows, so
    the version row would move to head in it while the DDL before the ROLLBACK is gone:
    plain Alembic records such a schema at head; fleet fails the target instead, and what
    is left rolls back with it. The text is read as the session reads it (a backslash in
    ``'...'``: see :func:`.skeleton`), so that ordinary SQL is never refused."""
    if _ROLLBACK_WORD.search(statement) is None:  # cheap: the word is nowhere
        return
    if ROLLS_BACK.search(skeleton(statement, _backslashes_escape(conn))):
        raise TransactionRolledBack(
            "the revision rolled the transaction back itself (a ROLLBACK statement): what "
            "it did before would be lost while the version row moved on; remove the "
            "ROLLBACK (use a SAVEPOINT and ROLLBACK TO SAVEPOINT to undo part of it)")


ENDED = ("the transaction was ended behind the migration's back (the driver connection's "
         "rollback() or commit(), or a ROLLBACK statement): what came before was rolled "
         "back, or committed apart from the version row (then compare the schema with its "
         "version row before running again); use the connection op.get_bind() gives, and "
         "a SAVEPOINT to undo part of a revision")


class TransactionGuard:
    """The driver-state and identity checks of one target's migration (module docstring).
    Registered before any other listener of the statement and of the commit: the lock
    budget's ``SET LOCAL`` would open a new driver transaction first, and the ledger's
    rows would be written in a transaction about to be refused."""

    def __init__(self, version_table: str) -> None:
        self.version_table = version_table
        self.open = False
        """A statement ran in the transaction SQLAlchemy has open."""
        self.identity: int | None = None
        """The transaction id its first statement assigned."""
        self.disarmed = False
        """A COMMIT statement ran and no transaction is open since: what runs now commits
        by itself, as under plain Alembic (psycopg2 runs what follows a COMMIT in the
        server's autocommit). Cleared when the driver reports a transaction again."""
        self.commits = 0
        """COMMITs SQLAlchemy sent during the attempt (revisions committed one by one):
        after a failure, what they committed stays."""

    def listen(self, connection: Any) -> None:
        event.listen(connection, "before_cursor_execute", self.refuse)
        event.listen(connection, "after_cursor_execute", self.ran)
        event.listen(connection, "commit", self.committed)
        event.listen(connection, "rollback", self.ended)

    def remove(self, connection: Any) -> None:
        event.remove(connection, "before_cursor_execute", self.refuse)
        event.remove(connection, "after_cursor_execute", self.ran)
        event.remove(connection, "commit", self.committed)
        event.remove(connection, "rollback", self.ended)

    def committed(self, connection: Any) -> None:
        """``commit``: the transaction about to commit is the one that began (else its
        driver transaction is rolled back here, since SQLAlchemy, refused, will not)."""
        try:
            self._same_transaction(connection)
        except TransactionRolledBack:
            connection.connection.dbapi_connection.rollback()
            raise
        finally:
            self.ended(connection)
        self.commits += 1

    def ended(self, _connection: Any) -> None:
        self.open = False
        self.identity = None

    def ran(self, connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self.disarmed and _COMMIT_WORD.search(statement) and COMMITS.search(
                skeleton(statement)):
            # Text that reads like a COMMIT (a ``BEGIN ATOMIC ... END`` body) must not
            # stand the guard down: only a transaction that really ended does.
            self.disarmed = self.identity is None or _autocommit(connection) or (
                _transaction_id(connection, "txid_current_if_assigned()") != self.identity)
            if self.disarmed:
                self.identity = None
        if self.disarmed and _driver_in_transaction(connection):
            # The driver began the next transaction (psycopg at once, psycopg2 after its
            # own rollback() or commit()): guarded as the first one was.
            self.disarmed = False
            self.identity = _transaction_id(connection, "txid_current()")
        self.open = not _autocommit(connection)

    def refuse(self, connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.disarmed:
            return
        if _autocommit(connection):  # autocommit_block(): its own transactions
            self._same_transaction(connection)
            self.open = False
            self.identity = None
            return
        if self.open and _driver_idle(connection):
            self.open = False
            raise TransactionRolledBack(ENDED)
        if self.identity is None:
            self.identity = _transaction_id(connection, "txid_current()")
        elif self.version_table in statement and _WRITES.match(statement):
            self._same_transaction(connection)

    def before(self, cursor: Any, statement: str) -> None:
        """A replayed statement, run on the driver's ``cursor`` (SQLAlchemy sees none):
        the identity is taken at the first, checked before the version row moves."""
        if self.identity is None:
            self.identity = _ask(cursor, "txid_current()")
        elif self.version_table in statement and _WRITES.match(statement):
            self._check(_ask(cursor, "txid_current_if_assigned()"))

    def _same_transaction(self, connection: Any) -> None:
        """The transaction that began is the one in effect, or, once the driver is in
        autocommit, one that committed (``autocommit_block()`` commits it first; a driver
        switched by hand after its ``rollback()`` did not)."""
        if self.disarmed or self.identity is None:
            return
        if _autocommit(connection):
            if _transaction_state(connection, self.identity) != "committed":
                self._check(None)
            return
        self._check(_transaction_id(connection, "txid_current_if_assigned()"))

    def _check(self, identity: int | None) -> None:
        if identity != self.identity:
            self.open = False
            self.identity = None
            raise TransactionRolledBack(ENDED)


def _transaction_id(connection: Any, function: str) -> int | None:
    value = _on_driver(connection, function)
    return None if value is None else int(value)


def _on_driver(connection: Any, expression: str) -> Any:
    """Ask the server on the driver connection itself (no SQLAlchemy events)."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        return _first(cursor, expression)
    finally:
        cursor.close()


def _backslashes_escape(connection: Any) -> bool | None:
    """Whether the session reads a backslash in ``'...'`` as an escape
    (``standard_conforming_strings`` off), as the server last reported it to the driver;
    None when the driver does not say."""
    driver = connection.connection.driver_connection
    value = None
    with contextlib.suppress(Exception):
        if hasattr(driver, "info") and hasattr(driver.info, "parameter_status"):  # psycopg
            value = driver.info.parameter_status("standard_conforming_strings")
        elif hasattr(driver, "get_parameter_status"):  # psycopg2
            value = driver.get_parameter_status("standard_conforming_strings")
        elif hasattr(driver, "get_settings"):  # asyncpg
            value = driver.get_settings().standard_conforming_strings
    if isinstance(value, bytes):
        value = value.decode()
    return {"on": False, "off": True}.get(str(value).lower()) if value is not None else None


def _transaction_state(connection: Any, identity: int) -> str | None:
    """How the transaction ``identity`` ended: ``committed``, ``aborted`` (the server's
    ``txid_status()``)."""
    return _on_driver(connection, f"txid_status({int(identity)})")


def _ask(cursor: Any, function: str) -> int | None:
    value = _first(cursor, function)
    return None if value is None else int(value)


def _first(cursor: Any, expression: str) -> Any:
    cursor.execute(f"SELECT {expression}")
    row = cursor.fetchone()
    return None if row is None else row[0]


def _autocommit(connection: Any) -> bool:
    return bool(getattr(connection.connection.dbapi_connection, "autocommit", False))


def _driver_idle(connection: Any) -> bool:
    """Whether the driver says no transaction is open (see :func:`_driver_status`; a
    driver that reports nothing: never). Never in autocommit, where idle is the rule."""
    raw = connection.connection.dbapi_connection
    if getattr(raw, "autocommit", False):
        return False
    return _driver_status(raw) == 0


def _driver_in_transaction(connection: Any) -> bool:
    """Whether the driver says a transaction is open and usable (2: in a transaction)."""
    return _driver_status(connection.connection.dbapi_connection) == 2


def _driver_status(raw: Any) -> int | None:
    """The server's transaction status as the driver last heard it: psycopg's and
    psycopg2's ``info.transaction_status`` (0 idle, 2 in a transaction); asyncpg's
    connection under SQLAlchemy's adapter says only whether one is open."""
    status = getattr(getattr(raw, "info", None), "transaction_status", None)
    if status is not None:
        return int(status)
    probe = getattr(getattr(raw, "_connection", None), "is_in_transaction", None)
    return None if not callable(probe) else (2 if probe() else 0)
