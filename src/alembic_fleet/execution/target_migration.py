"""Migrate one target: the unit of work every executor runs.

For each target: take its advisory lock (waiting up to ``lock_wait``), re-read its revision
under the lock (another runner may have finished it meanwhile: then it is skipped), migrate
it in one transaction (rendered SQL replayed, Alembic online, or a legacy ``alembic``
subprocess), release the lock. Lock timeouts, lost connections, a restarting server,
serialization failures and deadlocks are retried with exponential backoff and jitter; any
other failure fails the target at once, its transaction rolled back. One connection per
database is kept for the whole run, its session configured with ``lock_timeout`` and
``statement_timeout``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from alembic_fleet import drivers
from alembic_fleet.alembic_bridge.failures import (
    ReplayFailed,
    RevisionFailed,
)
from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.catalog.versions import read_one
from alembic_fleet.databases import Databases, libpq_url
from alembic_fleet.exceptions import DatabaseUnavailableError, FleetError
from alembic_fleet.execution.diagnosis import hint_for
from alembic_fleet.execution.lock_budget import LockBudget
from alembic_fleet.execution.locking import (
    ASYNCPG_RESET,
    SQL_PREPARED,
    configure_session,
    lock_key,
    milliseconds,
    reset_and_configure_sql,
    session_settings,
    try_lock,
    unlock,
)
from alembic_fleet.execution.provision import VIA, Provisioner
from alembic_fleet.execution.retry import Backoff, transient_reason
from alembic_fleet.execution.transaction_guard import TransactionGuard, refuse_rollback
from alembic_fleet.ledger.target_ledger import RunLedger, TargetLedger
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    classify,
    gave_up,
)
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.redact import register_secret, scrub


def describe_error(error: BaseException) -> tuple[str, str | None]:
    """A one-line reason and an optional hint for a failed target (passwords scrubbed)."""
    original = getattr(error, "orig", None) or error
    if isinstance(error, FleetError):
        return scrub(error.message), error.hint
    lines = [line for line in str(original).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(original).__name__
    name = type(original).__name__
    if name == "Error" and original.__cause__ is not None:  # SQLAlchemy's asyncpg adapter
        name = type(original.__cause__).__name__
    detail = next((line for line in lines[1:] if line.startswith(("DETAIL", "HINT"))), None)
    code = drivers.sqlstate(error)
    text = f"{name}: {reason}"
    if code:
        text += f" (SQLSTATE {code})"
    if detail:
        text += f"; {detail}"
    return scrub(text), None


def _file_of(scripts: ServiceScripts, revision: str | None) -> str | None:
    """A revision's file relative to its service folder (a replayed statement failed: its
    line is not known, its file is)."""
    known = scripts.graph.revisions.get(revision) if revision else None
    if known is None or not known.path:
        return None
    path = Path(known.path)
    root = scripts.service.path
    return str(path.relative_to(root) if path.is_relative_to(root) else path)


ONE_TRANSACTION = frozenset({"replay", "mixed", VIA})
"""Ways a target migrates in exactly one transaction, whose ledger row read the version
table just before its commit: what that read found is what the database holds after it."""


@dataclass(frozen=True)
class Policy:
    """How a run treats locks, timeouts and retries (config keys, CLI options)."""

    lock_wait: float = 60.0
    """Seconds to wait for another runner's lock on a target."""
    lock_timeout: float = 5.0
    """Seconds a DDL statement may wait for a table lock before giving up (and retrying)."""
    statement_timeout: float = 3600.0
    """Seconds any one statement may run (0: no limit)."""
    retries: int = 3
    """Further attempts after a transient failure."""
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=15.0))
    come_back: bool = True
    """A target that hit a lock timeout goes to the end of the queue, and its worker on
    to other targets, instead of the worker waiting out the back-off on it."""


class LegacyFailed(Exception):
    """A legacy ``alembic`` subprocess failed; the message holds its last lines."""


class _Failed(Exception):
    """One attempt failed; ``transient`` says whether another attempt may succeed, and
    ``reached`` where the target stands when something committed before the failure."""

    def __init__(self, message: str, hint: str | None, transient: str | None,
                 reached: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.transient = transient
        self.reached = reached


@dataclass
class TargetMigrator:
    """Upgrades targets to their destinations, reusing one connection per database."""

    databases: Databases
    scripts: dict[str, ServiceScripts]
    destinations: dict[str, str]
    """Per service: the Alembic destination (``heads`` or a revision id)."""
    policy: Policy = field(default_factory=Policy)
    run_ledger: RunLedger | None = None
    """Where this run's target rows go (None: no ledger)."""
    _connections: dict[str, Any] = field(default_factory=dict)
    _uses: dict[str, int] = field(default_factory=dict)
    """Targets attempted on each open connection (see :func:`session_targets`)."""
    _bridge: drivers.GreenletBridge = field(default_factory=drivers.GreenletBridge)
    """Runs targets of async-driver databases (see :mod:`alembic_fleet.drivers`)."""
    _lock_wait: float = 0.0
    _retried: list[str] = field(default_factory=list)
    """The current target's advisory lock waits and retry reasons (for metrics)."""
    _provisioner: Provisioner | None = None
    """New tenants copied from a reference (see :mod:`alembic_fleet.execution.provision`)."""

    @property
    def provisioner(self) -> Provisioner:
        if self._provisioner is None:
            self._provisioner = Provisioner(self.databases, self.policy, self.run_ledger)
        return self._provisioner

    def __call__(self, step: Step, tries: int = 0) -> TargetResult:
        """Migrate ``step``'s target; ``tries``: attempts already made earlier in the run
        (a target that came back after a lock timeout)."""
        self._lock_wait, self._retried = 0.0, []
        if drivers.for_url(step.target.database.url).is_async:
            result = self._bridge.call(self._run, step, tries)
        else:
            result = self._run(step, tries)
        result.lock_wait, result.retried = self._lock_wait, tuple(self._retried)
        return result

    def _run(self, step: Step, tries: int = 0) -> TargetResult:
        target = step.target
        started = time.perf_counter()
        attempt = tries
        self._next_target(target.database)
        while True:
            attempt += 1
            try:
                result = self._attempt(step, started, attempt)
            except _Failed as failure:
                # An error the server answered with leaves the connection usable: probing
                # it costs three round trips per failed target.
                self._recover(target.database, probe=failure.transient is not None)
                if failure.transient and attempt <= self.policy.retries:
                    self._retried.append(failure.transient)
                    delay = self.policy.backoff.delay(attempt - 1)
                    if failure.transient == "lock timeout" and self.policy.come_back:
                        # Skip and come back: the worker takes other targets meanwhile
                        # instead of sleeping on this one (see RunProgress.finish).
                        return TargetResult(target, Outcome.FAILED, step.status.current,
                                            step.status.current,
                                            time.perf_counter() - started, failure.message,
                                            failure.hint, attempts=attempt, retry_after=delay)
                    time.sleep(delay)
                    continue
                message = failure.message
                if failure.transient and attempt > 1:
                    message += gave_up(attempt)
                result = self._failed(step, started, message, failure.hint, attempt,
                                      failure.reached)
                result.database_down = failure.transient == "database unreachable"
                return result
            except Exception as unexpected:  # never let one target take a worker down
                self._recover(target.database)
                reason, _ = describe_error(unexpected)
                return self._failed(step, started, f"internal error: {reason}",
                                    "this is a bug in alembic-fleet: please report it", attempt)
            result.seconds = time.perf_counter() - started
            result.attempts = attempt
            return result

    def _failed(self, step: Step, started: float, message: str, hint: str | None,
                attempts: int, reached: tuple[str, ...] | None = None) -> TargetResult:
        """A failed target's result, recorded in the ledger after its rollback."""
        seconds = time.perf_counter() - started
        result = TargetResult(step.target, Outcome.FAILED, step.status.current,
                              step.status.current if reached is None else reached, seconds,
                              message, hint, attempts=attempts)
        if self.run_ledger is not None:
            try:
                connection = self._connection(step.target.database)
                self.run_ledger.failed(connection, step.target, step.status.current, seconds,
                                       message, attempts, reached)
            except Exception:  # e.g. the server is down: the failure is still reported
                self._recover(step.target.database)
        return result

    def _attempt(self, step: Step, started: float, attempt: int) -> TargetResult:
        target = step.target
        scripts = self.scripts[target.service]
        table = scripts.service.version_table
        try:
            connection = self._connection(target.database)
        except DatabaseUnavailableError as exc:
            raise _Failed(exc.message, exc.hint, "database unreachable") from None
        key = lock_key(target.service, target.schema)
        waiting = time.perf_counter()
        try:
            locked = try_lock(connection, key, self.policy.lock_wait)
            self._lock_wait += time.perf_counter() - waiting
            if not locked:
                raise _Failed(
                    f"another runner has held this target's lock for over "
                    f"{self.policy.lock_wait:g}s", "raise --lock-wait, or see who holds it: "
                    "SELECT * FROM pg_locks WHERE locktype = 'advisory'", None)
        except DBAPIError as exc:
            raise self._failure(exc, None) from None
        touched = False
        guard: TransactionGuard | None = None
        try:
            try:  # one transaction for both reads
                status = self._reread(connection, step, table)
                removed = status.state is TargetState.MISSING and self._removed(connection,
                                                                                step)
            finally:
                connection.rollback()
            if removed:
                return TargetResult(target, Outcome.SKIPPED, (), (),
                                    note="its schema was removed after this run started "
                                    "(fleet tenants remove): not created again")
            if status.state is TargetState.AT_HEAD or (
                    status.state is not TargetState.MISSING and status.pending == 0):
                return self._already_there(connection, step, status, attempt)
            touched = True  # from here on a revision may have changed the session
            listener = None
            if self.run_ledger is not None:
                listener = self.run_ledger.for_target(target, table, scripts.graph,
                                                      status.current, started, attempt,
                                                      heads=status.head)
            raw = connection.connection.dbapi_connection
            if getattr(raw, "autocommit", False):  # left so by an earlier target's revision
                raw.autocommit = False
            budget = LockBudget(self.policy.lock_timeout)
            guard = TransactionGuard(table)  # first: see its docstring
            guard.listen(connection)
            event.listen(connection, "before_cursor_execute", budget.before_cursor_execute)
            event.listen(connection, "before_cursor_execute", refuse_rollback)
            event.listen(connection, "commit", budget.on_commit)
            if listener is not None:
                event.listen(connection, "commit", listener.on_commit)
                event.listen(connection, "rollback", listener.on_rollback)
            try:
                via = self._migrate(connection, scripts, target, status, listener, budget,
                                    guard)
            finally:
                guard.remove(connection)
                event.remove(connection, "before_cursor_execute", budget.before_cursor_execute)
                event.remove(connection, "before_cursor_execute", refuse_rollback)
                event.remove(connection, "commit", budget.on_commit)
                if listener is not None:
                    event.remove(connection, "commit", listener.on_commit)
                    event.remove(connection, "rollback", listener.on_rollback)
            # Whatever is still uncommitted now was not committed by the migration (a
            # revision that called commit() left the rest in a new transaction): drop it,
            # then report what the database holds.
            connection.rollback()
            if listener is not None and not listener.wrote_target:
                listener.after_commit(connection, applied_between=not scripts.uses_helper)
            if via in ONE_TRANSACTION and listener is not None and listener.versions:
                after = listener.versions  # read by the transaction that committed
            else:
                after = read_one(connection, target.schema, table) or ()
            if scripts.graph.pending(after, status.head):  # short of where it was going
                raise _Failed(
                    f"the migration ended at {', '.join(after) or 'no revision'} instead of "
                    f"{', '.join(status.head)}: a revision or the env.py ended the "
                    "transaction itself (commit()), so what followed was rolled back",
                    "remove the commit() (use op.get_context().autocommit_block() for "
                    "statements that cannot run in a transaction); compare the schema with "
                    "its version row before running again", None, after)
            return TargetResult(target, Outcome.MIGRATED, status.current, after, via=via,
                                revisions=tuple(listener.timings) if listener else (),
                                note=self.provisioner.take_note(target))
        except (RevisionFailed, ReplayFailed) as exc:
            failure = self._failure(exc.error, exc.revision,
                                    getattr(exc, "location", None)
                                    or _file_of(scripts, exc.revision))
            failure.hint = failure.hint or hint_for(exc.error, scripts.service,
                                                    target.database.url, not status.current)
            if guard is not None and guard.commits:  # revisions committed one by one
                with contextlib.suppress(Exception):  # stay where they left the target
                    connection.rollback()
                    failure.reached = read_one(connection, target.schema, table) or ()
            raise failure from None
        except (DBAPIError, FleetError, LegacyFailed,
                connection.dialect.loaded_dbapi.Error) as exc:
            # The driver's own errors too: fleet's statements on the driver's cursor (the
            # schema, the version table, a copy) are answered by the database, not by a bug.
            raise self._failure(exc, None) from None
        finally:
            with contextlib.suppress(Exception):
                connection.rollback()
                # The reset releases every advisory lock of the session, this one included.
                if not (touched and self._reset_session(connection)):
                    unlock(connection, key)

    def _removed(self, connection: Any, step: Step) -> bool:
        """Whether the target's schema was removed while this run went on: it existed when
        the run was planned, or ``fleet tenants remove`` recorded it since the run read its
        tenants (read in the caller's transaction)."""
        if step.status.state not in (TargetState.MISSING, TargetState.FAILED) and (
                step.status.current):
            return True
        if self.run_ledger is None:
            return False
        return self.run_ledger.ledger.removed_since_run(
            connection, self.run_ledger.run_id, step.target.service, step.target.schema,
            self.run_ledger.read_before)

    def _already_there(self, connection: Any, step: Step, status: TargetStatus,
                       attempt: int) -> TargetResult:
        """A target found at its destination under the lock: migrated by this run's own
        earlier attempt (committed, then the connection died before we heard), or by
        another runner. The ledger row of this run tells which."""
        target = step.target
        if attempt > 1 and self.run_ledger is not None:
            row = self.run_ledger.ledger.target_row(connection, self.run_ledger.run_id,
                                                    target.service, target.schema)
            if row is not None and row[0] == "migrated":
                return TargetResult(target, Outcome.MIGRATED, step.status.current,
                                    status.current, note="committed by an earlier attempt "
                                    "whose connection was lost right after")
        note = ("already at the wanted revision (an earlier attempt of this run or another "
                "runner migrated it)" if attempt > 1 else "already migrated by another runner")
        return TargetResult(target, Outcome.SKIPPED, status.current, status.current, note=note)

    def _reread(self, connection: Any, step: Step, table: str) -> TargetStatus:
        """The target's state under its lock (the plan's view may be stale), read in a
        transaction the caller ends."""
        target = step.target
        current = read_one(connection, target.schema, table, end=False)
        status = classify(target, current, self.scripts[target.service].graph,
                          step.status.head)
        return status

    def _migrate(self, connection: Any, scripts: ServiceScripts, target: Target,
                 status: TargetStatus, listener: TargetLedger | None, budget: LockBudget,
                 guard: TransactionGuard) -> str:
        """Migrate the target; returns how it ran (:attr:`TargetResult.via`). Replayed
        statements run on the driver's cursor, without SQLAlchemy's events: the guard and
        the lock budget see them through the replay's statement hook."""
        destination = self.destinations[target.service]
        if self.provisioner.wanted(scripts, target, status) and self.provisioner.provision(
                connection, scripts, target, status, listener, budget, destination):
            return VIA
        plan = scripts.replay_plan(status.current, destination)
        if plan is not None:
            scripts.replay(connection, target.schema, plan,
                           table_exists=status.state is not TargetState.MISSING,
                           listener=listener,
                           before_statement=lambda cursor, sql: (guard.before(cursor, sql),
                                                                 budget.before(cursor, sql)))
            return ("mixed" if plan.mixed else "replay")
        if scripts.uses_helper:
            from alembic_fleet.alembic_bridge import runner  # imports Alembic

            runner.upgrade(scripts, connection, target.schema, destination, listener)
            return "online"
        self._legacy_upgrade(scripts, target.schema, target.database)
        return "subprocess"

    def _failure(self, error: BaseException, revision: str | None,
                 location: str | None = None) -> _Failed:
        reason, hint = describe_error(error)
        if location:
            reason = f"{reason} ({location})"
        transient = transient_reason(error)
        if hint is None and drivers.sqlstate(error) == "42501":
            hint = ("the database refused the user of this URL a privilege the statement "
                    "needs (a new schema needs CREATE on the database): grant it, or "
                    "migrate as the owner of the schemas")
        if transient == "lock timeout":
            hint = (f"a table was locked by another session for over "
                    f"{self.policy.lock_timeout:g}s (lock_timeout); fleet gave up rather than "
                    "queue the application's queries behind it")
        where = f"revision {revision}: " if revision else ""
        return _Failed(where + reason, hint, transient)

    def _legacy_upgrade(self, scripts: ServiceScripts, schema: str, database: Database) -> None:
        """A service whose env.py does not use the helper: run plain ``alembic`` for it, with
        the variables such env.py files read (``ALEMBIC_SCHEMA``, ``DATABASE_URI``); the
        timeouts travel in ``PGOPTIONS``, and libpq's connect timeout in
        ``PGCONNECT_TIMEOUT`` (its env.py builds its own engine: fleet cannot hand it
        keepalives, which have no environment variable)."""
        url = self.databases.migration_url(database)
        # As the user configured it: a driver the URL names is the one the env.py expects.
        url = (libpq_url(url) if drivers.for_url(database.url) is drivers.PSYCOPG
               else url.render_as_string(hide_password=False))
        service = scripts.service
        options = (f"-c lock_timeout={milliseconds(self.policy.lock_timeout)} "
                   f"-c statement_timeout={milliseconds(self.policy.statement_timeout)}")
        env = {**os.environ, **drivers.connect_timeout_env(os.environ),
               "ALEMBIC_SCHEMA": schema, "DATABASE_URI": url, "DATABASE_URL": url,
               "PGOPTIONS": options}
        command = [sys.executable, "-m", "alembic", "-c", str(service.ini_path), "upgrade",
                   self.destinations[service.name]]
        done = subprocess.run(command, cwd=service.path, env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            raise LegacyFailed(f"alembic upgrade exited with {done.returncode}: "
                               + " | ".join(lines[-3:]))

    def _next_target(self, database: Database) -> None:
        """Count a target on the worker's session on ``database``, closing the session
        first when it has had :func:`session_targets` (the next one opens a new one): a
        backend keeps a cache entry for every table, index and sequence it touched, and a
        large cache makes every later catalog change dearer (a session that had migrated
        15,000 schemas held 3.4 GB and went at a third of its first speed). Between
        targets only: a target's retries stay on the session its caller may listen to."""
        connection = self._connections.get(database.key)
        if connection is not None and self._uses.get(database.key, 0) >= session_targets():
            self._connections.pop(database.key, None)
            self._uses.pop(database.key, None)
            with contextlib.suppress(Exception):
                connection.close()
        self._uses[database.key] = self._uses.get(database.key, 0) + 1

    def _connection(self, database: Database) -> Any:
        connection = self._connections.get(database.key)
        if connection is None:
            connection = self.databases.connect(database, for_migrations=True)
            try:
                configure_session(connection, lock_timeout=self.policy.lock_timeout,
                                  statement_timeout=self.policy.statement_timeout)
            except DBAPIError:
                with contextlib.suppress(Exception):
                    connection.close()
                raise
            self._connections[database.key] = connection
        return connection

    def _reset_session(self, connection: Any) -> bool:
        """Undo whatever a revision set on the session (``SET lock_timeout``, ``search_path``,
        ``ROLE``...) and release its advisory locks, so the next target on this connection
        starts as the first did: with fleet's own settings only. One round trip on psycopg
        and psycopg 2 (it runs after every migrated target). False when it failed (the
        caller then releases the target's lock itself)."""
        try:
            connection.commit()
            raw = connection.connection.dbapi_connection  # the DBAPI face of any driver
            asynchronous = connection.dialect.is_async
            raw.autocommit = True  # DISCARD ALL refuses to run inside a transaction block
            try:
                cursor = raw.cursor()
                try:
                    if asynchronous:
                        for statement in ASYNCPG_RESET:
                            cursor.execute(statement)
                        cursor.execute(SQL_PREPARED)
                        for (name,) in cursor.fetchall():
                            cursor.execute(f"DEALLOCATE {quote_ident(name)}")
                    else:
                        cursor.execute(reset_and_configure_sql(session_settings(
                            connection, lock_timeout=self.policy.lock_timeout,
                            statement_timeout=self.policy.statement_timeout)))
                finally:
                    cursor.close()
            finally:
                raw.autocommit = False
            if asynchronous:
                configure_session(connection, lock_timeout=self.policy.lock_timeout,
                                  statement_timeout=self.policy.statement_timeout)
        except Exception:
            return False
        return True

    def _recover(self, database: Database, *, probe: bool = True) -> None:
        """After a failure, drop a broken connection (the next attempt opens a new one).

        ``probe``: ask the server whether the connection still works; without it, only a
        connection the driver already knows to be closed or broken is dropped."""
        connection = self._connections.get(database.key)
        if connection is None:
            return
        try:
            connection.rollback()
            if probe or connection.invalidated or connection.closed:
                connection.exec_driver_sql("SELECT 1")
                connection.rollback()
        except Exception:  # the connection is unusable: forget it
            self._connections.pop(database.key, None)
            self._uses.pop(database.key, None)
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        asynchronous = {key for key, connection in self._connections.items()
                        if connection.dialect.is_async}
        for key, connection in self._connections.items():
            with contextlib.suppress(Exception):
                if key in asynchronous:
                    self._bridge.call(connection.close)
                else:
                    connection.close()
        self._connections.clear()
        self._uses.clear()
        self._bridge.close()


SESSION_TARGETS = 200
"""Targets a worker migrates in one server session before it opens the next."""


def session_targets() -> int:
    """:data:`SESSION_TARGETS`, or ``FLEET_SESSION_TARGETS`` (at least 1; a value that is
    not a number means the default)."""
    try:
        return max(1, int(os.environ.get("FLEET_SESSION_TARGETS", SESSION_TARGETS)))
    except ValueError:
        return SESSION_TARGETS


@dataclass
class WorkFactory:
    """Builds a worker's :class:`TargetMigrator` inside the worker process.

    With the ``fork`` start method the parent's loaded scripts are inherited; with ``spawn``
    they are dropped when pickling and each worker loads them once.
    """

    embedded_dir: Path
    services: dict[str, Any]
    destinations: dict[str, str]
    secrets: tuple[str, ...] = ()
    scripts: dict[str, ServiceScripts] | None = None
    policy: Policy = field(default_factory=Policy)
    run_ledger: RunLedger | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["scripts"] = None
        return state

    def __call__(self) -> TargetMigrator:
        for secret in self.secrets:
            register_secret(secret)
        scripts = self.scripts or {n: ServiceScripts(self.services[n]) for n in self.destinations}
        return TargetMigrator(Databases(self.embedded_dir), scripts, self.destinations,
                              self.policy, self.run_ledger)
