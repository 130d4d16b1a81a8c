"""A copy of every tenant's version rows in one table, kept by the database itself.

Reading where 30,000 schemas stand means opening 30,000 version tables, and a new
connection pays PostgreSQL's relation cache for each (4 to 5 s, whatever the query): a
``fleet status`` or a no-op ``fleet migrate`` of 10,000 tenants x 3 services cost 8 to 9
times the same on one tenant. With ``version_mirror = true``, each version table fleet
migrates gets a statement-level trigger that, on any ``INSERT``, ``UPDATE``, ``DELETE`` or
``TRUNCATE`` (from fleet, plain ``alembic``, or by hand), writes the table's whole content
into ``<ledger schema>.version_mirror``, in the same transaction. The reads then take one
catalog query and one table instead of 30,000 tables.

A mirrored row is used only while it is certain to equal its table; otherwise that table is
read as before. The trigger must be the one fleet made: fleet's function, on that table,
``AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE FOR EACH STATEMENT`` with no condition and
no column list (``tgtype`` 60), enabled ``ALWAYS`` (it fires under
``session_replication_role = replica`` too), and its ``pg_trigger`` row the very version
(``xmin`` and ``ctid``) that was in place when it last wrote the mirror. Disabling the
trigger, writing, and enabling it again changes that row, so the mirror is not trusted
until the trigger writes it again; a table dropped and made again (a restore) has another
oid and no mirror row; a dropped schema has no table to match.

A statement on a parent table (the version table attached to it by ``INHERIT`` or ``ATTACH
PARTITION``, detached again afterwards) fires no statement trigger of the table whose rows
it changes, and leaves no trace in its catalog rows. A second trigger, ``FOR EACH ROW``,
fires for those rows wherever the statement was aimed: it deletes the mirror row, which the
statement trigger writes again when the statement was on the table itself. The mark also
holds the ``version_num`` column's ``pg_attribute`` row (a column dropped and added again,
or two renamed, changes what is read without any write) and the mirror row's own ``xmin``
(a row put back by a restore of the ledger, or edited by hand, is another version than the
one the trigger wrote).

The trigger never fails a user's statement: a table its function cannot read (a
permission) deletes its mirror row instead, and that table is read directly.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text

from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.redact import first_line

TRIGGER = "fleet_version_mirror"
ROW_TRIGGER = "fleet_version_mirror_rows"
TABLE = "version_mirror"
FUNCTION = "mirror_versions"
STATEMENT_TRIGGER_TYPE = 60
"""``pg_trigger.tgtype`` of AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE FOR EACH STATEMENT
(the bits 4, 8, 16 and 32; no ROW, no BEFORE)."""
ROW_TRIGGER_TYPE = 29
"""``pg_trigger.tgtype`` of AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW (1, 4, 8, 16)."""
INSTALL_BATCH = 100
"""Version tables given a trigger per transaction (each takes a lock until it ends)."""
INSTALL_SESSION = 500
"""Version tables given a trigger per server session: a backend keeps a cache entry for
every table it opened, and each one makes every later catalog change dearer (one session
gave 30,000 tables 5 a second, 555 a second for its first 400; see docs/performance.md)."""


def function_name(schema: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(FUNCTION)}"


MARK = ("{t}.xmin::text || ':' || {t}.ctid::text || '/' || {c}.relfilenode::text || '/' "
        "|| {p}.xmin::text || ':' || {p}.ctid::text || '/' "
        "|| {r}.xmin::text || ':' || {r}.ctid::text || '/' "
        "|| {a}.xmin::text || ':' || {a}.ctid::text")
"""What a mirror row was written under: the version of the trigger's ``pg_trigger`` row,
the table's file (a rewrite, ``ALTER ... TYPE ... USING``, changes its rows without any
trigger), the version of the function's ``pg_proc`` row, of the row trigger's
``pg_trigger`` row and of the ``version_num`` column's ``pg_attribute`` row. The trigger
computes it when it writes and stores it followed by ``/`` and the mirror row's own
``xmin``; a read trusts the row only if all of it still holds."""

MARKED_FROM = """pg_catalog.pg_trigger AS {t}
    JOIN pg_catalog.pg_class AS {c} ON {c}.oid = {t}.tgrelid
    JOIN pg_catalog.pg_proc AS {p} ON {p}.oid = {t}.tgfoid
    JOIN pg_catalog.pg_trigger AS {r}
        ON {r}.tgrelid = {c}.oid AND {r}.tgname = '""" + ROW_TRIGGER + """'
    JOIN pg_catalog.pg_attribute AS {a}
        ON {a}.attrelid = {c}.oid AND {a}.attname = 'version_num' AND NOT {a}.attisdropped"""
"""The catalog rows :data:`MARK` reads, from the statement trigger's row ``{t}``."""

ALIASES = {"t": "t", "c": "c", "p": "p", "r": "r", "a": "a"}
"""The names :data:`MARK` gives the rows, in the trigger and in :func:`find_tables_sql`."""

SEARCH_PATH = "search_path=pg_catalog, pg_temp"


def _body(schema: str) -> str:
    """The trigger function's body. It first locks the table's mirror row, and only then
    reads the table, in a statement of its own: a writer that waited for another's commit
    then sees what that one wrote (READ COMMITTED takes a snapshot per statement; under
    REPEATABLE READ the lock of a row changed meanwhile fails the writer instead)."""
    table = f"{quote_ident(schema)}.{quote_ident(TABLE)}"
    return f"""
DECLARE
    found text[];
    mark text;
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        DELETE FROM {table} WHERE relid = TG_RELID;
        RETURN NULL;
    END IF;
    INSERT INTO {table} (relid, trigger_row, versions) VALUES (TG_RELID, '', '{{}}')
    ON CONFLICT (relid) DO UPDATE SET trigger_row = '';
    SELECT {MARK.format(**ALIASES)} INTO mark
    FROM {MARKED_FROM.format(**ALIASES)}
    WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    BEGIN
        EXECUTE format('SELECT coalesce(array_agg(version_num::text ORDER BY '
                       'version_num::text), ''{{}}'') FROM %I.%I',
                       TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO found;
    EXCEPTION WHEN OTHERS THEN
        DELETE FROM {table} WHERE relid = TG_RELID;
        RETURN NULL;
    END;
    -- The row is this (sub)transaction's own version since the INSERT above: its xmin is
    -- the one the UPDATE's row keeps.
    UPDATE {table} SET trigger_row = coalesce(mark, '') || '/' || xmin::text,
                       versions = found
    WHERE relid = TG_RELID;
    RETURN NULL;
END
"""


def _fingerprint(schema: str) -> str:
    return hashlib.md5(_body(schema).encode(), usedforsecurity=False).hexdigest()


def ddl(schema: str) -> list[str]:
    """The mirror table and the trigger function, in the ledger schema (idempotent)."""
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.{quote_ident(TABLE)} (
            relid oid PRIMARY KEY,
            trigger_row text NOT NULL,
            versions text[] NOT NULL)""",
        f"CREATE OR REPLACE FUNCTION {function_name(schema)}() RETURNS trigger "
        f"LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
        f"AS $fleet${_body(schema)}$fleet$",
    ]


def _function_is_ours(schema: str) -> str:
    """SQL: the oid of the mirror function if it is exactly the one :func:`ddl` makes
    (its text, security definer, its search path), else NULL."""
    return (f"(SELECT p.oid FROM pg_catalog.pg_proc AS p "
            f"WHERE p.oid = to_regproc({_literal(function_name(schema))}) "
            f"AND md5(p.prosrc) = '{_fingerprint(schema)}' AND p.prosecdef "
            f"AND p.proconfig = ARRAY[{_literal(SEARCH_PATH)}])")


def make(connection: Any, schema: str) -> None:
    """Run :func:`ddl` in the caller's transaction (on the driver's cursor: no parameters,
    so the ``%`` of ``format()`` is not taken for a placeholder)."""
    for statement in ddl(schema):
        _execute(connection, statement)


def _execute(connection: Any, sql: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def find_tables_sql(schema: str | None, *, pairs: bool = False) -> str:
    """Every version table of the database by name, with its mirrored versions when the
    mirror is certain to hold them (else NULL); ``:tables`` is the names' array. With
    ``pairs``, only the exact ``(:schemas[i], :tables[i])`` pairs (the upkeep after a run
    looks at its own targets, not at every version table of the database). Without a
    mirror schema (or before the mirror exists) the third column is always NULL.

    The pairs are looked up schema first (``pg_namespace`` by name, then ``pg_class`` by
    name and namespace, both indexed, as ``name``): matching ``(nspname, relname)`` against
    them after the join looked up every table of the name for each pair, 30,000 x 30,000
    at 10,000 tenants (minutes)."""
    base = """
        SELECT n.nspname, c.relname, {versions}
        FROM {source}
        {join}
        WHERE c.relkind IN ('r', 'p'){where}
    """
    if pairs:
        source = """unnest(CAST(:schemas AS name[]), CAST(:tables AS name[]))
            AS wanted (nspname, relname)
        JOIN pg_catalog.pg_namespace AS n ON n.nspname = wanted.nspname
        JOIN pg_catalog.pg_class AS c
            ON c.relnamespace = n.oid AND c.relname = wanted.relname"""
        where = ""
    else:
        source = """pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"""
        where = " AND c.relname = ANY(CAST(:tables AS text[]))"
    if schema is None:
        return base.format(versions="CAST(NULL AS text[])", source=source, join="",
                           where=where)
    mark = MARK.format(**ALIASES)
    return base.format(versions="m.versions", source=source, where=where, join=f"""
        LEFT JOIN pg_catalog.pg_trigger AS t
            ON t.tgrelid = c.oid AND t.tgname = '{TRIGGER}'
        LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
        LEFT JOIN pg_catalog.pg_trigger AS r
            ON r.tgrelid = c.oid AND r.tgname = '{ROW_TRIGGER}'
        LEFT JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = c.oid AND a.attname = 'version_num' AND NOT a.attisdropped
        LEFT JOIN {quote_ident(schema)}.{quote_ident(TABLE)} AS m
            ON m.relid = c.oid AND c.relkind = 'r' AND NOT c.relhassubclass
            AND c.relpersistence = 'p'
            AND m.trigger_row = {mark} || '/' || m.xmin::text
            AND t.tgenabled = 'A' AND t.tgtype = {STATEMENT_TRIGGER_TYPE}
            AND t.tgqual IS NULL AND t.tgnargs = 0
            AND cardinality(CAST(t.tgattr AS int2[])) = 0
            AND r.tgenabled = 'A' AND r.tgtype = {ROW_TRIGGER_TYPE}
            AND r.tgqual IS NULL AND r.tgnargs = 0 AND r.tgfoid = p.oid
            AND cardinality(CAST(r.tgattr AS int2[])) = 0
            AND p.oid = {_function_is_ours(schema)}""")


def exists(connection: Any, schema: str) -> bool:
    """Whether the mirror table is there (made by the first ``fleet migrate`` with the
    mirror on); reading it before would fail."""
    name = f"{quote_ident(schema)}.{quote_ident(TABLE)}"
    return bool(connection.exec_driver_sql(
        "SELECT to_regclass(%(n)s) IS NOT NULL", {"n": name}).scalar())


def intact(connection: Any, schema: str) -> bool:
    """Whether the mirror table and the very function :func:`ddl` makes are there (a
    function replaced by hand is made again; the rows it wrote are not trusted, since
    their mark names the function's old version)."""
    return exists(connection, schema) and bool(connection.execute(
        text(f"SELECT {_function_is_ours(schema)} IS NOT NULL")).scalar())


def install(connection: Any, schema: str, tables: Sequence[tuple[str, str]],
            lock_timeout: str) -> list[str]:
    """Give each ``(schema, version_table)`` fleet's trigger and fill its mirror row (a
    write that changes nothing fires it), ``INSTALL_BATCH`` tables per transaction. A
    batch that fails (a lock held past ``lock_timeout``, a table not ours to alter) is
    rolled back and left to be read directly; returns the failures' reasons."""
    failures: list[str] = []
    function = function_name(schema)
    replaceable = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) >= 140000
    connection.rollback()
    for start in range(0, len(tables), INSTALL_BATCH):
        if start and start % INSTALL_SESSION == 0:
            connection.invalidate()  # the next statement opens a new session
        # A trigger's DDL locks its table against writes (CREATE OR REPLACE TRIGGER, from
        # PostgreSQL 14: SHARE ROW EXCLUSIVE; DROP TRIGGER: ACCESS EXCLUSIVE): never
        # longer than lock_timeout, so the application never queues behind it for long.
        statements = [f"SET LOCAL lock_timeout = {_literal(lock_timeout)}"]
        for tenant_schema, table in tables[start:start + INSTALL_BATCH]:
            qualified = f"{quote_ident(tenant_schema)}.{quote_ident(table)}"
            for trigger, events, each in ((ROW_TRIGGER, "", "ROW"),
                                          (TRIGGER, " OR TRUNCATE", "STATEMENT")):
                statements += [
                    *(() if replaceable
                      else (f"DROP TRIGGER IF EXISTS {trigger} ON {qualified}",)),
                    f"CREATE {'OR REPLACE ' if replaceable else ''}TRIGGER {trigger} AFTER "
                    f"INSERT OR UPDATE OR DELETE{events} ON {qualified} FOR EACH {each} "
                    f"EXECUTE PROCEDURE {function}()",
                    f"ALTER TABLE {qualified} ENABLE ALWAYS TRIGGER {trigger}"]
            statements.append(f"DELETE FROM {qualified} WHERE false")
        try:
            with connection.begin():
                _execute(connection, ";\n".join(statements))
        except Exception as exc:
            failures.append(first_line(exc))
    return failures


def forget_dropped(connection: Any, schema: str, lock_timeout: str) -> None:
    """Delete the mirror rows of tables that no longer exist (a dropped schema, a removed
    tenant: no trigger fires on a DROP). They are never trusted (a table made later under
    the same oid has other catalog rows than the mark names), only kept for nothing; so
    this is housekeeping, and a failure of it (a lock held) is left for the next time."""
    with contextlib.suppress(Exception), connection.begin():
        _execute(connection, f"SET LOCAL lock_timeout = {_literal(lock_timeout)};\n"
                 f"DELETE FROM {quote_ident(schema)}.{quote_ident(TABLE)} AS m "
                 "WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c "
                 "WHERE c.oid = m.relid)")


def unmirrored(rows: Iterable[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    """The ``(schema, table)`` of catalog rows (:func:`find_tables_sql`) whose mirror is
    missing or not to be trusted."""
    return sorted((s, t) for s, t, versions in rows if versions is None)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
