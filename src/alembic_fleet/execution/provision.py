"""New tenants copied from a reference schema (``provision = "reference"``).

Migrating a new tenant runs its service's whole history: hundreds of statements that build
tables and then alter them, revision after revision. Every tenant ends up the same, so the
history is run once, on a *reference schema* per service and history, and each new tenant
is made from it.

**The reference.** ``<ledger_schema>_ref_<8 hex digits of the history's key>``, fleet's own
schema (the schema namespace never counts it as a target or an orphan). The key is a digest
of the service, its heads, every revision file and the env.py, so that a new revision, or a
revision edited since, gives a new reference; the old one is dropped. It is built by the
ordinary migration path (:class:`~alembic_fleet.execution.target_migration.TargetMigrator`),
under an advisory lock so that concurrent runners build it once, and then built a second
time under another name (the *witness*): the two must be identical up to their names, or the
history does something different each time it runs (see below). Its DDL is captured once,
with ``pg_dump --section=pre-data`` and ``--section=post-data`` (the header's settings made
local to the transaction), and recorded in the ledger (``reference_schemas``) with the
tables that hold rows, the sequences' values, its catalog fingerprint and a digest of each
table's rows: a later ``fleet tenants add`` needs no ``pg_dump`` and no rendering.

**A new tenant** (its schema missing, the head wanted, the env.py using the helper), in ONE
transaction under the target's lock, as a migration would be: the pre-data DDL with the
reference's name replaced by the tenant's schema (``CREATE SCHEMA`` included); the rows the
migrations seeded, copied server-side (``INSERT ... OVERRIDING SYSTEM VALUE SELECT`` from
the reference, generated columns left to be computed); the sequences set to the reference's
values; the post-data DDL (indexes, constraints, foreign keys, triggers: after the rows, as
``pg_restore`` does); the version row; the ledger rows a migration writes (the target's row,
and the checksum of every revision). Before the commit the tenant's catalog fingerprint and
row digests are compared with the reference's; any difference, or any error, rolls the
whole transaction back and the tenant is migrated normally instead, with the reason in the
result's note.

**When a copy is not what a migration would give** (the history is refused, recorded with
the reason, and every new tenant of that history is migrated): a revision whose files show
that it may depend on the tenant or on state outside its schema, or whose SQL renders
differently each time (:mod:`alembic_fleet.alembic_bridge.independence`); and what only
running it shows: the two builds differ (a value the database computes when the revision
runs: ``random()``, ``gen_random_uuid()``, a time that is not the build transaction's; a name
derived from the schema), a row of the reference holds its schema's name, an extension was
installed into the reference, or row-level security hides some of its rows from the user
that copies. ``now()`` as each build stored it is the one value written anew: the copy
writes its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from alembic_fleet import __version__, drivers
from alembic_fleet.alembic_bridge.failures import ReplayFailed
from alembic_fleet.alembic_bridge.independence import tenant_dependence
from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.catalog.fingerprints import fingerprints
from alembic_fleet.databases import Databases
from alembic_fleet.exceptions import FleetError
from alembic_fleet.execution.locking import lock_key, try_lock, unlock
from alembic_fleet.execution.retry import transient_reason
from alembic_fleet.ledger.checksums import checksum
from alembic_fleet.ledger.target_ledger import RunLedger, TargetLedger
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.namespace import (
    is_reference_schema,
    reference_prefix,
    reference_schema,
)
from alembic_fleet.model.status import Outcome, Step, TargetState, TargetStatus
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.pg_tools import find_pg_dump, pg_dump_command
from alembic_fleet.redact import first_line, scrub

if TYPE_CHECKING:
    from alembic_fleet.execution.lock_budget import LockBudget
    from alembic_fleet.execution.target_migration import Policy

NOTE = "provision = reference not used: "
"""How the note of a target migrated instead of copied begins."""

VIA = "reference"


# --- the captured DDL --------------------------------------------------------------------

_DROPPED_SETTINGS = frozenset({
    "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
    "transaction_timeout", "client_encoding", "row_security"})
"""pg_dump's header settings that are not the schema's business: fleet's own timeouts stay
in force, the driver owns the encoding."""
_SET = re.compile(r"^SET (\w+) = (.*);$")
_OBJECT_SETTING = re.compile(r"^SET default_(?:tablespace|table_access_method) = .*;$")


def local_ddl(dump: str) -> str:
    """pg_dump's output as statements for one transaction on a connection fleet owns.

    Its ``SET`` lines become ``SET LOCAL`` (``check_function_bodies = false`` matters: a
    function's body may name a table created after it), the search path is emptied for
    the transaction only (pg_dump qualifies every name), the timeouts and the encoding are
    left as fleet set them, and psql's ``\\restrict`` lines (random per dump) and the
    version comments are dropped. Only the header's lines and pg_dump's per-object
    settings are touched, never a line inside a function's body.
    """
    out = []
    header = True
    for line in dump.splitlines():
        if header and (line.startswith("CREATE ") or line.startswith("-- Name: ")):
            header = False
        if line.startswith(("\\restrict ", "\\unrestrict ", "-- Dumped ")):
            continue
        if header or _OBJECT_SETTING.match(line):
            if line == "SELECT pg_catalog.set_config('search_path', '', false);":
                out.append("SELECT pg_catalog.set_config('search_path', '', true);")
                continue
            match = _SET.match(line)
            if match:
                if match.group(1) not in _DROPPED_SETTINGS:
                    out.append(f"SET LOCAL {match.group(1)} = {match.group(2)};")
                continue
        out.append(line)
    return "\n".join(out).strip() + "\n"


def other_owners(ddl: str, builder: str) -> str:
    """``ddl`` without the ``ALTER ... OWNER TO builder`` lines: what the user that built
    the reference owns, the copying user owns (as a migration run by it would), but an
    object a revision gave to another role (``ALTER TABLE ... OWNER TO app``, or made under
    ``SET ROLE``) is given to that role in the copy too."""
    owner = re.compile(rf"^ALTER [A-Z ]+ .* OWNER TO "
                       rf"(?:{re.escape(builder)}|{re.escape(quote_ident(builder))});$")
    return "\n".join(line for line in ddl.splitlines() if not owner.match(line)) + "\n"


_TOKENS = re.compile(r"""(\$\w*\$).*?\1|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*""", re.DOTALL)
"""What in pg_dump's output is not SQL read as names: a dollar-quoted string (a function's
body), a string literal, a quoted identifier, a comment."""


def _unwritable(schema: str, written: str, reference: Reference) -> str | None:
    """Why the reference's name cannot be replaced by ``written`` (``schema`` as the
    server's ``quote_ident`` writes it) as text, or None.

    pg_dump writes the reference's name as an identifier (``name.users``), inside string
    literals (``nextval('name.seq'::regclass)``), in its ``-- ...; Schema: name`` comments,
    and wherever a revision wrote the schema's name as text (a comment, a function's body):
    a quote would end the literal, a line break the comment (either would run the rest of
    the name as SQL). And where a revision wrote the name as text, a migration wrote it as
    ``current_schema()`` gives it, not quoted as an identifier: a name that needs quoting
    cannot be written there (and comments and bodies are not in the catalog's fingerprint,
    so the copy's check would not see it)."""
    if any(c in schema for c in "'\n\r"):
        return ("its schema name holds a quote or a line break, which the reference's DDL "
                "cannot take as text in its string literals and comments")
    for ddl in (reference.pre, reference.post):
        for token in _TOKENS.finditer(ddl):
            found = token.group(0)
            if reference.schema not in found or found.startswith(("--", '"')):
                continue
            qualified = (re.fullmatch(rf"'{re.escape(reference.schema)}\.[^']*'", found)
                         and ddl.startswith("::regclass", token.end()))
            if written != schema and not qualified:
                return ("the history writes its schema's name as text (in a comment, a "
                        f"string or a function's body: {_excerpt(found)}), where a migration "
                        f"writes {schema} unquoted: a copy would write {written}")
            if "$" in schema and found.startswith("$"):
                return ("its schema name holds a dollar sign, and a function's body of the "
                        "reference's DDL holds the reference's name")
    return None


def _excerpt(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


_ENTRY = re.compile(r"^--\n-- Name: ", re.MULTILINE)
"""Where pg_dump begins the comment above each object's DDL."""
_COMMENTS = re.compile(r"^(?:--[^\n]*)?\n", re.MULTILINE)


def _entries(ddl: str) -> list[str]:
    """pg_dump's output cut before each object's comment (the header's settings first)."""
    starts = [0, *(match.start() for match in _ENTRY.finditer(ddl)), len(ddl)]
    return [ddl[a:b] for a, b in itertools.pairwise(starts) if ddl[a:b].strip()]


_PLACEHOLDER = "\x00SCHEMA\x00"


def _normalised(ddl: str, schema: str) -> list[str]:
    return ddl.replace(schema, _PLACEHOLDER).splitlines()


def _first_difference(first: str, second: str, schemas: tuple[str, str]) -> str | None:
    """The first line that differs between two schemas' DDL, their names set aside."""
    a, b = _normalised(first, schemas[0]), _normalised(second, schemas[1])
    for left, right in zip(a, b, strict=False):
        if left != right:
            return left.replace(_PLACEHOLDER, schemas[0]).strip()
    if len(a) != len(b):
        longer = a if len(a) > len(b) else b
        return longer[min(len(a), len(b))].replace(_PLACEHOLDER, schemas[0]).strip()
    return None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- what a schema holds -----------------------------------------------------------------

_TABLES = text("""
    SELECT c.relname, c.relkind = 'r' AS only_this,
           coalesce(array_agg(quote_ident(a.attname) ORDER BY a.attnum)
                    FILTER (WHERE a.attname IS NOT NULL), '{}') AS columns,
           coalesce(array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod)
                              ORDER BY a.attnum) FILTER (WHERE a.attname IS NOT NULL), '{}')
               AS types
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attribute AS a
      ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND c.relname <> :version_table
    GROUP BY c.oid, c.relname, c.relkind
    ORDER BY c.relname
""")
"""Every table of a schema that rows can be inserted into (a partitioned table's rows are
copied through its root), with the columns a copy names (all but generated ones) and their
types (none: a table without columns still holds rows). Run with an empty search path, so
that the schema's own types show qualified (``fleet_ref_0a1b2c3d.mood``)."""

_TEXT_SETTINGS = ("SELECT pg_catalog.set_config('DateStyle', 'ISO, MDY', true), "
                  "pg_catalog.set_config('TimeZone', 'UTC', true), "
                  "pg_catalog.set_config('IntervalStyle', 'postgres', true), "
                  "pg_catalog.set_config('extra_float_digits', '1', true), "
                  "pg_catalog.set_config('bytea_output', 'hex', true), "
                  "pg_catalog.set_config('row_security', 'off', true)")
"""Values as text the same way in every session that compares them (digests of rows), and
every row read: with ``row_security`` off, a row-level security policy that would hide rows
from the reading user (a table that forces it on its owner) raises an error instead."""

_TIMES = re.compile(r"timestamp(?:\(\d\))? with(?:out)? time zone")
"""A timestamp column's type, as ``format_type`` writes it (with its precision, if any)."""

_SEQUENCES = text("""
    SELECT c.relname FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind = 'S' ORDER BY c.relname
""")

_EXTENSIONS = text("""
    SELECT e.extname FROM pg_catalog.pg_extension AS e
    JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
    WHERE n.nspname = :schema ORDER BY 1
""")

_OUTSIDE_DEPENDENTS = text("""
    WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :schema),
    inside (classid, objid) AS (
        SELECT 'pg_class'::regclass, c.oid FROM pg_catalog.pg_class c, ns
        WHERE c.relnamespace = ns.oid
      UNION ALL
        SELECT 'pg_type'::regclass, t.oid FROM pg_catalog.pg_type t, ns
        WHERE t.typnamespace = ns.oid
      UNION ALL
        SELECT 'pg_proc'::regclass, p.oid FROM pg_catalog.pg_proc p, ns
        WHERE p.pronamespace = ns.oid
      UNION ALL
        SELECT 'pg_extension'::regclass, e.oid FROM pg_catalog.pg_extension e, ns
        WHERE e.extnamespace = ns.oid
      UNION ALL
        SELECT 'pg_operator'::regclass, o.oid FROM pg_catalog.pg_operator o, ns
        WHERE o.oprnamespace = ns.oid
      UNION ALL
        SELECT 'pg_collation'::regclass, o.oid FROM pg_catalog.pg_collation o, ns
        WHERE o.collnamespace = ns.oid
      UNION ALL
        SELECT 'pg_opclass'::regclass, o.oid FROM pg_catalog.pg_opclass o, ns
        WHERE o.opcnamespace = ns.oid
      UNION ALL
        SELECT 'pg_opfamily'::regclass, o.oid FROM pg_catalog.pg_opfamily o, ns
        WHERE o.opfnamespace = ns.oid
      UNION ALL
        SELECT 'pg_ts_config'::regclass, o.oid FROM pg_catalog.pg_ts_config o, ns
        WHERE o.cfgnamespace = ns.oid
      UNION ALL
        SELECT 'pg_ts_dict'::regclass, o.oid FROM pg_catalog.pg_ts_dict o, ns
        WHERE o.dictnamespace = ns.oid
    ),
    dependents AS (
        SELECT d.classid, d.objid, d.objsubid,
               CASE d.classid
                   WHEN 'pg_attrdef'::regclass THEN (
                       SELECT c.relnamespace FROM pg_catalog.pg_attrdef a
                       JOIN pg_catalog.pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid)
                   WHEN 'pg_trigger'::regclass THEN (
                       SELECT c.relnamespace FROM pg_catalog.pg_trigger t
                       JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objid)
                   WHEN 'pg_rewrite'::regclass THEN (
                       SELECT c.relnamespace FROM pg_catalog.pg_rewrite r
                       JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
                   WHEN 'pg_amop'::regclass THEN (
                       SELECT f.opfnamespace FROM pg_catalog.pg_amop a
                       JOIN pg_catalog.pg_opfamily f ON f.oid = a.amopfamily
                       WHERE a.oid = d.objid)
                   WHEN 'pg_amproc'::regclass THEN (
                       SELECT f.opfnamespace FROM pg_catalog.pg_amproc a
                       JOIN pg_catalog.pg_opfamily f ON f.oid = a.amprocfamily
                       WHERE a.oid = d.objid)
                   WHEN 'pg_policy'::regclass THEN (
                       SELECT c.relnamespace FROM pg_catalog.pg_policy p
                       JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objid)
                   ELSE (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname =
                         (pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid)).schema)
               END AS namespace
        FROM pg_catalog.pg_depend AS d
        JOIN inside AS i ON d.refclassid = i.classid AND d.refobjid = i.objid
        WHERE d.deptype IN ('n', 'a')
          AND NOT EXISTS (  -- a member of an extension of the schema (a cast) goes with it
              SELECT FROM pg_catalog.pg_depend AS m
              JOIN inside AS x ON m.refclassid = x.classid AND m.refobjid = x.objid
              WHERE m.classid = d.classid AND m.objid = d.objid AND m.deptype = 'e')
    )
    SELECT DISTINCT (pg_catalog.pg_identify_object(classid, objid, objsubid)).identity
    FROM dependents, ns
    WHERE namespace IS DISTINCT FROM ns.oid
    LIMIT 3
""")
"""Objects outside a schema that depend on something in it (a column of another schema
typed with an extension's type the schema holds): dropping the schema with CASCADE would
drop them too, so such a schema is left in place."""


class Table(NamedTuple):
    """A table whose rows a copy takes from the reference."""

    name: str
    only: bool
    """Copy ``ONLY`` this table (not a partitioned table, whose partitions' rows come
    through it)."""
    columns: tuple[str, ...]
    """Quoted names of the columns a copy names (all but generated ones)."""
    types: tuple[str, ...]
    now: tuple[tuple[str, str], ...] = ()
    """(column, value): where the reference holds the time of the transaction that built
    it (``now()``), a copy holds the time of its own, as a migration would."""

    def selected(self, reference: str, name: str) -> str:
        """What a copy selects from ``reference`` for the columns, in schema ``name``: a
        value of the reference's own type (an enum, a domain, arrays of them) through its
        text into the copy's type; the reference's build time as the copy's ``now()``."""
        now = dict(self.now)
        chosen = []
        for column, type_ in zip(self.columns, self.types, strict=True):
            if f"{reference}." in type_:
                chosen.append(f"CAST(CAST({column} AS text) AS {type_.replace(reference, name)})")
            elif column in now:
                chosen.append(f"CASE WHEN {column} = CAST({_literal(now[column])} AS {type_}) "
                              f"THEN CAST(now() AS {type_}) ELSE {column} END")
            else:
                chosen.append(column)
        return ", ".join(chosen)

    def row_text(self) -> str:
        """A row of the table (alias ``x``) as text, leaving out the build-time columns."""
        if not self.now:
            return "x::text"
        names = ", ".join(_literal(_unquoted(c)) for c, _ in self.now)
        return f"(pg_catalog.to_jsonb(x) - CAST(ARRAY[{names}] AS text[]))::text"


def _unquoted(column: str) -> str:
    return column[1:-1].replace('""', '"') if column.startswith('"') else column


def _rows_query(schema: str, tables: Sequence[Table], name: str | None) -> str:
    """Per table: its row count, a digest of its rows (each row's text, sorted), and
    whether a row holds ``name``."""
    parts = []
    for table in tables:
        where = f"{'ONLY ' if table.only else ''}{quote_ident(schema)}.{quote_ident(table.name)}"
        holds = (f"coalesce(bool_or(strpos(x::text, {_literal(name)}) > 0), false)"
                 if name else "false")
        row = table.row_text()
        parts.append(f"SELECT {_literal(table.name)}, count(*), "
                     f"md5(coalesce(string_agg({row}, E'\\n' ORDER BY {row}), '')), "
                     f"{holds} FROM {where} AS x")
    return " UNION ALL ".join(parts)


_BUILT_AT = """
    SELECT CAST(:value AS {type}) = ANY (
        SELECT CAST(CAST(t AS {base}) AS {type})
        FROM unnest(CAST(:times AS text[])) AS t)
"""
"""Whether ``value`` is one of the times of the transactions that built a schema (as the
column stored ``now()``: cast to its type, so that ``timestamp(0)`` rounds the same)."""

_NOW = ("SELECT pg_catalog.to_char(now() AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
        "pg_catalog.to_char(LOCALTIMESTAMP, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
"""The time of the transaction about to commit, as ``timestamptz`` and as the session's
local ``timestamp`` (what ``now()`` stores in each kind of column), whatever the session's
settings."""


BuildTimes = dict[str, list[tuple[str, str]]]
"""Per built schema: the times of the transactions that built it (see :data:`_NOW`)."""


_DATE = "date"


def _timely(type_: str) -> bool:
    """Whether a column of this type can hold ``now()`` as stored (a timestamp of any
    precision, a date)."""
    return type_ == _DATE or bool(_TIMES.fullmatch(type_))


def _build_times(connection: Any, schema: str, witness: str, table: Table,
                 built_at: BuildTimes) -> tuple[tuple[str, str], ...] | None:
    """The columns of ``table`` that hold the time of the transaction that built each
    build (``now()`` as the column stores it), with the reference's value; None when the
    two builds' rows differ otherwise.

    A column whose values differ between the two builds must hold one value in each, each
    the time of a transaction of its own build: a time that differs but is not theirs
    (``now() + interval '14 days'``, ``clock_timestamp()``) is no build time, and a copy
    writing its own ``now()`` there would not be what a migration writes. A column of
    coarse precision (``timestamp(0)``, ``date``) may hold the same value in both builds,
    made a fraction of a second apart: a value that is the build's time as the column
    stores it is taken as ``now()`` too (one such value per column), or every copy would
    carry the reference's build time."""
    if not table.columns:  # a table without columns: its builds differ by their counts
        return None
    source = f"{'ONLY ' if table.only else ''}{{}}.{quote_ident(table.name)}"
    ours, theirs = source.format(quote_ident(schema)), source.format(quote_ident(witness))
    types = dict(zip(table.columns, table.types, strict=True))
    parts = []
    for column in table.columns:
        one = f"SELECT CAST({column} AS text) FROM {ours}"
        other = f"SELECT CAST({column} AS text) FROM {theirs}"
        parts.append(f"SELECT {_literal(column)}, "
                     f"(SELECT array_agg(DISTINCT v) FROM ({one} EXCEPT ALL {other}) AS d(v)), "
                     f"(SELECT array_agg(DISTINCT v) FROM ({other} EXCEPT ALL {one}) AS d(v))")
    with connection.begin():
        connection.exec_driver_sql(_TEXT_SETTINGS)
        rows = connection.exec_driver_sql(" UNION ALL ".join(parts)).all()

    def times(built: str, type_: str) -> list[str]:
        local = type_ == _DATE or "without" in type_
        return [t[1] if local else t[0] for t in built_at.get(built, ())]

    def base(type_: str) -> str:
        return "timestamp" if type_ == _DATE or "without" in type_ else "timestamptz"

    found = []
    for column, mine, other in rows:
        type_ = types[column]
        if mine or other:
            if not _timely(type_) or len(mine or ()) != 1 or len(other or ()) != 1:
                return None
            check = text(_BUILT_AT.format(type=type_, base=base(type_)))
            for built, value in ((schema, mine[0]), (witness, other[0])):
                with connection.begin():
                    if not times(built, type_) or not connection.execute(
                            check, {"value": value, "times": times(built, type_)}).scalar():
                        return None
            found.append((column, mine[0]))
        elif _timely(type_) and times(schema, type_) and times(witness, type_):
            built = (f"SELECT CAST(CAST(t AS {base(type_)}) AS {type_}) "
                     "FROM unnest(CAST(:times AS text[])) AS t")
            with connection.begin():
                connection.exec_driver_sql(_TEXT_SETTINGS)
                same = connection.execute(text(
                    f"SELECT array_agg(DISTINCT CAST({column} AS text)) FROM {ours} "
                    f"WHERE {column} = ANY ({built}) AND {column} = ANY ("
                    f"{built.replace(':times', ':witness')})"),
                    {"times": times(schema, type_),
                     "witness": times(witness, type_)}).scalar()
            if same and len(same) > 1:
                return None
            if same:
                found.append((column, same[0]))
    return tuple(found)


@dataclass(frozen=True)
class Snapshot:
    """What a built schema holds besides its DDL."""

    tables: tuple[Table, ...]
    """Every table with rows."""
    digests: dict[str, str]
    named: tuple[str, ...]
    """Tables whose rows hold the schema's own name."""
    sequences: tuple[tuple[str, int, bool], ...]
    fingerprint: str
    extensions: tuple[str, ...]


def snapshot(connection: Any, schema: str, version_table: str,
             now: dict[str, tuple[tuple[str, str], ...]] | None = None) -> Snapshot:
    """Read what ``schema`` holds (in a transaction of its own, search path emptied as the
    provisioning transaction's is, so that fingerprints compare); ``now``: the build-time
    columns of each table (see :func:`_build_times`)."""
    with connection.begin():
        connection.execute(text("SELECT pg_catalog.set_config('search_path', '', true)"))
        tables = [Table(r[0], bool(r[1]), tuple(r[2]), tuple(r[3]),
                        (now or {}).get(r[0], ()))
                  for r in connection.execute(
                      _TABLES, {"schema": schema, "version_table": version_table}).all()]
        connection.exec_driver_sql(_TEXT_SETTINGS)
        rows = connection.exec_driver_sql(_rows_query(schema, tables, schema)).all() \
            if tables else []
        counted = {r[0]: (int(r[1]), r[2], bool(r[3])) for r in rows}
        names = connection.execute(_SEQUENCES, {"schema": schema}).scalars().all()
        values = connection.exec_driver_sql(" UNION ALL ".join(
            f"SELECT {_literal(n)}, last_value, is_called FROM "
            f"{quote_ident(schema)}.{quote_ident(n)}" for n in names)).all() if names else []
        printed = fingerprints(connection, [schema], exclude_tables=[version_table])
        extensions = connection.execute(_EXTENSIONS, {"schema": schema}).scalars().all()
    seeded = tuple(t for t in tables if counted[t.name][0] > 0)
    return Snapshot(
        tables=seeded,
        digests={t.name: counted[t.name][1] for t in seeded},
        named=tuple(t.name for t in seeded if counted[t.name][2]),
        sequences=tuple((r[0], int(r[1]), bool(r[2])) for r in values),
        fingerprint=printed.get(schema, ""),
        extensions=tuple(extensions),
    )


def differences(first: Snapshot, second: Snapshot) -> str | None:
    """How two builds of one history differ (besides their names and rows), or None."""
    if first.fingerprint != second.fingerprint:
        return "their catalogs differ"
    if [t.name for t in first.tables] != [t.name for t in second.tables]:
        return "different tables hold rows"
    if first.sequences != second.sequences:
        return "their sequences stand at different values"
    return None


def _rows_differ(table: str) -> str:
    return (f"the rows of table {table} differ (a value the database computes when the "
            "revision runs, such as random(), gen_random_uuid() or clock_timestamp())")


def compare_rows(connection: Any, schema: str, witness: str, version_table: str,
                 ours: Snapshot, theirs: Snapshot, built_at: BuildTimes
                 ) -> tuple[Snapshot, str | None]:
    """The reference's snapshot with its build-time columns known, and how the two
    builds' rows differ otherwise (None: only by the time each was built; ``built_at``:
    see :func:`_build_times`)."""
    now = {}
    for table in ours.tables:
        differ = theirs.digests.get(table.name) != ours.digests[table.name]
        if not differ and not any(_timely(t) for t in table.types):
            continue
        found = _build_times(connection, schema, witness, table, built_at)
        if found is None:
            return ours, _rows_differ(table.name)
        if found:
            now[table.name] = found
    if not now:
        return ours, None
    ours = snapshot(connection, schema, version_table, now)
    theirs = snapshot(connection, witness, version_table, now)
    for table, digest in ours.digests.items():
        if theirs.digests.get(table) != digest:
            return ours, _rows_differ(table)
    return ours, None


# --- the history's key -------------------------------------------------------------------


def history_key(scripts: ServiceScripts, heads: Sequence[str]) -> str:
    """A digest of everything a fresh schema of the service is built from: the revision
    files up to ``heads``, the env.py, the baseline, the search path and version table,
    and fleet's own version (it decides how the DDL is captured)."""
    service = scripts.service
    graph = scripts.graph
    digest = hashlib.sha256()
    baseline = service.baseline
    parts = [__version__, service.name, service.version_table, ",".join(service.search_path),
             ",".join(sorted(heads)), baseline.spec if baseline else ""]
    if baseline is not None and baseline.path is not None:
        parts.append(checksum(str(baseline.path)))
    with contextlib.suppress(OSError):
        parts.append(checksum(str(scripts.script_dir / "env.py")))
    for revision in sorted(graph.ancestors(heads)):
        parts += [revision, checksum(graph.revisions[revision].path)]
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Reference:
    """A built reference, as the ledger records it."""

    schema: str
    pre: str
    post: str
    tables: tuple[Table, ...]
    sequences: tuple[tuple[str, int, bool], ...]
    fingerprint: str
    digests: dict[str, str]

    def content(self) -> dict[str, Any]:
        return {"pre": self.pre, "post": self.post,
                "tables": [[t.name, t.only, list(t.columns), list(t.types),
                            [list(n) for n in t.now]] for t in self.tables],
                "sequences": [list(s) for s in self.sequences],
                "fingerprint": self.fingerprint, "digests": self.digests}

    @classmethod
    def from_row(cls, schema: str, content: dict[str, Any]) -> Reference:
        return cls(schema, content["pre"], content["post"],
                   tuple(Table(str(t[0]), bool(t[1]), tuple(t[2]), tuple(t[3]),
                               tuple((str(n[0]), str(n[1])) for n in t[4]))
                         for t in content["tables"]),
                   tuple((str(s[0]), int(s[1]), bool(s[2])) for s in content["sequences"]),
                   content["fingerprint"], dict(content["digests"]))


class _Mismatch(Exception):
    """The copy is not the reference: rolled back, migrated instead."""


# --- the provisioner ---------------------------------------------------------------------


@dataclass
class Provisioner:
    """Copies new tenants from their service's reference (one per process, lazily)."""

    databases: Databases
    policy: Policy
    run_ledger: RunLedger | None
    _references: dict[tuple[str, str, str], Reference | str] = field(default_factory=dict)
    """(database, service, history key) -> the reference, or why there is none."""
    _keys: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)
    _keywords: dict[str, frozenset[str]] = field(default_factory=dict)
    _notes: dict[Target, str] = field(default_factory=dict)

    def wanted(self, scripts: ServiceScripts, target: Target, status: TargetStatus) -> bool:
        """Whether this target is a new tenant of a service that copies new tenants."""
        return (scripts.service.provision == "reference" and self.run_ledger is not None
                and target.tenant is not None and status.state is TargetState.MISSING
                and not status.current
                and sorted(status.head) == sorted(scripts.graph.heads)
                and not is_reference_schema(target.schema, self.run_ledger.ledger.schema))

    def take_note(self, target: Target) -> str | None:
        """Why the target was migrated instead of copied (once), or None."""
        return self._notes.pop(target, None)

    def provision(self, connection: Any, scripts: ServiceScripts, target: Target,
                  status: TargetStatus, listener: TargetLedger | None, budget: LockBudget,
                  destination: str) -> bool:
        """Copy the target from its reference in one transaction; False (with a note)
        when it must be migrated instead. Transient failures are raised, to be retried."""
        assert self.run_ledger is not None
        self._notes.pop(target, None)
        why = self._unsupported(scripts, target)
        found = None
        if why is None:
            try:
                found = self._reference(connection, scripts, target.database, status.head,
                                        destination)
            except Exception as exc:  # never fails the tenant: it is migrated instead
                with contextlib.suppress(Exception):
                    connection.rollback()
                if transient_reason(exc):
                    raise exc if isinstance(exc, DBAPIError) else ReplayFailed(None, exc) \
                        from exc
                found = f"the reference could not be built or read: {first_line(exc)}"
            why = found if isinstance(found, str) else None
        if why is not None or not isinstance(found, Reference):
            self._notes[target] = NOTE + (why or "no reference")
            return False
        try:
            self._copy(connection, scripts, target, found, status, listener, budget)
        except Exception as exc:  # the driver's own errors too: statements run on its cursor
            with contextlib.suppress(Exception):
                connection.rollback()
            if listener is not None:
                listener.wrote_target = False
            if transient_reason(exc):  # retried by the caller, as any migration is
                raise exc if isinstance(exc, DBAPIError) else ReplayFailed(None, exc) from exc
            if drivers.sqlstate(exc) == "42P06":
                reason = "its schema exists already (without a version table)"
            elif self._lost(connection, scripts, target, found, status.head):
                reason = (f"its reference schema {found.schema} is gone: the next run builds "
                          "it again")
            else:
                reason = (str(exc) if isinstance(exc, _Mismatch)
                          else f"copying {found.schema} failed: {first_line(exc)}")
            self._notes[target] = NOTE + reason
            return False
        return True

    def _lost(self, connection: Any, scripts: ServiceScripts, target: Target,
              reference: Reference, heads: Sequence[str]) -> bool:
        """Whether the reference schema was dropped by hand: then its record goes too, so
        that the next run builds it again instead of failing every copy."""
        assert self.run_ledger is not None
        try:
            with connection.begin():
                exists = connection.execute(text("SELECT to_regnamespace(:s) IS NOT NULL"),
                                            {"s": quote_ident(reference.schema)}).scalar()
                if exists:
                    return False
                key = self._key(scripts, heads)
                self.run_ledger.ledger.forget_reference(connection, scripts.service.name, key)
            self._references.pop((target.database.key, scripts.service.name, key), None)
        except DBAPIError:
            return False
        return True

    def _unsupported(self, scripts: ServiceScripts, target: Target) -> str | None:
        if not scripts.uses_helper:
            return "the service's env.py does not use alembic_fleet.env"
        if drivers.for_url(target.database.url).is_async:
            return "the target's driver is asynchronous (asyncpg)"
        return None

    # --- the reference ---

    def _key(self, scripts: ServiceScripts, heads: Sequence[str]) -> str:
        wanted = (scripts.service.name, tuple(sorted(heads)))
        if wanted not in self._keys:
            self._keys[wanted] = history_key(scripts, heads)
        return self._keys[wanted]

    def _reference(self, connection: Any, scripts: ServiceScripts, database: Database,
                   heads: Sequence[str], destination: str) -> Reference | str:
        """The service's reference for this history: recorded, built now, or refused."""
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger
        name = scripts.service.name
        key = self._key(scripts, heads)
        cached = self._references.get((database.key, name, key))
        if cached is not None:
            return cached
        try:
            row = ledger.reference(connection, name, key)
        finally:
            connection.rollback()
        if row is None:
            found = self._build(scripts, database, heads, key, destination)
            if found is None:  # being built by another runner: asked again next time
                return ("the reference is being built (by another worker of this run, or "
                        "another runner)")
        else:
            schema, content, refused = row
            found = refused or Reference.from_row(str(schema), content or {})
        self._references[(database.key, name, key)] = found
        return found

    def _build(self, scripts: ServiceScripts, database: Database, heads: Sequence[str],
               key: str, destination: str) -> Reference | str | None:
        """Build the reference under the history's lock (or find that another runner
        did); a refusal is recorded, a failure to build is not (the next run tries again).

        None when another runner holds the lock: rather than wait for a build that costs
        two migrations, this target is migrated now, and the next one looks again."""
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger
        name = scripts.service.name
        lock = lock_key("alembic-fleet reference", f"{name}\0{key}")
        with self.databases.connect(database) as connection:
            if not try_lock(connection, lock, 0):
                return None
            # The schemas this build makes are locked too, so that another runner's sweep
            # (:meth:`_sweep`) never drops them before they are recorded.
            built_locks = [_schema_lock(n) for n in self._names(key)]
            for held in built_locks:
                try_lock(connection, held, 0)
            try:
                with connection.begin():
                    row = ledger.reference(connection, name, key)
                if row is not None:
                    schema, content, refused = row
                    return refused or Reference.from_row(str(schema), content or {})
                refusal = self._refusal(scripts, heads, destination)
                if refusal is not None:
                    with connection.begin():
                        ledger.record_reference(connection, name, key, heads, None, None,
                                                refusal)
                    built: Reference | str = refusal
                else:
                    built = self._make(connection, scripts, database, heads, key,
                                       destination)
                    if isinstance(built, str) and built.startswith("!"):
                        return built[1:]  # could not build: not recorded, tried again later
                self._forget_others(connection, scripts, key)  # useless for these heads
                self._sweep(connection, self._names(key))
                return built
            finally:
                with contextlib.suppress(Exception):
                    connection.rollback()
                    for held in (lock, *built_locks):
                        unlock(connection, held)

    def _refusal(self, scripts: ServiceScripts, heads: Sequence[str], destination: str
                 ) -> str | None:
        """Why the history's files say it may not be copied (see :mod:`.independence`)."""
        graph = scripts.graph
        wanted = graph.ancestors(heads)
        script = scripts.script
        revisions = [(r.id, script.get_revision(r.id).module, r.path)
                     for r in graph.ordered if r.id in wanted]
        replayer = scripts.replayer
        if replayer is None:
            return tenant_dependence(revisions)
        scripts.replay_plan((), destination)  # renders (twice) what the build replays
        return tenant_dependence(revisions, replayer.target_metadata,
                                 {r for r, _, _ in revisions if replayer.renders_identically(r)})

    def _make(self, connection: Any, scripts: ServiceScripts, database: Database,
              heads: Sequence[str], key: str, destination: str) -> Reference | str:
        """Build the reference and its witness, compare them, capture the DDL, record the
        outcome. A string starting with ``!`` is a failure that is not recorded: then
        neither schema is left behind (nothing would copy from them)."""
        built = self._names(key)
        try:
            made = self._made(connection, scripts, database, heads, key, destination)
        except BaseException:
            self._discard(connection, built)
            raise
        if isinstance(made, str) and made.startswith("!"):
            self._discard(connection, built)
        return made

    def _discard(self, connection: Any, schemas: Sequence[str]) -> None:
        """Drop schemas a failed build made (best effort: the next build drops what is
        left, see :meth:`_made`)."""
        with contextlib.suppress(Exception):
            connection.rollback()
        for schema in schemas:
            with contextlib.suppress(Exception):
                self._drop(connection, schema)

    def _made(self, connection: Any, scripts: ServiceScripts, database: Database,
              heads: Sequence[str], key: str, destination: str) -> Reference | str:
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger
        service = scripts.service
        schema, witness = self._names(key)
        try:  # before two migrations are spent: without pg_dump nothing can be captured
            server = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) \
                // 10000
            builder = str(connection.exec_driver_sql("SELECT current_user").scalar())
            connection.rollback()
            program = find_pg_dump(self.databases, server, purpose='provision = "reference"')
        except FleetError as exc:
            return f"!{exc.message}"
        built_at: BuildTimes = {}
        for built in (schema, witness):
            # What a killed build left (no row records it, its lock is ours): not used,
            # so that each build is one whole migration whose transactions are seen.
            if not self._drop(connection, built):
                return f"!{built} is left from an earlier build and cannot be dropped"
            built_at[built] = []
            failure = self._migrate(scripts, database, built, heads, destination,
                                    built_at[built])
            if failure is not None:
                return f"!building the reference schema failed: {failure}"
        try:
            pre, post, witness_pre, witness_post = self._dumps(
                database, program, builder, [(schema, "pre-data"), (schema, "post-data"),
                                             (witness, "pre-data"), (witness, "post-data")])
        except FleetError as exc:
            return f"!{exc.message}"
        try:
            ours = snapshot(connection, schema, service.version_table)
            theirs = snapshot(connection, witness, service.version_table)
        except DBAPIError as exc:
            if drivers.sqlstate(exc) != "42501":
                raise
            with contextlib.suppress(Exception):
                connection.rollback()
            # Row-level security would hide rows from the user that copies (read with
            # row_security off, see _TEXT_SETTINGS): a copy would lose them silently.
            refusal = ("row-level security keeps the user that copies from reading every "
                       f"row of the reference: {first_line(exc)}")
            with connection.begin():
                ledger.record_reference(connection, service.name, key, heads, None, None,
                                        refusal)
            self._drop(connection, witness)
            self._drop(connection, schema)
            return refusal
        refusal = None
        if ours.extensions:
            refusal = (f"the history installs extension {', '.join(ours.extensions)} into "
                       "the schema it migrates (install it in a shared schema: search_path)")
        elif ours.named:
            refusal = (f"the rows the history seeds in table {ours.named[0]} hold the schema's "
                       "own name")
        else:
            line = (_first_difference(pre, witness_pre, (schema, witness))
                    or _first_difference(post, witness_post, (schema, witness)))
            difference = (f"their DDL differs at: {line}" if line
                          else differences(ours, theirs))
            if difference is None:
                ours, difference = compare_rows(connection, schema, witness,
                                                service.version_table, ours, theirs,
                                                built_at)
            if difference:
                refusal = f"building the history twice gave different schemas: {difference}"
        reference = Reference(schema, pre, post, ours.tables, ours.sequences, ours.fingerprint,
                              ours.digests)
        with connection.begin():
            ledger.record_reference(connection, service.name, key, heads,
                                    None if refusal else schema,
                                    None if refusal else reference.content(), refusal)
        self._drop(connection, witness)
        if refusal:
            self._drop(connection, schema)
            return refusal
        return reference

    def _migrate(self, scripts: ServiceScripts, database: Database, schema: str,
                 heads: Sequence[str], destination: str, times: list[tuple[str, str]]
                 ) -> str | None:
        """Migrate ``schema`` as a target (the ordinary path); None, or why it failed.
        ``times``: gets the time of each transaction the migration commits."""
        from alembic_fleet.execution.target_migration import TargetMigrator

        service = scripts.service
        graph = scripts.graph
        target = Target(service.name, None, schema, database)
        status = TargetStatus(target, (), tuple(heads), graph.pending((), heads),
                              TargetState.MISSING)
        builder = TargetMigrator(self.databases, {service.name: scripts},
                                 {service.name: destination}, self.policy, None)

        def committing(conn: Any) -> None:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.execute(_NOW)
                row = cursor.fetchone()
                times.append((str(row[0]), str(row[1])))
            finally:
                cursor.close()

        try:
            connection = builder._connection(database)
            event.listen(connection, "commit", committing)
            try:
                result = builder(Step(status, True))
            finally:
                with contextlib.suppress(Exception):
                    event.remove(connection, "commit", committing)
        except Exception as exc:  # e.g. the database is unreachable
            return first_line(exc)
        finally:
            builder.close()
        return result.error if result.outcome is Outcome.FAILED else None

    def _dumps(self, database: Database, program: str, builder: str,
               wanted: Sequence[tuple[str, str]]) -> list[str]:
        """``pg_dump --section=SECTION --schema=SCHEMA`` of each pair, run at once, with the
        owners other than ``builder`` (the user that built them) kept (see
        :func:`other_owners`)."""

        def dump(pair: tuple[str, str]) -> str:
            schema, section = pair
            argv, env = pg_dump_command(
                self.databases, database, program,
                [f"--section={section}", "--schema", quote_ident(schema)])
            done = subprocess.run(argv, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise FleetError(f"pg_dump of {schema} failed: {scrub(done.stderr.strip())}")
            return other_owners(local_ddl(done.stdout), builder)

        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            return list(pool.map(dump, wanted))

    def _drop(self, connection: Any, schema: str) -> bool:
        """Drop one of fleet's reference schemas, unless something outside depends on it."""
        try:
            with connection.begin():
                outside = connection.execute(_OUTSIDE_DEPENDENTS,
                                             {"schema": schema}).scalars().all()
                if outside:
                    return False
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} "
                                           "CASCADE")
        except DBAPIError:
            return False
        return True

    def _names(self, key: str) -> tuple[str, str]:
        """The reference schema of history ``key``, and its witness."""
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger.schema
        return (reference_schema(ledger, key),
                reference_schema(ledger, hashlib.sha256(f"witness\0{key}".encode()).hexdigest()))

    def _sweep(self, connection: Any, keep: Sequence[str]) -> None:
        """Reference schemas no row records and no build holds (left by a runner killed
        while building, for a history since changed): dropped."""
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger
        prefix = reference_prefix(ledger.schema)
        with connection.begin():
            found = connection.execute(
                text("SELECT nspname FROM pg_catalog.pg_namespace "
                     "WHERE starts_with(nspname, :p)"), {"p": prefix}).scalars().all()
        for name in found:
            if name in keep or not is_reference_schema(name, ledger.schema):
                continue
            held = _schema_lock(name)
            if not try_lock(connection, held, 0):
                continue  # being built
            try:
                with connection.begin():
                    recorded = ledger.recorded_reference(connection, name)
                if not recorded:
                    self._drop(connection, name)
            finally:
                with contextlib.suppress(Exception):
                    unlock(connection, held)

    def _forget_others(self, connection: Any, scripts: ServiceScripts, key: str) -> None:
        """The service's references of other histories: dropped, with their rows."""
        assert self.run_ledger is not None
        ledger = self.run_ledger.ledger
        name = scripts.service.name
        with connection.begin():
            others = ledger.other_references(connection, name, key)
        for other, schema in others:
            if schema is None or self._drop(connection, schema):
                with contextlib.suppress(DBAPIError), connection.begin():
                    ledger.forget_reference(connection, name, other)

    # --- the copy ---

    def _quoted(self, connection: Any, database: Database, schema: str) -> str:
        """``schema`` as the server's ``quote_ident`` writes it (bare when it can be), as
        pg_dump of a migrated tenant would show it."""
        keywords = self._keywords.get(database.key)
        if keywords is None:
            keywords = frozenset(connection.exec_driver_sql(
                "SELECT word FROM pg_catalog.pg_get_keywords() WHERE catcode <> 'U'"
            ).scalars().all())
            connection.rollback()
            self._keywords[database.key] = keywords
        if re.fullmatch(r"[a-z_][a-z0-9_]*", schema) and schema not in keywords:
            return schema
        return quote_ident(schema)

    def _copy(self, connection: Any, scripts: ServiceScripts, target: Target,
              reference: Reference, status: TargetStatus, listener: TargetLedger | None,
              budget: LockBudget) -> None:
        """The target made from ``reference`` in one transaction, checked, committed."""
        assert self.run_ledger is not None
        service = scripts.service
        graph = scripts.graph
        name = self._quoted(connection, target.database, target.schema)
        unwritable = _unwritable(target.schema, name, reference)
        if unwritable is not None:
            raise _Mismatch(unwritable)
        source = quote_ident(reference.schema)
        version = f"{quote_ident(target.schema)}.{quote_ident(service.version_table)}"
        # Every row of the reference, or an error (see _TEXT_SETTINGS), as pg_restore does.
        statements = ["SET LOCAL row_security = off;",
                      reference.pre.replace(reference.schema, name)]
        for table in reference.tables:
            columns = f" ({', '.join(table.columns)})" if table.columns else ""
            statements.append(
                f"INSERT INTO {name}.{quote_ident(table.name)}{columns} "
                f"OVERRIDING SYSTEM VALUE SELECT {table.selected(reference.schema, name)} "
                f"FROM {'ONLY ' if table.only else ''}{source}.{quote_ident(table.name)};")
        if reference.sequences:
            statements.append("SELECT " + ", ".join(
                f"pg_catalog.setval({_literal(f'{name}.{quote_ident(seq)}')}, {value}, "
                f"{'true' if called else 'false'})"
                for seq, value, called in reference.sequences) + ";")
        # The post-data DDL in batches: an entry that locks a table of another schema (a
        # foreign key to a shared table: SHARE ROW EXCLUSIVE, which the application's
        # writes queue behind) runs alone, after the lock budget has set what is left of
        # lock_timeout, as each statement of a migration does; the first such lock starts
        # the budget.
        batches: list[tuple[str, bool]] = [("\n".join(statements), False)]
        elsewhere = re.compile(rf"\bREFERENCES\s+(?!{re.escape(name)}\.)")
        for entry in _entries(reference.post.replace(reference.schema, name)):
            if elsewhere.search(entry):
                batches.append((entry, True))
            elif batches[-1][1]:
                batches.append((entry, False))
            else:
                batches[-1] = (batches[-1][0] + "\n" + entry, False)
        batches.append((f"INSERT INTO {version} (version_num) VALUES "
                        + ", ".join(f"({_literal(h)})" for h in sorted(status.head)) + ";",
                        False))
        with connection.begin():
            cursor = connection.connection.dbapi_connection.cursor()
            if reference.tables:
                # The rows' source first: a lock someone holds on the reference (another
                # runner dropping it, a VACUUM FULL) is not one a migration of this tenant
                # would wait for, so the tenant is migrated instead of failed when it lasts.
                try:
                    cursor.execute("LOCK TABLE " + ", ".join(
                        f"{source}.{quote_ident(t.name)}" for t in reference.tables)
                        + " IN ACCESS SHARE MODE")
                except Exception as exc:
                    if drivers.sqlstate(exc) == "55P03":
                        raise _Mismatch(f"a table of its reference {reference.schema} is "
                                        "locked by another session for over lock_timeout"
                                        ) from exc
                    raise
            for sql, locks_elsewhere in batches:
                if locks_elsewhere:
                    budget.before(cursor, _COMMENTS.sub("", sql))
                cursor.execute(sql)
            self._verify(connection, target, reference, service.version_table)
            revisions = sorted(graph.ancestors(status.head))
            self.run_ledger.ledger.write_applied_many(
                connection, self.run_ledger.run_id, target.service, target.schema,
                [(r, self.run_ledger.checksum(graph.revisions[r].path)) for r in revisions])
            if listener is not None:
                listener.before_commit(connection)

    def _verify(self, connection: Any, target: Target, reference: Reference,
                version_table: str) -> None:
        """The tenant's catalog fingerprint and row digests are the reference's."""
        printed = fingerprints(connection, [target.schema], exclude_tables=[version_table])
        if printed.get(target.schema) != reference.fingerprint:
            raise _Mismatch("the copy's catalog fingerprint differs from the reference's "
                            f"({reference.schema})")
        if reference.tables:
            connection.exec_driver_sql(_TEXT_SETTINGS)
            rows = connection.exec_driver_sql(
                _rows_query(target.schema, reference.tables, None)).all()
            for table, _count, digest, _named in rows:
                if reference.digests.get(table) != digest:
                    raise _Mismatch(f"the copy's rows of table {table} differ from the "
                                    f"reference's ({reference.schema})")


def _schema_lock(schema: str) -> int:
    return lock_key("alembic-fleet reference schema", schema)




def fallback_warnings(results: Sequence[Any]) -> list[str]:
    """One warning per service and reason for the targets migrated instead of copied."""
    grouped: dict[tuple[str, str], int] = {}
    for result in results:
        note = getattr(result, "note", None) or ""
        if note.startswith(NOTE) and result.outcome is Outcome.MIGRATED:
            key = (result.target.service, note[len(NOTE):])
            grouped[key] = grouped.get(key, 0) + 1
    return [f"{service}: {count} new tenant schema(s) migrated instead of copied from the "
            f"reference (provision = \"reference\"): {reason}"
            for (service, reason), count in grouped.items()]

