"""The size of relations in many schemas of one database, in one catalog query.

``fleet plan`` shows, for each table a pending statement locks, its largest copy among the
schemas of the targets that will run the statement: rows and bytes as the catalog knows
them, never counted (``count(*)`` on every tenant's copy would be the full scans the plan
warns about).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, text

_SIZES = text("""
SELECT n.nspname, c.relname, c.reltuples, pg_catalog.pg_total_relation_size(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(:schemas) AND c.relname = ANY(:names)
  AND c.relkind IN ('r', 'p', 'm', 'i', 'I', 'S', 'v', 'f')
""")
"""Tables (plain and partitioned), materialized views, indexes, sequences, views and foreign
tables: whatever a statement can lock by name. A partitioned table's own size is 0 (its
partitions hold the rows)."""


@dataclass(frozen=True)
class RelationSize:
    rows: int | None
    """``reltuples`` (an estimate kept by VACUUM, ANALYZE and CREATE INDEX); None when the
    relation was never analysed (-1 since PostgreSQL 14; 0 with no pages before)."""
    bytes: int


def relation_sizes(connection: Connection, schemas: Collection[str], names: Collection[str]
                   ) -> dict[tuple[str, str], RelationSize]:
    """(schema, name) -> size, for every relation called one of ``names`` in one of
    ``schemas`` (one query; what does not exist is absent)."""
    if not schemas or not names:
        return {}
    rows = connection.execute(_SIZES, {"schemas": sorted(schemas), "names": sorted(names)})
    return {(schema, name): RelationSize(None if tuples < 0 else round(tuples), int(size))
            for schema, name, tuples, size in rows}
