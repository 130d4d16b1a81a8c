"""Read the current revisions of many schemas in a few queries per database.

A loop of one query per schema costs a round trip each, and ``information_schema`` is slow
with thousands of schemas; so one ``pg_catalog`` query finds every version table by name,
Python keeps those of the wanted schemas and of every schema a service's template matches
(which is how schemas of tenants no longer configured, *orphans*, are found), and
``UNION ALL`` queries read them.

The reads go in batches of :data:`BATCH` tables: PostgreSQL plans a ``UNION ALL`` of n
tables in time that grows with n squared (measured on PostgreSQL 15: 3,000 tables in one
query 2.5 s, in batches of 100 0.15 s), so one giant query is slower than thirty small ones.
Each batch ends its transaction: reading a table takes a lock on it until the transaction
ends, and 15,000 of them would exhaust the server's lock table (``max_locks_per_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alembic_fleet import drivers
from alembic_fleet.catalog import version_mirror
from alembic_fleet.model.identifiers import quote_ident, split_schema
from alembic_fleet.redact import first_line

BATCH = 100
"""Version tables read per query."""

# Every version table of the database is found by name (an index lookup): filtering the
# schemas in SQL (a 3,000-name array, LIKE patterns) made the query ten times slower.

PARALLEL_BATCHES = 8
"""Above this many batches the reads are spread over a few more connections (threads)."""
MAX_EXTRA_CONNECTIONS = 3


def read_versions(
    connection: Any, wanted: Iterable[tuple[str, str]],
    templates: Sequence[tuple[str, str]] = (),
    connect: Callable[[], Any] | None = None,
    unreadable: dict[tuple[str, str], str] | None = None,
    mirror: str | None = None,
    lock_wait: float | None = None,
    mirrored: set[tuple[str, str]] | None = None,
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Current revisions per existing ``(schema, version_table)``.

    ``wanted`` names exact pairs; ``templates`` holds ``(schema_template, version_table)``
    pairs whose matching schemas are read too. A wanted pair absent from the result has no
    schema or no version table (state ``missing``); an empty tuple is a version table with no
    row (the base revision).

    With ``unreadable``, a table that cannot be read (a stray ``alembic_version`` of another
    shape, a permission denied) does not fail the whole read: the batch holding it is read
    again table by table, and each failing pair goes into ``unreadable`` with the server's
    reason (and not into the result). Without it, such an error is raised.

    With ``mirror`` (the ledger schema, ``version_mirror = true``), a table whose mirror
    row is certain to equal it is not opened: its versions come from the mirror (see
    :mod:`.version_mirror`); the others are read as without it. The pairs taken from the
    mirror are added to ``mirrored`` when given (a later upkeep need not look at them).

    With ``lock_wait`` (seconds), a table locked by another session (a migration holding
    it) is waited for that long at most, then it is unreadable, with that reason; the
    connections given are fleet's own (the setting is their session's).
    """
    wanted = set(wanted)
    if not wanted and not templates:
        return {}
    tables = sorted({t for _, t in wanted} | {t for _, t in templates})
    if lock_wait is not None:
        limit = _limit(lock_wait)
        limit(connection)
        if connect is not None:
            opened = connect

            def connect() -> Any:
                conn = opened()
                limit(conn)
                return conn
    rows = _find_tables(connection, tables, mirror)
    ours = [(schema, table, mirrored) for schema, table, mirrored in rows
            if (schema, table) in wanted or _matches(schema, table, templates)]
    result: dict[tuple[str, str], tuple[str, ...]] = {
        (schema, table): tuple(sorted(mirrored or ())) for schema, table, mirrored in ours}
    present = version_mirror.unmirrored(ours)
    if mirrored is not None:
        mirrored.update(set(result) - set(present))
    parts = [
        f"SELECT {index} AS i, version_num::text FROM {quote_ident(s)}.{quote_ident(t)}"
        for index, (s, t) in enumerate(present)
    ]
    queries = ["\nUNION ALL\n".join(parts[start:start + BATCH])
               for start in range(0, len(parts), BATCH)]
    failed: dict[int, str] = {}
    versions: dict[int, list[str]] = {}
    for index, version in _run_batches(connection, queries, connect,
                                       parts if unreadable is not None else None, failed):
        versions.setdefault(index, []).append(version)
    for index, revs in versions.items():
        result[present[index]] = tuple(sorted(revs))
    for index, reason in failed.items():
        result.pop(present[index], None)
        if unreadable is not None:
            unreadable[present[index]] = reason
    return result


def _limit(seconds: float) -> Callable[[Any], None]:
    def limit(conn: Any) -> None:
        conn.exec_driver_sql(f"SET lock_timeout = '{max(1, round(seconds * 1000))}ms'")
        conn.commit()
    return limit


def _find_tables(connection: Any, tables: list[str], mirror: str | None
                 ) -> list[tuple[str, str, Any]]:
    """The catalog rows of every table named in ``tables``, with the mirror's versions
    when it can be read (one that cannot, a permission say, is only a slower read)."""
    if mirror is not None:
        try:
            if version_mirror.exists(connection, mirror):
                rows = connection.execute(text(version_mirror.find_tables_sql(mirror)),
                                          {"tables": tables}).all()
                connection.rollback()  # every read ends its transaction
                return rows
        except DBAPIError:
            pass
        connection.rollback()
    rows = connection.execute(text(version_mirror.find_tables_sql(None)),
                              {"tables": tables}).all()
    connection.rollback()  # every read ends its transaction: callers start clean
    return rows


def _run_batches(connection: Any, queries: list[str], connect: Callable[[], Any] | None,
                 parts: list[str] | None = None, failed: dict[int, str] | None = None,
                 ) -> list[tuple[int, str]]:
    """Run the batch queries, each in its own transaction (releasing its table locks).

    With ``parts``, a batch that fails is read again one table at a time; the indices of
    the tables that still fail go into ``failed`` with the reason.
    """

    def run(conn: Any, mine: list[tuple[int, str]]) -> list[tuple[int, str]]:
        rows: list[tuple[int, str]] = []
        for number, query in mine:
            try:
                rows.extend(conn.exec_driver_sql(query).all())
            except DBAPIError:
                conn.rollback()
                if parts is None or failed is None:
                    raise
                rows.extend(_one_by_one(conn, parts[number * BATCH:(number + 1) * BATCH],
                                        number * BATCH, failed))
            conn.rollback()
        return rows

    numbered = list(enumerate(queries))
    extra = min(MAX_EXTRA_CONNECTIONS, len(queries) // PARALLEL_BATCHES) if connect else 0
    if extra <= 0:
        return run(connection, numbered)
    lanes = extra + 1
    connections = [connection]
    try:
        for _ in range(extra):
            connections.append(connect())
        with ThreadPoolExecutor(max_workers=lanes) as pool:
            futures = [pool.submit(run, conn, numbered[i::lanes])
                       for i, conn in enumerate(connections)]
            return [row for future in futures for row in future.result()]
    finally:
        for conn in connections[1:]:
            conn.close()


def _one_by_one(conn: Any, parts: list[str], first: int, failed: dict[int, str]
                ) -> list[tuple[int, str]]:
    """Read each table of a failed batch alone; record the ones that fail, and why."""
    rows: list[tuple[int, str]] = []
    for offset, part in enumerate(parts):
        try:
            rows.extend(conn.exec_driver_sql(part).all())
        except DBAPIError as exc:
            failed[first + offset] = (
                "locked by another session (a migration in progress?) for longer than "
                "lock_wait" if drivers.sqlstate(exc) == "55P03" else first_line(exc))
        conn.rollback()
    return rows


def _matches(schema: str, table: str, templates: Sequence[tuple[str, str]]) -> bool:
    """Whether ``(schema, table)`` belongs to one of the templates (exact, not just LIKE)."""
    return any(table == version_table and split_schema(template, schema) is not None
               for template, version_table in templates)


def read_one(connection: Any, schema: str, table: str, *, end: bool = True
             ) -> tuple[str, ...] | None:
    """One target's current revisions (None: no schema or version table).

    Used under a target's lock: a direct lookup, whose cost does not grow with the number
    of version tables in the database (the bulk catalog query's does). Leaves the
    connection outside any transaction, unless ``end`` is False (the caller reads more in
    the same transaction, then ends it).
    """
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    exists = connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"),
                                {"name": qualified}).scalar()
    rows = (connection.exec_driver_sql(f"SELECT version_num::text FROM {qualified}").all()
            if exists else None)
    if end:
        connection.rollback()
    return None if rows is None else tuple(sorted(r[0] for r in rows))


def read_in_transaction(connection: Any, schema: str, table: str) -> tuple[str, ...]:
    """One target's revisions inside the caller's open transaction (nothing is ended)."""
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    rows = connection.exec_driver_sql(f"SELECT version_num::text FROM {qualified}").all()
    return tuple(sorted(r[0] for r in rows))
