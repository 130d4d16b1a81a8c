"""Read-only catalog reads about the shared schemas of a ``search_path``.

A service may search shared schemas after its own (``search_path = ["extensions"]``): fleet
never creates anything there, but warns when one is missing (PostgreSQL skips a missing
schema silently, so an extension's type is then just "does not exist") or holds a relation
a revision names unqualified (see :mod:`alembic_fleet.shared_schemas`).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, text

_RELATIONS = text("""
SELECT n.nspname, c.relname
FROM pg_catalog.pg_namespace n
LEFT JOIN pg_catalog.pg_class c
       ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
WHERE n.nspname = ANY(:names)
""")
"""Tables (plain and partitioned), views, materialized views and foreign tables: what an
unqualified name in ``ALTER TABLE``, ``DROP TABLE``, ``INSERT`` or ``SELECT`` can resolve to."""


def shared_relations(connection: Connection, schemas: Collection[str]
                     ) -> dict[str, frozenset[str]]:
    """For each of ``schemas`` that exists, the names of its relations (one query); a
    schema that does not exist is absent from the result."""
    if not schemas:
        return {}
    found: dict[str, set[str]] = {}
    for schema, relation in connection.execute(_RELATIONS, {"names": sorted(schemas)}):
        names = found.setdefault(schema, set())
        if relation is not None:
            names.add(relation)
    return {schema: frozenset(names) for schema, names in found.items()}


def existing_schemas(connection: Connection, schemas: Collection[str]) -> frozenset[str]:
    """Which of ``schemas`` exist (one query)."""
    if not schemas:
        return frozenset()
    rows = connection.execute(text("SELECT nspname FROM pg_catalog.pg_namespace "
                                   "WHERE nspname = ANY(:names)"), {"names": sorted(schemas)})
    return frozenset(row[0] for row in rows)
