"""The ledger: a schema (``fleet`` by default) in each database fleet migrates.

* ``runs``: one row per run that migrated or failed something: who (OS user), where (host,
  pid), the command, start and end, counts and outcome. A run killed before it ends keeps
  ``finished_at`` empty, which ``fleet log`` shows as ``interrupted``.
* ``run_targets``: per run and target, from/to revisions, seconds, outcome, error, attempts.
  Skipped targets are not written: a no-op run writes nothing at all.
* ``applied_revisions``: per target and revision, the SHA-256 of the revision file when it
  was applied (for ``fleet check`` to find edited revisions).

The version tables stay the truth about where a target stands; the ledger is history. It is
written by the parent process in batches (every few hundred results or seconds), so a large
run costs a handful of statements, and a killed run keeps what was flushed.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from alembic_fleet.model.identifiers import quote_ident

DEFAULT_SCHEMA = "fleet"


@dataclass(frozen=True)
class RunInfo:
    """Who started a run, where, and with which command."""

    run_id: str
    user: str
    host: str
    pid: int
    command: str

    @classmethod
    def current(cls, command: str) -> RunInfo:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        return cls(str(uuid.uuid4()), user, socket.gethostname(), os.getpid(), command)


@dataclass(frozen=True)
class TargetRecord:
    """One target's line in the ledger."""

    service: str
    tenant: str | None
    schema: str
    from_revs: tuple[str, ...]
    to_revs: tuple[str, ...]
    seconds: float
    outcome: str
    error: str | None
    attempts: int
    applied: tuple[tuple[str, str], ...] = ()
    """(revision, checksum) of each revision applied."""


@dataclass(frozen=True)
class RunSummary:
    """A run as ``fleet log`` shows it."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    user: str
    host: str
    command: str
    migrated: int
    failed: int
    outcome: str


def _ddl(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.runs (
            run_id uuid PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            os_user text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            command text NOT NULL,
            migrated integer NOT NULL DEFAULT 0,
            failed integer NOT NULL DEFAULT 0,
            outcome text NOT NULL DEFAULT 'running')""",
        f"""CREATE TABLE IF NOT EXISTS {s}.run_targets (
            run_id uuid NOT NULL REFERENCES {s}.runs (run_id) ON DELETE CASCADE,
            service text NOT NULL,
            tenant text,
            schema_name text NOT NULL,
            from_revisions text[] NOT NULL,
            to_revisions text[] NOT NULL,
            seconds double precision NOT NULL,
            outcome text NOT NULL,
            error text,
            attempts integer NOT NULL DEFAULT 1,
            finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (run_id, service, schema_name))""",
        f"""CREATE INDEX IF NOT EXISTS run_targets_latest
            ON {s}.run_targets (service, schema_name, finished_at DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.applied_revisions (
            service text NOT NULL,
            schema_name text NOT NULL,
            revision text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            run_id uuid,
            PRIMARY KEY (service, schema_name, revision))""",
    ]


_LOCK_KEY = 0x666C656574  # "fleet": serialises creating the ledger between runners


@dataclass
class Ledger:
    """Reads and writes one database's ledger on a SQLAlchemy connection."""

    schema: str = DEFAULT_SCHEMA
    _ready: bool = field(default=False, repr=False)

    # Every method leaves the connection outside any transaction, as it found it.

    def _found(self, connection: Any) -> bool:
        return bool(connection.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"),
            {"name": f"{quote_ident(self.schema)}.run_targets"},
        ).scalar())

    def exists(self, connection: Any) -> bool:
        found = self._found(connection)
        connection.rollback()
        return found

    def ensure(self, connection: Any) -> None:
        """Create the ledger when it is missing (no DDL at all when it exists)."""
        if self._ready:
            return
        if not self.exists(connection):
            with connection.begin():
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
                if not self._found(connection):
                    for statement in _ddl(self.schema):
                        connection.exec_driver_sql(statement)
        self._ready = True

    def start_run(self, connection: Any, info: RunInfo) -> None:
        self.ensure(connection)
        with connection.begin():
            connection.execute(
                text(f"INSERT INTO {quote_ident(self.schema)}.runs "
                     "(run_id, os_user, host, pid, command) VALUES (:id, :u, :h, :p, :c)"),
                {"id": info.run_id, "u": info.user, "h": info.host, "p": info.pid,
                 "c": info.command},
            )

    def record(self, connection: Any, run_id: str, records: Sequence[TargetRecord]) -> None:
        """Write target rows and applied checksums, in one transaction, a few statements."""
        if not records:
            return
        s = quote_ident(self.schema)
        with connection.begin():
            connection.execute(
                text(f"""INSERT INTO {s}.run_targets (run_id, service, tenant, schema_name,
                        from_revisions, to_revisions, seconds, outcome, error, attempts)
                    VALUES (:run_id, :service, :tenant, :schema, :from_revs, :to_revs,
                            :seconds, :outcome, :error, :attempts)
                    ON CONFLICT (run_id, service, schema_name) DO UPDATE SET
                        to_revisions = EXCLUDED.to_revisions, seconds = EXCLUDED.seconds,
                        outcome = EXCLUDED.outcome, error = EXCLUDED.error,
                        attempts = EXCLUDED.attempts, finished_at = clock_timestamp()"""),
                [{"run_id": run_id, "service": r.service, "tenant": r.tenant,
                  "schema": r.schema, "from_revs": list(r.from_revs), "to_revs": list(r.to_revs),
                  "seconds": r.seconds, "outcome": r.outcome, "error": r.error,
                  "attempts": r.attempts} for r in records],
            )
            applied = [(r.service, r.schema, rev, checksum) for r in records
                       for rev, checksum in r.applied]
            if applied:
                connection.execute(
                    text(f"""INSERT INTO {s}.applied_revisions
                            (service, schema_name, revision, checksum, run_id)
                        VALUES (:service, :schema, :revision, :checksum, :run_id)
                        ON CONFLICT (service, schema_name, revision) DO UPDATE SET
                            checksum = EXCLUDED.checksum, applied_at = now(),
                            run_id = EXCLUDED.run_id"""),
                    [{"service": a, "schema": b, "revision": c, "checksum": d, "run_id": run_id}
                     for a, b, c, d in applied],
                )

    def finish_run(self, connection: Any, run_id: str, migrated: int, failed: int,
                   outcome: str) -> None:
        with connection.begin():
            connection.execute(
                text(f"UPDATE {quote_ident(self.schema)}.runs SET finished_at = now(), "
                     "migrated = :m, failed = :f, outcome = :o WHERE run_id = :id"),
                {"m": migrated, "f": failed, "o": outcome, "id": run_id},
            )

    def failed_targets(self, connection: Any, pairs: Iterable[tuple[str, str]]
                       ) -> dict[tuple[str, str], str]:
        """For the given (service, schema) pairs: those whose latest recorded outcome is a
        failure, with its error."""
        pairs = list(pairs)
        if not pairs or not self.exists(connection):
            return {}
        rows = connection.execute(
            text(f"""SELECT DISTINCT ON (service, schema_name) service, schema_name, outcome,
                        error
                    FROM {quote_ident(self.schema)}.run_targets
                    WHERE (service, schema_name) IN (
                        SELECT * FROM unnest(CAST(:services AS text[]),
                                             CAST(:schemas AS text[])))
                    ORDER BY service, schema_name, finished_at DESC"""),
            {"services": [p[0] for p in pairs], "schemas": [p[1] for p in pairs]},
        ).all()
        connection.rollback()
        return {(r[0], r[1]): r[3] or "" for r in rows if r[2] == "failed"}

    def recent_runs(self, connection: Any, limit: int) -> list[RunSummary]:
        if not self.exists(connection):
            return []
        rows = connection.execute(
            text(f"""SELECT run_id::text, started_at, finished_at, os_user, host, command,
                        migrated, failed, outcome
                    FROM {quote_ident(self.schema)}.runs
                    ORDER BY started_at DESC LIMIT :n"""),
            {"n": limit},
        ).all()
        connection.rollback()
        return [RunSummary(*row) for row in rows]

    def run_targets(self, connection: Any, run_id: str) -> list[dict[str, Any]]:
        """The target rows of the run(s) whose id starts with ``run_id``."""
        if not self.exists(connection):
            return []
        rows = connection.execute(
            text(f"""SELECT service, tenant, schema_name, from_revisions, to_revisions,
                        seconds, outcome, error, attempts
                    FROM {quote_ident(self.schema)}.run_targets
                    WHERE run_id::text LIKE :prefix ORDER BY finished_at"""),
            {"prefix": run_id.replace("\\", "").replace("%", "").replace("_", "") + "%"},
        ).mappings().all()
        connection.rollback()
        return [dict(r) for r in rows]

    def applied_checksums(self, connection: Any, services: Sequence[str]
                          ) -> list[AppliedChecksum]:
        """Per (service, revision, checksum) recorded: how many schemas and one example.

        One grouped query; ``fleet check`` and ``fleet migrate`` compare it with the files.
        """
        if not services or not self.exists(connection):
            return []
        rows = connection.execute(
            text(f"""SELECT service, revision, checksum, count(*), min(schema_name),
                        max(applied_at)
                    FROM {quote_ident(self.schema)}.applied_revisions
                    WHERE service = ANY(CAST(:services AS text[]))
                    GROUP BY service, revision, checksum
                    ORDER BY service, revision, checksum"""),
            {"services": list(services)},
        ).all()
        connection.rollback()
        return [AppliedChecksum(*row) for row in rows]


@dataclass(frozen=True)
class AppliedChecksum:
    """A revision file's checksum as recorded when it was applied to ``schemas`` targets."""

    service: str
    revision: str
    checksum: str
    schemas: int
    example_schema: str
    last_applied: datetime
