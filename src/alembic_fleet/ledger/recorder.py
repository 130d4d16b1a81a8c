"""The run rows of the ledger, written by the process that runs the command.

A run that migrates something gets one row in the ledger of every database it touches: at
the start (so that the workers' target rows can refer to it) and at the end, with the counts
of the target rows that committed. The target rows themselves are written by the workers
inside each target's transaction (:mod:`.target_ledger`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from alembic_fleet.databases import Databases
from alembic_fleet.drivers import sqlstate
from alembic_fleet.exceptions import LedgerError
from alembic_fleet.ledger.store import Ledger, RunInfo
from alembic_fleet.model.status import Step
from alembic_fleet.redact import display, scrub


@dataclass
class RunRecorder:
    """Opens a run row per database with work to do, and closes them at the end."""

    databases: Databases
    ledger: Ledger
    info: RunInfo
    warnings: list[str] = field(default_factory=list)
    _connections: dict[str, Any] = field(default_factory=dict)
    _databases: dict[str, Any] = field(default_factory=dict)

    def start(self, steps: Sequence[Step]) -> None:
        """Create the ledger where needed and a run row per database with work to do."""
        for step in steps:
            if not step.upgrade or step.target.database.key in self._connections:
                continue
            database = step.target.database
            ledger = Ledger(self.ledger.schema)  # one per database: each checks its own
            try:
                connection = self.databases.connect(database)
                first = ledger.start_run(connection, self.info)
            except DBAPIError as exc:
                original = getattr(exc, "orig", exc)
                reason = scrub(str(original).strip().splitlines()[0])
                raise LedgerError(
                    f"cannot write the run ledger (schema '{self.ledger.schema}') in "
                    f"{display(database)}: {reason}", hint=_ledger_hint(sqlstate(original),
                                                                        reason),
                ) from None
            if not first:  # the same database under another URL: its row is written
                connection.close()  # and is closed once, by that URL's connection
                self._connections[database.key] = None
                continue
            self._connections[database.key] = connection
            self._databases[database.key] = database

    @contextlib.contextmanager
    def session(self, database: Any) -> Iterator[Any]:
        """A connection to ``database`` for the run's own bookkeeping between its start and
        its finish (settling a target cut off, its failed row): the run row's connection
        when it is open and idle, else a new one. The run row's session was opened when
        the run started: a server that stopped accepting sessions since (a frozen
        postmaster, a full ``max_connections``) still answers it, where a new session
        would wait for the connect timeout, target after target, while a stopping pod's
        grace period runs out."""
        own = self._connections.get(database.key)
        if own is not None and _alive(own):
            try:
                yield own
            except BaseException:
                # What failed on it (a lock timeout, a lost session) must not leave it in
                # a transaction for the next settle or for finish(), which closes the row.
                with contextlib.suppress(Exception):
                    own.rollback()
                raise
            return
        with self.databases.connect(database) as connection:
            yield connection

    def finish(self, outcome: str) -> None:
        """Close every run row; a failure to do so is a warning, never an error.

        The run's connection may have been lost while the targets ran (a server restart,
        a terminated session: the workers retried and went on); the row is then closed on
        a new connection rather than left 'running' forever."""
        for key, connection in self._connections.items():
            if connection is None:
                continue
            try:
                try:
                    self.ledger.close_run(connection, self.info.run_id, outcome)
                except SQLAlchemyError:  # a lost session (DBAPIError) or a broken one
                    with contextlib.suppress(Exception):
                        connection.close()
                    connection = self.databases.connect(self._databases[key])
                    self.ledger.close_run(connection, self.info.run_id, outcome)
            except Exception as exc:  # history must never break a migration
                self._warn(f"could not close the run in the ledger: {exc}")
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        self._connections.clear()
        self._databases.clear()

    def _warn(self, message: str) -> None:
        text = scrub(message.splitlines()[0])
        if text not in self.warnings:
            self.warnings.append(text)


def _alive(connection: Any) -> bool:
    """Whether the run row's connection can be used now: open, idle, and answering (the
    server may have ended its session mid-run; :meth:`RunRecorder.finish` then closes the
    row on a new one, and a settle must not take its failure for the database's)."""
    if connection.closed or connection.invalidated or connection.in_transaction():
        return False
    try:
        connection.exec_driver_sql("SELECT 1")
        connection.rollback()
    except DBAPIError:
        with contextlib.suppress(Exception):
            connection.rollback()
        return False
    return True


def _ledger_hint(code: str | None, reason: str) -> str:
    """What to do when the run's ledger row cannot be written, by what the server said."""
    if code == "55P03":
        return ("another session holds a lock on a ledger table: see pg_locks, and run "
                "again when it is released")
    if code == "42501" and ("for database" in reason or "for schema" in reason):
        return "grant CREATE on the database to this user, or set ledger = false"
    if code == "42501":
        return ("grant this user the privilege the message names (on the ledger's tables, or "
                "on what a trigger of the database writes), or set ledger = false")
    return "see the database's message; set ledger = false to run without the ledger"
