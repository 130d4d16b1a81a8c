"""Describe a schema's structure from ``pg_catalog`` so that hand-made changes can be found.

``fleet check --database`` has to find, among thousands of tenant schemas built by the same
migrations, the few that someone changed by hand. Comparing full descriptions of every schema
would move megabytes over the wire, so the work is split in two:

* :func:`fingerprints` asks the database, in **one** query for all schemas, for the md5 of
  each schema's sorted description; nearly all of them equal the reference's;
* only for the schemas that differ does the caller fetch :func:`describe` and show
  :func:`difference` against the reference.

A description is a set of normalized text lines, one per object or attribute, for example
``column users.email text not null`` or ``index ix_users_email: CREATE INDEX ix_users_email ON
users USING btree (email)``. Both functions run the same SQL (:data:`_LINES`), so
``fingerprints()[s] == md5("\\n".join(sorted(describe(s))))`` by construction (and by test):
the lines are sorted with ``COLLATE "C"``, i.e. by UTF-8 bytes, which is Python's code point
order.

What is covered: tables (ordinary and partitioned), their columns (name, type, not null,
default, identity, generated expression), constraints (primary key, unique, foreign key,
check, exclusion), indexes (of tables and materialized views; an index behind a primary key,
unique or exclusion constraint is described by that constraint's line), sequences (by name),
views and materialized views (definition), enum types (ordered labels). Relations named in
``exclude_tables`` are left out with their columns, constraints and indexes.

What is deliberately left out:

* functions, procedures, triggers, policies, domains, composite types, privileges, owners,
  comments, storage parameters, partition bounds and column collations: out of scope for now
  (migrations of the projects fleet serves rarely change them by hand; adding one is one more
  ``UNION ALL`` branch in :data:`_LINES`);
* anything that differs between two identical schemas: OIDs, relfilenodes, statistics;
* **column positions** (``attnum``): a column dropped and re-added, or added by a hot-fix
  on one tenant and then by the migration on the others, has another position although the
  schema is the same for every query that names its columns; the lines name columns and are
  position-independent, so column order is not compared;
* **whether a constraint is validated**: ``pg_get_constraintdef`` appends ``NOT VALID`` to a
  constraint not yet validated; the suffix is removed, so a constraint added ``NOT VALID`` by
  a migration compares equal before and after an operator's ``VALIDATE CONSTRAINT``.

Schema-name independence: two tenants built by the same migrations must give equal lines
although their names differ (``auth_default`` and ``auth_toshiba``). PostgreSQL's deparsers
(``format_type``, ``pg_get_expr``, ``pg_get_constraintdef``, ``pg_get_indexdef``,
``pg_get_viewdef``, ``regclass`` output) qualify a name with its schema when that schema is not
on the ``search_path``. Setting ``search_path`` per schema is impossible inside one query for
many schemas, so the qualification is removed by text replacement of the schema's
``quote_ident(nspname) || '.'`` prefix. That is the only spelling the deparsers emit: they
quote exactly when ``quote_ident`` would, so ``"auth_Tosh-iba".users`` and ``auth_x.users``
are both caught, while the bare text ``auth_Tosh-iba.`` can only occur inside a string literal,
which must not be rewritten. The replacement is anchored: the prefix must follow a space, ``(``,
``'`` (``nextval('s.seq'::regclass)``), ``:`` (``'a'::s.mood``) or ``,`` (or start the text),
so schema ``s`` does not rewrite ``users.id``. Only a string literal that itself contains
``' s.'`` (with schema ``s``) would be rewritten too; that is accepted. References to *other*
schemas (``public.citext``, a shared schema's table) keep their qualification, as they should.

Because qualification depends on the connection's ``search_path`` for objects of other schemas,
compare fingerprints computed with the same ``search_path`` (in practice: in the same call).

The functions only read; transactions are the caller's (SQLAlchemy begins one implicitly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import Connection, TextClause, text


def _literal(value: str) -> str:
    """A SQL string literal of a constant of this module (never of user input)."""
    return "'" + value.replace("'", "''") + "'"


_ANCHORS = (" ", "(", "'", ":", ",")
"""Characters after which a schema qualification can start in deparsed SQL."""


def _strip(expression: str) -> str:
    """SQL removing the described schema's qualification (``r.p``) from ``expression``.

    A space is prepended so that a qualification at the very start (``format_type`` of an
    enum of the schema) is anchored like any other, then removed again by ``substr``. Nested
    ``replace`` calls cost microseconds, unlike a regular expression built per schema, which
    PostgreSQL would compile again for each of a thousand schemas (its cache holds 32).
    """
    sql = f"(' ' || {expression})"
    for anchor in _ANCHORS:
        sql = f"replace({sql}, {_literal(anchor)} || r.p, {_literal(anchor)})"
    return f"substr({sql}, 2)"


_VIEWDEF = _strip(
    r"btrim(regexp_replace(pg_catalog.pg_get_viewdef(r.oid), '\s+', ' ', 'g'))"
)
"""A view's definition on one line (whitespace collapsed), for readable differences."""

_LINES_TEMPLATE = f"""
ns AS (
    SELECT n.oid, n.nspname, quote_ident(n.nspname) || '.' AS p
    FROM pg_catalog.pg_namespace AS n
    JOIN unnest(CAST(:schemas AS text[])) AS w(name) ON w.name = n.nspname
),
rel AS (
    SELECT c.oid, c.relname, c.relkind, ns.nspname, ns.p
    FROM {{relations}}
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relname <> ALL(CAST(:exclude AS text[]))
),
lines (nspname, line) AS (
    SELECT r.nspname,
           CASE r.relkind WHEN 'p' THEN 'partitioned table ' ELSE 'table ' END || r.relname
    FROM rel AS r
    WHERE r.relkind IN ('r', 'p')
  UNION ALL
    SELECT r.nspname, 'sequence ' || r.relname
    FROM rel AS r
    WHERE r.relkind = 'S'
  UNION ALL
    SELECT r.nspname,
           CASE r.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
           || r.relname || ': '
           || {_VIEWDEF}
    FROM rel AS r
    WHERE r.relkind IN ('v', 'm')
  UNION ALL
    SELECT r.nspname,
           'column ' || r.relname || '.' || a.attname || ' '
           || {_strip("pg_catalog.format_type(a.atttypid, a.atttypmod)")}
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || CASE a.attidentity
                  WHEN 'a' THEN ' generated always as identity'
                  WHEN 'd' THEN ' generated by default as identity'
                  ELSE '' END
           || CASE WHEN d.adbin IS NULL THEN ''
                   WHEN a.attgenerated = 's' THEN ' generated always as ('
                       || {_strip("pg_catalog.pg_get_expr(d.adbin, d.adrelid)")} || ') stored'
                   ELSE ' default ' || {_strip("pg_catalog.pg_get_expr(d.adbin, d.adrelid)")}
              END
    FROM rel AS r
    JOIN pg_catalog.pg_attribute AS a
      ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE r.relkind IN ('r', 'p')
  UNION ALL
    SELECT r.nspname,
           'constraint ' || r.relname || '.' || co.conname || ' '
           || {_strip('''CASE WHEN co.convalidated THEN pg_catalog.pg_get_constraintdef(co.oid)
                   ELSE regexp_replace(pg_catalog.pg_get_constraintdef(co.oid),
                                       ' NOT VALID$', '') END''')}
    FROM rel AS r
    JOIN pg_catalog.pg_constraint AS co ON co.conrelid = r.oid
    WHERE r.relkind IN ('r', 'p') AND co.contype IN ('p', 'u', 'f', 'c', 'x')
  UNION ALL
    SELECT r.nspname,
           'index ' || i.relname || ': ' || {_strip("pg_catalog.pg_get_indexdef(i.oid)")}
    FROM rel AS r
    JOIN pg_catalog.pg_index AS x ON x.indrelid = r.oid
    JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
    WHERE r.relkind IN ('r', 'p', 'm')
      AND NOT EXISTS (
          SELECT FROM pg_catalog.pg_constraint AS k
          WHERE k.conindid = x.indexrelid AND k.conrelid = r.oid
            AND k.contype IN ('p', 'u', 'x'))
  UNION ALL
    SELECT r.nspname,
           'enum ' || t.typname || ': ' || coalesce((
               SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
               FROM pg_catalog.pg_enum AS e
               WHERE e.enumtypid = t.oid), '')
    FROM {{types}}
    WHERE t.typtype::text = 'e'
)
"""
"""One line per object or attribute of every wanted schema. Each branch aliases its row
source ``r`` (which carries the schema prefix ``r.p``) so :func:`_strip` works in all of them.

Choices made for speed (1,000 schemas of 10 tables: about 110,000 lines, where the deparsing
functions cost 3 to 15 microseconds a call and dominate):

* ``UNION ALL``, not ``UNION``: lines are unique by construction (each names its object, and
  names are unique per table or schema), and a ``UNION`` over 100,000 rows spills to disk;
  duplicates, possible only with names containing dots, are still removed where it is cheap
  (``DISTINCT`` inside the per-schema aggregate, ``frozenset`` in :func:`describe`);
* an index that implements a primary key, unique or exclusion constraint is described by its
  constraint's line (``pg_get_constraintdef`` includes ``INCLUDE``, ``WITH (...)`` and the
  tablespace), not again by ``pg_get_indexdef``, the most expensive deparser; renaming such an
  index renames its constraint, so the change is still seen;
* ``typtype::text = 'e'`` instead of ``typtype = 'e'``: with the catalog statistics of a fresh
  database the planner expects one enum type and joins it to the schemas by a nested loop over
  all of them (100 ms for 1,000 schemas); the cast hides the selectivity and a hash join is
  chosen.
"""

_BY_SCAN = {
    "relations": "pg_catalog.pg_class AS c JOIN ns ON ns.oid = c.relnamespace",
    "types": "ns AS r JOIN pg_catalog.pg_type AS t ON t.typnamespace = r.oid",
}
"""Many schemas: one pass over ``pg_class`` and ``pg_type`` (neither has an index on the
schema alone) finds every wanted schema's relations and types at once."""

_DEPENDENTS = """(
        SELECT DISTINCT d.objid FROM pg_catalog.pg_depend AS d
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
          AND d.refobjid = {ns}.oid AND d.refobjsubid = 0
          AND d.classid = 'pg_catalog.{catalog}'::pg_catalog.regclass)"""

_BY_DEPENDENCY = {
    "relations": "ns CROSS JOIN LATERAL " + _DEPENDENTS.format(ns="ns", catalog="pg_class")
                 + " AS m JOIN pg_catalog.pg_class AS c"
                 " ON c.oid = m.objid AND c.relnamespace = ns.oid",
    "types": "ns AS r CROSS JOIN LATERAL " + _DEPENDENTS.format(ns="r", catalog="pg_type")
             + " AS m JOIN pg_catalog.pg_type AS t ON t.oid = m.objid AND t.typnamespace = r.oid",
}
"""A few schemas: their relations and types through ``pg_depend``'s index on what objects
depend on (every table, view, sequence and enum type records its schema there: that is
how ``DROP SCHEMA ... CASCADE`` finds them). A scan of ``pg_class`` costs what the whole
database holds, 60 ms at 60,000 relations and growing with every tenant, for each new
tenant's check; this costs what the schema holds. Indexes, columns and constraints are
reached from the relations by indexed keys in both forms."""

FEW_SCHEMAS = 20
"""Up to this many wanted schemas, :data:`_BY_DEPENDENCY`; more, :data:`_BY_SCAN`."""


def _lines(sources: dict[str, str]) -> str:
    return _LINES_TEMPLATE.replace("{relations}", sources["relations"]).replace(
        "{types}", sources["types"])


def _describe_sql(sources: dict[str, str]) -> TextClause:
    return text(f"WITH {_lines(sources)} SELECT line FROM lines")


def _fingerprints_sql(sources: dict[str, str]) -> TextClause:
    return text(
        f"""
    WITH {_lines(sources)}
    SELECT ns.nspname, md5(coalesce(f.joined, ''))
    FROM ns
    LEFT JOIN (
        SELECT l.nspname,
               string_agg(DISTINCT l.line COLLATE "C", E'\\n' ORDER BY l.line COLLATE "C")
                   AS joined
        FROM lines AS l
        GROUP BY l.nspname
    ) AS f ON f.nspname = ns.nspname
    """
    )


_DESCRIBE = _describe_sql(_BY_DEPENDENCY)
_FINGERPRINTS = {True: _fingerprints_sql(_BY_DEPENDENCY), False: _fingerprints_sql(_BY_SCAN)}
"""md5 of the sorted lines, per schema, computed in the database: one row of 32 characters per
schema crosses the wire instead of its whole description. The ``LEFT JOIN`` keeps an existing
but empty schema (md5 of the empty text, like ``describe`` giving an empty set). Keyed by
whether few schemas are wanted."""


def describe(
    connection: Connection, schema: str, *, exclude_tables: Collection[str] = ()
) -> frozenset[str]:
    """The normalized lines describing ``schema`` (empty if it is empty or does not exist).

    ``exclude_tables`` names relations to leave out with their columns, constraints and
    indexes, typically the Alembic version table, whose rows differ by design and whose very
    presence is checked elsewhere.
    """
    rows = connection.execute(
        _DESCRIBE, {"schemas": [schema], "exclude": sorted(exclude_tables)}
    ).scalars()
    return frozenset(rows)


def fingerprints(
    connection: Connection, schemas: Sequence[str], *, exclude_tables: Collection[str] = ()
) -> dict[str, str]:
    """md5 hex of each existing schema's description, in one query for all of them.

    A schema that does not exist is absent from the result. The value equals
    :func:`fingerprint_of` ``(describe(connection, schema, exclude_tables=...))``.
    """
    wanted = sorted(set(schemas))
    if not wanted:
        return {}
    rows = connection.execute(
        _FINGERPRINTS[len(wanted) <= FEW_SCHEMAS],
        {"schemas": wanted, "exclude": sorted(exclude_tables)},
    ).all()
    return {schema: digest for schema, digest in rows}


def fingerprint_of(lines: Iterable[str]) -> str:
    """The fingerprint of a description, as :func:`fingerprints` computes it in SQL: md5 of
    the distinct lines sorted by code point and joined by newlines (UTF-8)."""
    joined = "\n".join(sorted(set(lines)))
    return hashlib.md5(joined.encode("utf-8"), usedforsecurity=False).hexdigest()


def difference(reference: frozenset[str], actual: frozenset[str]) -> tuple[str, ...]:
    """Human-readable differences of ``actual`` from ``reference``.

    ``missing: <line>`` is in the reference only, ``extra: <line>`` in the actual schema only.
    Sorted by the described line, not by kind, so that a changed attribute shows as its old
    and new lines next to each other (in the order of their text), e.g. a changed default::

        missing: column users.status text not null default 'new'::text
        extra: column users.status text not null default 'open'::text
    """
    entries = [(line, 0, "missing") for line in reference - actual]
    entries += [(line, 1, "extra") for line in actual - reference]
    return tuple(f"{kind}: {line}" for line, _, kind in sorted(entries))
