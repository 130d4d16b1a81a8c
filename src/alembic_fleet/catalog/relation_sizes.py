"""The size of relations in many schemas of one database, in one catalog query.

``fleet plan`` shows, for each table a pending statement locks, its largest copy among the
schemas of the targets that will run the statement: rows and bytes as the catalog knows
them, never counted (``count(*)`` on every tenant's copy would be the full scans the plan
warns about).

``pg_total_relation_size`` opens the relation, its indexes and its TOAST table in ACCESS
SHARE mode: behind a session that holds one of them in ACCESS EXCLUSIVE mode (an
application's migration, a ``LOCK TABLE``), or that waits for that mode (a new lock request
queues behind a waiting one), it would wait until that session commits. A plan is a review
tool and must answer promptly while the platform is busy, so the query first reads
``pg_locks`` and leaves the size of every such relation unknown (``bytes`` None; its
``reltuples`` is still read: ``pg_class`` rows need no lock on the relation). A lock taken
between that look and the size call is bounded by ``lock_timeout``: the query is then run
again, and the new lock is seen.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

_SIZES = text("""
WITH held AS (
  SELECT coalesce(array_agg(DISTINCT l.relation), '{}') AS oids
  FROM pg_catalog.pg_locks l
  WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
    AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
    AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
)
SELECT n.nspname, c.relname, c.reltuples,
  CASE WHEN c.oid = ANY(h.oids) OR c.reltoastrelid = ANY(h.oids)
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid IN (c.oid, c.reltoastrelid) AND i.indexrelid = ANY(h.oids))
       THEN NULL
       ELSE pg_catalog.pg_total_relation_size(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN held h
WHERE n.nspname = ANY(:schemas) AND c.relname = ANY(:names)
  AND c.relkind IN ('r', 'p', 'm', 'i', 'I', 'S', 'v', 'f')
""")
"""Tables (plain and partitioned), materialized views, indexes, sequences, views and foreign
tables: whatever a statement can lock by name. A partitioned table's own size is 0 (its
partitions hold the rows). ``pg_locks`` is read once (``pg_lock_status`` is volatile: the
CTE is not inlined per row); ``CASE`` evaluates the size only for a relation none of whose
parts another session holds or awaits in ACCESS EXCLUSIVE mode, the only mode that
conflicts with ACCESS SHARE. Granted or not: a request queues behind a waiting one."""

LOCK_NOT_AVAILABLE = "55P03"
ATTEMPTS = 3
"""Runs of the query when a lock taken after its look at ``pg_locks`` times it out."""


@dataclass(frozen=True)
class RelationSize:
    rows: int | None
    """``reltuples`` (an estimate kept by VACUUM, ANALYZE and CREATE INDEX); None when the
    relation was never analysed (-1 since PostgreSQL 14; 0 with no pages before)."""
    bytes: int | None
    """``pg_total_relation_size``; None: another session holds or awaits the relation (or
    one of its indexes, its TOAST table) in ACCESS EXCLUSIVE mode, so it was not read."""

    @property
    def locked(self) -> bool:
        return self.bytes is None


def relation_sizes(connection: Connection, schemas: Collection[str], names: Collection[str],
                   *, lock_timeout: float = 5.0) -> dict[tuple[str, str], RelationSize]:
    """(schema, name) -> size, for every relation called one of ``names`` in one of
    ``schemas`` (one query; what does not exist is absent). ``lock_timeout`` (seconds; 0 or
    less: 5) bounds the wait for a lock taken after the query looked at ``pg_locks``."""
    if not schemas or not names:
        return {}
    timeout = f"{max(1, round((lock_timeout if lock_timeout > 0 else 5.0) * 1000))}ms"
    params = {"schemas": sorted(schemas), "names": sorted(names)}
    for attempt in range(ATTEMPTS):
        try:
            connection.execute(text("SELECT set_config('lock_timeout', :v, true)"),
                               {"v": timeout})
            rows = connection.execute(_SIZES, params).all()
            connection.rollback()
            break
        except DBAPIError as exc:
            connection.rollback()
            if (getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE
                    or attempt == ATTEMPTS - 1):
                raise
    return {(schema, name): RelationSize(None if tuples < 0 else round(tuples),
                                         None if size is None else int(size))
            for schema, name, tuples, size in rows}
