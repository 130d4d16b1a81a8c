"""The ledger: a schema (``fleet`` by default) in each database fleet migrates.

* ``runs``: one row per run that migrated or failed something: who (OS user), where (host,
  pid), the command, start and end, counts and outcome. A run killed before it ends keeps
  ``finished_at`` empty, which ``fleet log`` shows as ``interrupted``.
* ``run_targets``: per run and target, from/to revisions, seconds, outcome, error, attempts.
  A migrated target's row is written by the worker inside the target's own transaction, so
  it exists exactly when the migration committed; a failed target's row is written after
  its rollback. Skipped targets are not written: a no-op run writes nothing at all.
* ``applied_revisions``: per target and revision, the SHA-256 of the revision file when it
  was applied (for ``fleet check`` to find edited revisions), written in the transaction
  that applied the revision and deleted in the one that downgrades it.
* ``reference_schemas``: per service and history (``key``, a digest of its revisions), the
  reference schema new tenants are copied from, its captured DDL and what it holds, or
  why that history may not be copied (``refused``); see
  :mod:`alembic_fleet.execution.provision`.

The version tables stay the truth about where a target stands; the ledger is history that
agrees with them: whatever is killed when, a committed migration has its rows and a
rolled-back one has none. The parent process writes only the run row (at the start, and its
end with counts taken from the committed target rows).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.redact import scrub

DEFAULT_SCHEMA = "fleet"
COMMAND_CHARS = 500
"""How much of a run's command line the ledger keeps."""


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
        # As typed, but never a password: a --metrics-push URL may carry one, and the
        # ledger outlives every terminal it was shown on masked. Cut after the masking: a
        # secret cut in two is no longer the one registered, and its start was kept.
        return cls(str(uuid.uuid4()), user, socket.gethostname(), os.getpid(),
                   scrub(command)[:COMMAND_CHARS])


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


CHECKSUMS_INDEX = "applied_revisions_checksums"
"""Each (service, revision, checksum) recorded, in order: the check of applied files before a
run walks it one distinct pair at a time (a few hundred probes) instead of grouping every
row (a revision per schema: 1.2 million rows at 10,000 tenants of 120 revisions)."""


def _checksums_index(schema: str) -> str:
    return (f"CREATE INDEX IF NOT EXISTS {CHECKSUMS_INDEX} "
            f"ON {quote_ident(schema)}.applied_revisions (service, revision, checksum)")


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
        _checksums_index(schema),
        f"""CREATE TABLE IF NOT EXISTS {s}.removed_schemas (
            service text NOT NULL,
            schema_name text NOT NULL,
            removed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (service, schema_name))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.reference_schemas (
            service text NOT NULL,
            key text NOT NULL,
            heads text[] NOT NULL,
            schema_name text,
            content jsonb,
            refused text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (service, key))""",
    ]


TABLES = ("runs", "run_targets", "applied_revisions", "removed_schemas", "reference_schemas")
"""The ledger's tables: a ledger without one of them (made by an older fleet, or a table
dropped by hand) gets what it lacks."""


_LOCK_KEY = 0x666C656574  # "fleet": serialises creating the ledger between runners


@dataclass
class Ledger:
    """Reads and writes one database's ledger on a SQLAlchemy connection."""

    schema: str = DEFAULT_SCHEMA
    lock_timeout: float = 5.0
    """Seconds any ledger statement of the parent may wait for a lock on a ledger table
    (a session holding one must not hang ``status`` or ``migrate``)."""
    _ready: bool = field(default=False, repr=False)

    def _bounded(self, connection: Any) -> None:
        """Bound the waits of the current transaction's statements by :attr:`lock_timeout`."""
        connection.execute(text("SELECT set_config('lock_timeout', :v, true)"),
                           {"v": f"{max(1, round(self.lock_timeout * 1000))}ms"})

    # Every method leaves the connection outside any transaction, as it found it.

    def _found(self, connection: Any, tables: Sequence[str] = TABLES[-1:]) -> bool:
        """Whether every one of ``tables`` is there (by default the newest: a ledger to
        read; a table of it missing then fails the read, which says so)."""
        self._bounded(connection)
        return bool(connection.execute(
            text("SELECT bool_and(to_regclass(name) IS NOT NULL) "
                 "FROM unnest(CAST(:names AS text[])) AS name"),
            {"names": [f"{quote_ident(self.schema)}.{table}" for table in tables]},
        ).scalar())

    def exists(self, connection: Any) -> bool:
        found = self._found(connection)
        connection.rollback()
        return found

    def ensure(self, connection: Any) -> None:
        """Create the ledger, or the tables it lacks (an older fleet's, a table dropped by
        hand); no DDL at all when it is whole. The checksums index an older fleet did not
        make (or one left invalid, or of another shape) is made on the side: a role that
        may write the ledger but not change it, or a table another session holds, leaves
        the ledger as it is, read the older way."""
        if self._ready:
            return
        tables = self._found(connection, TABLES)
        indexed = tables and self._index_usable(connection)
        connection.rollback()
        if not tables:
            with connection.begin():
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
                if not self._found(connection, TABLES):
                    for statement in _ddl(self.schema):
                        connection.exec_driver_sql(statement)
        elif not indexed:
            self._add_index(connection)
        self._ready = True

    def _index_usable(self, connection: Any) -> bool:
        """Whether the checksums index is there, valid, and the one fleet makes (a build
        cancelled half-way leaves an invalid one, which the planner never uses: walking it
        would sort the table once per pair)."""
        self._bounded(connection)
        # From the catalog alone: pg_get_indexdef() would wait for a lock on the table.
        return bool(connection.execute(
            text("""SELECT i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
                        AND c.relam = (SELECT oid FROM pg_catalog.pg_am
                                       WHERE amname = 'btree')
                        AND ARRAY(SELECT a.attname::text
                                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k (n, o)
                                  JOIN pg_catalog.pg_attribute AS a
                                    ON a.attrelid = i.indrelid AND a.attnum = k.n
                                  ORDER BY k.o)
                            = ARRAY['service', 'revision', 'checksum']
                    FROM pg_catalog.pg_index AS i
                    JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid
                    WHERE i.indexrelid = to_regclass(:name)"""),
            {"name": f"{quote_ident(self.schema)}.{CHECKSUMS_INDEX}"}).scalar())

    def _add_index(self, connection: Any) -> None:
        """The checksums index on an older ledger's table (see :meth:`ensure`), instead of
        one that is not usable. The build holds back other runners' ledger writes (about
        two seconds per million rows, once); a table another session holds for over a
        second leaves it to a later run rather than queue everyone behind it."""
        name = f"{quote_ident(self.schema)}.{quote_ident(CHECKSUMS_INDEX)}"
        try:
            with connection.begin():
                connection.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
                connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
                connection.exec_driver_sql(_checksums_index(self.schema))
        except DBAPIError:
            connection.rollback()

    def start_run(self, connection: Any, info: RunInfo) -> bool:
        """Write the run's row; False when it is there already: the run reached this
        database before through another URL (another driver, another spelling of the
        host), and that connection's row is the run's row here too."""
        self.ensure(connection)
        s = quote_ident(self.schema)
        with connection.begin():
            self._bounded(connection)
            # The locks every worker's target rows will need: a session holding one of the
            # ledger's tables makes the run refuse now, before any target, not fail each
            # target after its retries.
            connection.exec_driver_sql(
                f"LOCK TABLE {s}.run_targets, {s}.applied_revisions, {s}.removed_schemas "
                "IN ROW EXCLUSIVE MODE")
            written = connection.execute(
                text(f"INSERT INTO {quote_ident(self.schema)}.runs "
                     "(run_id, os_user, host, pid, command) VALUES (:id, :u, :h, :p, :c) "
                     "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"),
                {"id": info.run_id, "u": info.user, "h": info.host, "p": info.pid,
                 "c": info.command},
            ).first()
        return written is not None

    def write_target(self, connection: Any, run_id: str, record: TargetRecord) -> None:
        """One target's row, in the caller's transaction (the target's own, when it
        migrated: the row commits or rolls back with the migration)."""
        connection.execute(
            text(f"""INSERT INTO {quote_ident(self.schema)}.run_targets (run_id, service,
                    tenant, schema_name, from_revisions, to_revisions, seconds, outcome, error,
                    attempts)
                VALUES (:run_id, :service, :tenant, :schema, :from_revs, :to_revs, :seconds,
                        :outcome, :error, :attempts)
                ON CONFLICT (run_id, service, schema_name) DO UPDATE SET
                    to_revisions = EXCLUDED.to_revisions, seconds = EXCLUDED.seconds,
                    outcome = EXCLUDED.outcome, error = EXCLUDED.error,
                    attempts = EXCLUDED.attempts, finished_at = clock_timestamp()"""),
            {"run_id": run_id, "service": record.service, "tenant": record.tenant,
             "schema": record.schema, "from_revs": list(record.from_revs),
             "to_revs": list(record.to_revs), "seconds": record.seconds,
             "outcome": record.outcome, "error": record.error, "attempts": record.attempts},
        )

    def write_applied_many(self, connection: Any, run_id: str, service: str, schema: str,
                           checksums: Sequence[tuple[str, str]]) -> None:
        """Several revisions applied to a schema at once (revision, checksum), in the
        transaction that applied them: one statement."""
        connection.execute(
            text(f"""INSERT INTO {quote_ident(self.schema)}.applied_revisions
                    (service, schema_name, revision, checksum, run_id)
                SELECT :service, :schema, r, c, CAST(:run_id AS uuid)
                FROM unnest(CAST(:revisions AS text[]), CAST(:checksums AS text[])) AS x(r, c)
                ON CONFLICT (service, schema_name, revision) DO UPDATE SET
                    checksum = EXCLUDED.checksum, applied_at = now(),
                    run_id = EXCLUDED.run_id"""),
            {"service": service, "schema": schema, "run_id": run_id,
             "revisions": [r for r, _ in checksums], "checksums": [c for _, c in checksums]},
        )

    def reference(self, connection: Any, service: str, key: str
                  ) -> tuple[str | None, dict[str, Any] | None, str | None] | None:
        """(schema name, content, refused) of a service's reference for history ``key``,
        or None when there is none (in the caller's transaction)."""
        row = connection.execute(
            text(f"""SELECT schema_name, content, refused
                FROM {quote_ident(self.schema)}.reference_schemas
                WHERE service = :service AND key = :key"""),
            {"service": service, "key": key}).first()
        return (row[0], row[1], row[2]) if row else None

    def record_reference(self, connection: Any, service: str, key: str, heads: Sequence[str],
                         schema: str | None, content: dict[str, Any] | None,
                         refused: str | None) -> None:
        """A reference built (or refused), in the caller's transaction."""
        connection.execute(
            text(f"""INSERT INTO {quote_ident(self.schema)}.reference_schemas
                    (service, key, heads, schema_name, content, refused)
                VALUES (:service, :key, :heads, :schema, CAST(:content AS jsonb), :refused)
                ON CONFLICT (service, key) DO UPDATE SET heads = EXCLUDED.heads,
                    schema_name = EXCLUDED.schema_name, content = EXCLUDED.content,
                    refused = EXCLUDED.refused, created_at = now()"""),
            {"service": service, "key": key, "heads": list(heads), "schema": schema,
             "content": None if content is None else json.dumps(content), "refused": refused})

    def other_references(self, connection: Any, service: str, key: str
                         ) -> list[tuple[str, str | None]]:
        """(key, schema name) of the service's references for other histories."""
        rows = connection.execute(
            text(f"""SELECT key, schema_name FROM {quote_ident(self.schema)}.reference_schemas
                WHERE service = :service AND key <> :key"""),
            {"service": service, "key": key}).all()
        return [(r[0], r[1]) for r in rows]

    def recorded_reference(self, connection: Any, schema: str) -> bool:
        """Whether a reference row names ``schema`` (in the caller's transaction)."""
        return bool(connection.execute(
            text(f"""SELECT EXISTS (SELECT 1 FROM {quote_ident(self.schema)}.reference_schemas
                WHERE schema_name = :schema)"""), {"schema": schema}).scalar())

    def forget_reference(self, connection: Any, service: str, key: str) -> None:
        connection.execute(
            text(f"""DELETE FROM {quote_ident(self.schema)}.reference_schemas
                WHERE service = :service AND key = :key"""),
            {"service": service, "key": key})

    def forget_applied(self, connection: Any, service: str, schema: str, revision: str
                       ) -> None:
        """A revision downgraded away, in the transaction that removed it."""
        connection.execute(
            text(f"""DELETE FROM {quote_ident(self.schema)}.applied_revisions
                WHERE service = :service AND schema_name = :schema AND revision = :revision"""),
            {"service": service, "schema": schema, "revision": revision},
        )

    def close_run(self, connection: Any, run_id: str, outcome: str) -> tuple[int, int]:
        """End a run: its counts are those of the target rows that committed. Returns
        (migrated, failed)."""
        s = quote_ident(self.schema)
        with connection.begin():
            self._bounded(connection)
            row = connection.execute(
                text(f"""UPDATE {s}.runs SET finished_at = now(), outcome = :o,
                        migrated = counts.migrated, failed = counts.failed
                    FROM (SELECT count(*) FILTER (WHERE outcome IN ('migrated', 'downgraded'))
                                     AS migrated,
                                 count(*) FILTER (WHERE outcome = 'failed') AS failed
                          FROM {s}.run_targets WHERE run_id = :id) AS counts
                    WHERE run_id = :id RETURNING counts.migrated, counts.failed"""),
                {"o": outcome, "id": run_id},
            ).one()
        return int(row[0]), int(row[1])

    def record_removal(self, connection: Any, service: str, schema: str) -> None:
        """A tenant's schema removed (in the caller's transaction, under its lock): its
        checksum rows go with it, and runs that started before must not create it again."""
        connection.execute(
            text(f"""DELETE FROM {quote_ident(self.schema)}.applied_revisions
                WHERE service = :service AND schema_name = :schema"""),
            {"service": service, "schema": schema})
        connection.execute(
            text(f"""INSERT INTO {quote_ident(self.schema)}.removed_schemas
                    (service, schema_name) VALUES (:service, :schema)
                ON CONFLICT (service, schema_name) DO UPDATE SET
                    removed_at = clock_timestamp()"""),
            {"service": service, "schema": schema})

    def forget_removals(self, connection: Any, schemas: Sequence[tuple[str, str]]) -> None:
        """``(service, schema)`` pairs added again (``fleet tenants add``, under the tenant
        source's edit lock): a run must make them, whenever it started; a removal recorded
        later counts as always. Commits; nothing to do before the ledger exists."""
        table = f"{quote_ident(self.schema)}.removed_schemas"
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            connection.rollback()
            return
        services, names = zip(*schemas, strict=True) if schemas else ((), ())
        connection.execute(
            text(f"""DELETE FROM {table} r USING unnest(CAST(:services AS text[]),
                                                     CAST(:names AS text[])) AS g(s, n)
                WHERE r.service = g.s AND r.schema_name = g.n"""),
            {"services": list(services), "names": list(names)})
        connection.commit()

    def removed_since_run(self, connection: Any, run_id: str, service: str, schema: str,
                          before: float = 0.0) -> bool:
        """Whether the schema was removed after run ``run_id`` read its tenants: after its
        row's start less ``before`` seconds (in the caller's transaction). A removal between
        the reading and the row is one the run's plan did not see."""
        return bool(connection.execute(
            text(f"""SELECT EXISTS (SELECT 1 FROM {quote_ident(self.schema)}.removed_schemas r
                    JOIN {quote_ident(self.schema)}.runs u ON u.run_id = :id
                    WHERE r.service = :service AND r.schema_name = :schema
                      AND r.removed_at > u.started_at
                                         - make_interval(secs => CAST(:before AS float8)))"""),
            {"id": run_id, "service": service, "schema": schema,
             "before": before}).scalar())

    def typical_seconds(self, connection: Any, services: list[str]) -> dict[str, float]:
        """Per service: the median seconds of its last 200 migrated targets (what a time
        budget expects of the next one); empty when there is no ledger yet."""
        exists = connection.execute(text("SELECT to_regclass(:t)"), {
            "t": f"{quote_ident(self.schema)}.run_targets"}).scalar()
        if exists is None:
            connection.rollback()
            return {}
        rows = connection.execute(
            text(f"""SELECT service, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
                FROM (SELECT service, seconds, row_number() OVER (
                          PARTITION BY service ORDER BY finished_at DESC) AS n
                      FROM {quote_ident(self.schema)}.run_targets
                      WHERE outcome = 'migrated'
                        AND service = ANY(CAST(:services AS text[]))) AS recent
                WHERE n <= 200 GROUP BY service"""), {"services": services}).all()
        connection.rollback()
        return {service: float(seconds) for service, seconds in rows}

    def target_row(self, connection: Any, run_id: str, service: str, schema: str
                   ) -> tuple[str, tuple[str, ...], float] | None:
        """(outcome, to_revisions, seconds) of one target in one run, if it was written."""
        self._bounded(connection)
        row = connection.execute(
            text(f"""SELECT outcome, to_revisions, seconds
                FROM {quote_ident(self.schema)}.run_targets
                WHERE run_id = :id AND service = :service AND schema_name = :schema"""),
            {"id": run_id, "service": service, "schema": schema},
        ).first()
        connection.rollback()
        return (row[0], tuple(row[1]), float(row[2])) if row else None

    def failed_targets(self, connection: Any, pairs: Iterable[tuple[str, str]]
                       ) -> dict[tuple[str, str], str]:
        """For the given (service, schema) pairs: those whose latest recorded outcome is a
        failure, with its error."""
        pairs = list(pairs)
        if not pairs or not self.exists(connection):
            return {}
        self._bounded(connection)
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
        self._bounded(connection)
        # A run that never closed its row (killed, or stopped by a second signal) is
        # counted from its target rows, as closing it would have counted them.
        s = quote_ident(self.schema)
        rows = connection.execute(
            text(f"""SELECT r.run_id::text, r.started_at, r.finished_at, r.os_user, r.host,
                        r.command, coalesce(c.migrated, r.migrated),
                        coalesce(c.failed, r.failed), r.outcome
                    FROM {s}.runs AS r
                    LEFT JOIN LATERAL (
                        SELECT count(*) FILTER (WHERE t.outcome IN ('migrated', 'downgraded'))
                                   AS migrated,
                               count(*) FILTER (WHERE t.outcome = 'failed') AS failed
                        FROM {s}.run_targets AS t WHERE t.run_id = r.run_id) AS c
                      ON r.finished_at IS NULL
                    ORDER BY r.started_at DESC LIMIT :n"""),
            {"n": limit},
        ).all()
        connection.rollback()
        return [RunSummary(*row) for row in rows]

    def run_targets(self, connection: Any, run_id: str) -> list[dict[str, Any]]:
        """The target rows of the run(s) whose id starts with ``run_id``."""
        if not self.exists(connection):
            return []
        self._bounded(connection)
        rows = connection.execute(
            text(f"""SELECT service, tenant, schema_name, from_revisions, to_revisions,
                        seconds, outcome, error, attempts
                    FROM {quote_ident(self.schema)}.run_targets
                    WHERE run_id::text LIKE :prefix ORDER BY finished_at"""),
            {"prefix": run_id.replace("\\", "").replace("%", "").replace("_", "") + "%"},
        ).mappings().all()
        connection.rollback()
        return [dict(r) for r in rows]

    def recent_seconds(self, connection: Any, services: Sequence[str], limit: int = 100
                       ) -> dict[str, list[float]]:
        """Per service: the seconds of its ``limit`` most recently migrated targets (one
        query), for ``fleet plan``'s estimate. Failed targets and downgrades are left out."""
        if not services or not self.exists(connection):
            return {}
        self._bounded(connection)
        rows = connection.execute(
            text(f"""SELECT service, seconds FROM (
                        SELECT service, seconds, row_number() OVER (
                            PARTITION BY service ORDER BY finished_at DESC) AS n
                        FROM {quote_ident(self.schema)}.run_targets
                        WHERE outcome = 'migrated'
                          AND service = ANY(CAST(:services AS text[]))) AS recent
                    WHERE n <= :limit"""),
            {"services": list(services), "limit": limit},
        ).all()
        connection.rollback()
        found: dict[str, list[float]] = {}
        for service, seconds in rows:
            found.setdefault(service, []).append(float(seconds))
        return found

    def applied_pairs(self, connection: Any, service: str) -> list[tuple[str, str]] | None:
        """Each (revision, checksum) recorded for ``service``, one index probe per pair
        (a loose index scan, which PostgreSQL does not plan by itself): a few hundred rows
        read however many schemas there are. None without a usable index (a ledger an
        older fleet made, before its next run adds it): the caller groups every row."""
        if not self._index_usable(connection):
            connection.rollback()
            return None
        table = f"{quote_ident(self.schema)}.applied_revisions"
        rows = connection.execute(  # in _index_usable's transaction: bounded by its timeout
            text(f"""WITH RECURSIVE pairs (revision, checksum) AS (
                        (SELECT revision, checksum FROM {table} WHERE service = :service
                         ORDER BY revision, checksum LIMIT 1)
                        UNION ALL
                        SELECT later.revision, later.checksum FROM pairs, LATERAL (
                            SELECT revision, checksum FROM {table}
                            WHERE service = :service
                              AND (revision, checksum) > (pairs.revision, pairs.checksum)
                            ORDER BY revision, checksum LIMIT 1) AS later)
                    SELECT revision, checksum FROM pairs"""),
            {"service": service},
        ).all()
        connection.rollback()
        return [(revision, checksum) for revision, checksum in rows]

    def applied_checksums(self, connection: Any, services: Sequence[str],
                          pairs: Sequence[tuple[str, str]] | None = None
                          ) -> list[AppliedChecksum]:
        """Per (service, revision, checksum) recorded: how many schemas and one example.

        One grouped query; ``fleet check`` and ``fleet migrate`` compare it with the files.
        ``pairs``: only these (revision, checksum) of the one service given.
        """
        if not services or not self.exists(connection):
            return []
        self._bounded(connection)
        only = ("AND (revision, checksum) IN (SELECT * FROM unnest("
                "CAST(:revisions AS text[]), CAST(:checksums AS text[])))"
                if pairs is not None else "")
        rows = connection.execute(
            text(f"""SELECT service, revision, checksum, count(*), min(schema_name),
                        max(applied_at)
                    FROM {quote_ident(self.schema)}.applied_revisions
                    WHERE service = ANY(CAST(:services AS text[])) {only}
                    GROUP BY service, revision, checksum
                    ORDER BY service, revision, checksum"""),
            {"services": list(services), "revisions": [r for r, _ in pairs or ()],
             "checksums": [c for _, c in pairs or ()]},
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
