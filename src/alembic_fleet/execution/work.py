"""Migrate one target: the unit of work every executor runs.

One connection per database is kept for the whole run; a target's failure rolls back only
that target (the env helper owns its transaction) and is turned into a result naming the
service, schema, revision and reason.
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

from sqlalchemy.exc import DBAPIError

from alembic_fleet.alembic_bridge import runner
from alembic_fleet.alembic_bridge.replay import ReplayFailed
from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.databases import Databases, libpq_url
from alembic_fleet.exceptions import FleetError
from alembic_fleet.inspect.versions import read_versions
from alembic_fleet.model.status import Outcome, Step, TargetResult, TargetState
from alembic_fleet.model.targets import Database
from alembic_fleet.redact import register_secret, scrub


def describe_error(error: BaseException) -> tuple[str, str | None]:
    """A one-line reason and an optional hint for a failed target (passwords scrubbed)."""
    original = getattr(error, "orig", None) or error
    if isinstance(error, FleetError):
        return scrub(error.message), error.hint
    lines = [line for line in str(original).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(original).__name__
    detail = next((line for line in lines[1:] if line.startswith(("DETAIL", "HINT"))), None)
    code = getattr(original, "sqlstate", None)
    text = f"{type(original).__name__}: {reason}"
    if code:
        text += f" (SQLSTATE {code})"
    if detail:
        text += f"; {detail}"
    return scrub(text), None


class LegacyFailed(Exception):
    """A legacy ``alembic`` subprocess failed; the message holds its last lines."""


@dataclass
class TargetMigrator:
    """Upgrades targets to their destinations, reusing one connection per database."""

    databases: Databases
    scripts: dict[str, ServiceScripts]
    destinations: dict[str, str]
    """Per service: the Alembic destination (``heads`` or a revision id)."""
    _connections: dict[str, Any] = field(default_factory=dict)

    def __call__(self, step: Step) -> TargetResult:
        target = step.target
        scripts = self.scripts[target.service]
        table = scripts.service.version_table
        started = time.perf_counter()
        try:
            connection = self._connection(target.database)
            destination = self.destinations[target.service]
            replay = scripts.replayer.plan(scripts.script, step.status.current, destination
                                           ) if scripts.replayer else None
            if replay is not None:
                replayer = scripts.replayer
                assert replayer is not None
                replayer.run(connection, target.schema, replay,
                             table_exists=step.status.state is not TargetState.MISSING)
            elif scripts.uses_helper:
                runner.upgrade(scripts, connection, target.schema, destination)
            else:
                self._legacy_upgrade(scripts, target.schema, target.database)
            after = read_versions(connection, [(target.schema, table)]).get(
                (target.schema, table), ()
            )
            connection.rollback()
        except (runner.RevisionFailed, ReplayFailed) as exc:
            self._recover(target.database)
            reason, hint = describe_error(exc.error)
            where = f"revision {exc.revision}: " if exc.revision else ""
            return TargetResult(target, Outcome.FAILED, step.status.current, step.status.current,
                                time.perf_counter() - started, where + reason, hint)
        except LegacyFailed as exc:
            self._recover(target.database)
            return TargetResult(target, Outcome.FAILED, step.status.current, step.status.current,
                                time.perf_counter() - started, scrub(str(exc)),
                                "the output above is the last lines 'alembic' printed")
        except (DBAPIError, FleetError) as exc:
            self._recover(target.database)
            reason, hint = describe_error(exc)
            return TargetResult(target, Outcome.FAILED, step.status.current, step.status.current,
                                time.perf_counter() - started, reason, hint)
        return TargetResult(target, Outcome.MIGRATED, step.status.current, after,
                            time.perf_counter() - started)

    def _legacy_upgrade(self, scripts: ServiceScripts, schema: str, database: Database) -> None:
        """A service whose env.py does not use the helper: run plain ``alembic`` for it, with
        the variables such env.py files read (``ALEMBIC_SCHEMA``, ``DATABASE_URI``)."""
        url = libpq_url(self.databases.url(database))
        service = scripts.service
        env = {**os.environ, "ALEMBIC_SCHEMA": schema, "DATABASE_URI": url, "DATABASE_URL": url}
        command = [sys.executable, "-m", "alembic", "-c", str(service.ini_path), "upgrade",
                   self.destinations[service.name]]
        done = subprocess.run(command, cwd=service.path, env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            raise LegacyFailed(f"alembic upgrade exited with {done.returncode}: "
                               + " | ".join(lines[-3:]))

    def _connection(self, database: Database) -> Any:
        connection = self._connections.get(database.key)
        if connection is None:
            connection = self.databases.connect(database)
            self._connections[database.key] = connection
        return connection

    def _recover(self, database: Database) -> None:
        """After a failure, drop a broken connection (the next target opens a new one)."""
        connection = self._connections.get(database.key)
        if connection is None:
            return
        try:
            connection.rollback()
            connection.exec_driver_sql("SELECT 1")
            connection.rollback()
        except Exception:  # the connection is unusable: forget it
            self._connections.pop(database.key, None)
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                connection.close()
        self._connections.clear()


@dataclass
class WorkFactory:
    """Builds a worker's :class:`TargetMigrator` inside the worker process.

    With the ``fork`` start method the parent's loaded scripts are inherited; with ``spawn``
    they are dropped when pickling and each worker loads them once.
    """

    config_file: Path
    embedded_dir: Path
    services: dict[str, Any]
    destinations: dict[str, str]
    secrets: tuple[str, ...] = ()
    scripts: dict[str, ServiceScripts] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["scripts"] = None
        return state

    def __call__(self) -> TargetMigrator:
        for secret in self.secrets:
            register_secret(secret)
        scripts = self.scripts or {n: ServiceScripts(self.services[n]) for n in self.destinations}
        return TargetMigrator(Databases(self.embedded_dir), scripts, self.destinations)
