"""Read the current revisions of many schemas in two queries per database.

A loop of one query per schema costs a round trip each, and ``information_schema`` is slow
with thousands of schemas; so one ``pg_catalog`` query finds which of the wanted version
tables exist, and one ``UNION ALL`` query reads them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text

from alembic_fleet.model.identifiers import quote_ident

_FIND_TABLES = text(
    """
    SELECT n.nspname, c.relname
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND c.relname = ANY(CAST(:tables AS text[]))
      AND n.nspname = ANY(CAST(:schemas AS text[]))
    """
)


def read_versions(
    connection: Any, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Current revisions per existing ``(schema, version_table)`` among ``wanted``.

    A pair absent from the result has no schema or no version table (state ``missing``);
    an empty tuple is a version table with no row (the base revision).
    """
    wanted = set(wanted)
    if not wanted:
        return {}
    rows = connection.execute(
        _FIND_TABLES,
        {"tables": sorted({t for _, t in wanted}), "schemas": sorted({s for s, _ in wanted})},
    ).all()
    present = sorted(pair for pair in ((r[0], r[1]) for r in rows) if pair in wanted)
    result: dict[tuple[str, str], tuple[str, ...]] = {pair: () for pair in present}
    if not present:
        return result
    parts = [
        f"SELECT {index} AS i, version_num::text FROM {quote_ident(s)}.{quote_ident(t)}"
        for index, (s, t) in enumerate(present)
    ]
    versions: dict[int, list[str]] = {}
    for index, version in connection.exec_driver_sql("\nUNION ALL\n".join(parts)).all():
        versions.setdefault(index, []).append(version)
    for index, revs in versions.items():
        result[present[index]] = tuple(sorted(revs))
    return result
