"""Unsafe operations in the SQL a new revision renders, and ``# fleet: allow`` comments.

``fleet check`` renders each new revision in Alembic's offline mode (PostgreSQL dialect) and
hands the statements to :func:`lint_statements`. Each statement is parsed with pglast (the
real PostgreSQL parser) and the parse tree, never the SQL text, decides what is unsafe: an
operation that blocks reads or writes on a busy table for longer than a moment (an ACCESS
EXCLUSIVE lock held during a table rewrite or a full scan), or one that breaks the code still
running against the old schema during a rolling deploy.

A table created earlier in the same sequence of statements has no readers and no rows yet,
so anything done to it afterwards is safe and not reported.

Pure functions: no database, no Alembic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream

from alembic_fleet.model.findings import RULES_BY_NAME
from alembic_fleet.model.identifiers import quote_ident

VOLATILE_FUNCTIONS: frozenset[str] = frozenset(
    {
        # Random values (core, pgcrypto, uuid-ossp, PG 18 uuidv4/uuidv7).
        "random",
        "random_normal",
        "gen_random_uuid",
        "gen_random_bytes",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        # The wall clock, read on each call.
        "clock_timestamp",
        "timeofday",
        # Sequences.
        "nextval",
    }
)
"""Functions PostgreSQL marks VOLATILE that show up as column defaults (matched on the last
part of the name, so ``public.gen_random_uuid()`` counts too).

Since PG 11, ``ADD COLUMN ... DEFAULT expr`` only stores the default in the catalog when
``expr`` is not volatile; a volatile default must be evaluated for each existing row, so
the whole table is rewritten under an ACCESS EXCLUSIVE lock. ``now()``,
``current_timestamp``, ``statement_timestamp()`` and ``txid_current()`` are STABLE (one value
per statement or transaction) and therefore fast, like any constant.
"""

SERIAL_TYPES: frozenset[str] = frozenset(
    {"smallserial", "serial", "bigserial", "serial2", "serial4", "serial8"}
)
"""Pseudo-types that add a ``nextval(...)`` default, so a volatile default in disguise."""

@dataclass(frozen=True)
class UnsafeOperation:
    """One unsafe operation found in the statements of a revision."""

    rule: str
    """The rule name from :mod:`alembic_fleet.model.findings`, e.g. ``drop-column``."""
    statement: str
    """The SQL statement text, stripped."""
    message: str
    """What the statement does, e.g. ``drops column "email" of table "users"``."""
    index: int
    """The position of the statement in the sequence given to :func:`lint_statements`."""


def lint_statements(statements: Sequence[str]) -> list[UnsafeOperation]:
    """Every unsafe operation in ``statements``, in order.

    Each string may hold any number of SQL statements; one that does not parse yields a
    single ``unparsable-sql`` operation and is otherwise skipped.
    """
    linter = _Linter()
    for index, text in enumerate(statements):
        linter.lint(index, text)
    return linter.found


# --- the linter ----------------------------------------------------------------------------


@dataclass
class _Linter:
    """Walks the statements in order, remembering the tables (and their indexes) created."""

    found: list[UnsafeOperation] = field(default_factory=list)
    created_tables: dict[str, set[str | None]] = field(default_factory=dict)
    """Unqualified lowercase table name -> the schemas it was created in (None: unqualified)."""
    created_indexes: dict[str, set[str | None]] = field(default_factory=dict)
    """Indexes built on created tables, the same way."""

    def lint(self, index: int, text: str) -> None:
        try:
            raw_statements = parse_sql(text)
        except ParseError as error:
            self._report("unparsable-sql", text.strip(), f"cannot parse: {error}", index)
            return
        for raw in raw_statements:
            end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(text)
            statement = text[raw.stmt_location : end].strip()
            for rule, message in self._check(raw.stmt):
                self._report(rule, statement, message, index)

    def _report(self, rule: str, statement: str, message: str, index: int) -> None:
        assert rule in RULES_BY_NAME, rule
        self.found.append(UnsafeOperation(rule, statement, message, index))

    def _check(self, node: ast.Node) -> Iterator[tuple[str, str]]:
        if isinstance(node, ast.CreateStmt):
            _remember(self.created_tables, node.relation)
        elif isinstance(node, ast.CreateTableAsStmt):
            _remember(self.created_tables, node.into.rel)
        elif isinstance(node, ast.AlterTableStmt):
            yield from self._alter_table(node)
        elif isinstance(node, ast.RenameStmt):
            yield from self._rename(node)
        elif isinstance(node, ast.IndexStmt):
            yield from self._create_index(node)
        elif isinstance(node, ast.DropStmt):
            yield from self._drop(node)

    def _is_new(self, relation: ast.RangeVar) -> bool:
        return _known(self.created_tables, relation.schemaname, relation.relname)

    # ALTER TABLE ------------------------------------------------------------------------

    def _alter_table(self, node: ast.AlterTableStmt) -> Iterator[tuple[str, str]]:
        if node.objtype != ObjectType.OBJECT_TABLE or self._is_new(node.relation):
            return
        table = _table(node.relation)
        for cmd in node.cmds or ():
            if cmd.subtype == AlterTableType.AT_DropColumn:
                yield _drop_column(table, cmd)
            elif cmd.subtype == AlterTableType.AT_AlterColumnType:
                yield _change_column_type(table, cmd)
            elif cmd.subtype == AlterTableType.AT_SetNotNull:
                yield _set_not_null(table, cmd)
            elif cmd.subtype == AlterTableType.AT_AddColumn:
                yield from _add_column(table, cmd.def_)
            elif cmd.subtype == AlterTableType.AT_AddConstraint:
                yield from _add_constraint(table, cmd.def_)

    # ALTER TABLE ... RENAME -------------------------------------------------------------

    def _rename(self, node: ast.RenameStmt) -> Iterator[tuple[str, str]]:
        if node.renameType == ObjectType.OBJECT_TABLE:
            if self._is_new(node.relation):
                renamed = ast.RangeVar(schemaname=node.relation.schemaname, relname=node.newname)
                _remember(self.created_tables, renamed)
                return
            yield _rename_table(node)
        elif (
            node.renameType == ObjectType.OBJECT_COLUMN
            and node.relationType == ObjectType.OBJECT_TABLE
            and not self._is_new(node.relation)
        ):
            yield _rename_column(node)

    # CREATE INDEX / DROP ----------------------------------------------------------------

    def _create_index(self, node: ast.IndexStmt) -> Iterator[tuple[str, str]]:
        if self._is_new(node.relation):
            if node.idxname:
                index = ast.RangeVar(schemaname=node.relation.schemaname, relname=node.idxname)
                _remember(self.created_indexes, index)
            return
        if not node.concurrent:
            yield _create_index_not_concurrently(node)

    def _drop(self, node: ast.DropStmt) -> Iterator[tuple[str, str]]:
        if node.removeType == ObjectType.OBJECT_TABLE:
            for names in node.objects or ():
                schema, name = _split_name(names)
                if not _known(self.created_tables, schema, name):
                    yield _drop_table(schema, name)
        elif node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent:
            for names in node.objects or ():
                schema, name = _split_name(names)
                if not _known(self.created_indexes, schema, name):
                    yield _drop_index_not_concurrently(schema, name)


# --- the rules -----------------------------------------------------------------------------


def _drop_column(table: str, cmd: ast.AlterTableCmd) -> tuple[str, str]:
    """Code of the previous release still selects or inserts the column and fails."""
    return "drop-column", f"drops column {quote_ident(cmd.name)} of table {table}"


def _drop_table(schema: str | None, name: str) -> tuple[str, str]:
    """Code of the previous release still uses the table and fails; the data is gone."""
    return "drop-table", f"drops table {_qualified(schema, name)}"


def _rename_column(node: ast.RenameStmt) -> tuple[str, str]:
    """Code of the previous release still uses the old name and fails."""
    return "rename-column", (
        f"renames column {quote_ident(node.subname)} of table {_table(node.relation)} "
        f"to {quote_ident(node.newname)}"
    )


def _rename_table(node: ast.RenameStmt) -> tuple[str, str]:
    """Code of the previous release still uses the old name and fails."""
    return "rename-table", (
        f"renames table {_table(node.relation)} to {quote_ident(node.newname)}"
    )


def _change_column_type(table: str, cmd: ast.AlterTableCmd) -> tuple[str, str]:
    """Most type changes rewrite the table (and its indexes) under an ACCESS EXCLUSIVE lock,
    and old code may not cope with the new type."""
    return "change-column-type", (
        f"changes the type of column {quote_ident(cmd.name)} of table {table} "
        f"to {RawStream()(cmd.def_.typeName)}"
    )


def _set_not_null(table: str, cmd: ast.AlterTableCmd) -> tuple[str, str]:
    """SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock (unless a valid
    ``CHECK (col IS NOT NULL)`` already proves it, PG 12+)."""
    return "set-not-null", f"sets NOT NULL on column {quote_ident(cmd.name)} of table {table}"


def _create_index_not_concurrently(node: ast.IndexStmt) -> tuple[str, str]:
    """CREATE INDEX takes a SHARE lock: writes to the table wait until the index is built."""
    kind = "unique index" if node.unique else "index"
    name = f"{kind} {quote_ident(node.idxname)}" if node.idxname else f"an unnamed {kind}"
    return "create-index-not-concurrently", (
        f"creates {name} on table {_table(node.relation)} without CONCURRENTLY"
    )


def _drop_index_not_concurrently(schema: str | None, name: str) -> tuple[str, str]:
    """DROP INDEX takes an ACCESS EXCLUSIVE lock on the index's table, queued behind (and
    blocking everything queued behind) any long-running query on it."""
    return "drop-index-not-concurrently", (
        f"drops index {_qualified(schema, name)} without CONCURRENTLY"
    )


def _add_column(table: str, column: ast.ColumnDef) -> Iterator[tuple[str, str]]:
    """ADD COLUMN on an existing table: its constraints and default decide what it costs."""
    name = quote_ident(column.colname)
    constraints: Sequence[ast.Constraint] = column.constraints or ()
    kinds = {constraint.contype for constraint in constraints}
    default = next(
        (c.raw_expr for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None
    )
    if _is_null(default):
        default = None
    serial = _type_name(column.typeName) in SERIAL_TYPES
    not_null = column.is_not_null or bool(
        kinds & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY}
    )
    generated = bool(kinds & {ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED})
    if not_null and default is None and not generated and not serial:
        # Fails outright on a table that has rows; old code inserting without it fails too.
        yield "add-not-null-column-without-default", (
            f"adds NOT NULL column {name} without a default to table {table}"
        )
    volatile = volatile_call(default) if default is not None else None
    if volatile is not None:
        yield _volatile_default(table, name, f"{volatile}()")
    elif serial:
        yield _volatile_default(table, name, f"nextval() (type {_type_name(column.typeName)})")
    for constraint in constraints:
        yield from _add_constraint(table, constraint, column=name)


def _volatile_default(table: str, column: str, call: str) -> tuple[str, str]:
    """A volatile default is computed for every existing row: the table is rewritten under
    an ACCESS EXCLUSIVE lock (a constant or STABLE default is not, PG 11+)."""
    return "volatile-default", (
        f"adds column {column} to table {table} with the volatile default {call}"
    )


def _add_constraint(
    table: str, constraint: ast.Constraint, column: str | None = None
) -> Iterator[tuple[str, str]]:
    """ADD CONSTRAINT (or a constraint on ADD COLUMN) on an existing table.

    A foreign key takes SHARE ROW EXCLUSIVE locks on both tables and a check constraint an
    ACCESS EXCLUSIVE lock, each held while every row is validated, unless added NOT VALID.
    UNIQUE and PRIMARY KEY build their index under an ACCESS EXCLUSIVE lock, unless they
    adopt an index built beforehand (``USING INDEX``).
    """
    name = quote_ident(constraint.conname) if constraint.conname else None
    on = f"on column {column} of table {table}" if column else f"on table {table}"
    validated = not constraint.skip_validation and constraint.is_enforced
    if constraint.contype == ConstrType.CONSTR_FOREIGN and validated:
        target = _table(constraint.pktable)
        what = f"foreign key {name}" if name else "a foreign key"
        yield "add-foreign-key-without-not-valid", (
            f"adds {what} {on} referencing {target} without NOT VALID"
        )
    elif constraint.contype == ConstrType.CONSTR_CHECK and validated:
        what = f"check constraint {name}" if name else "a check constraint"
        yield "add-check-without-not-valid", f"adds {what} {on} without NOT VALID"
    elif (
        constraint.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY)
        and not constraint.indexname
    ):
        kind = "primary key" if constraint.contype == ConstrType.CONSTR_PRIMARY else "unique"
        what = f"{kind} constraint {name}" if name else f"a {kind} constraint"
        yield "add-unique-constraint", f"adds {what} {on} without USING INDEX"


# --- parse tree helpers --------------------------------------------------------------------


def _remember(registry: dict[str, set[str | None]], relation: ast.RangeVar) -> None:
    schema = relation.schemaname.lower() if relation.schemaname else None
    registry.setdefault(relation.relname.lower(), set()).add(schema)


def _known(registry: dict[str, set[str | None]], schema: str | None, name: str) -> bool:
    """True when ``schema.name`` was created; an unqualified name on either side matches."""
    schemas = registry.get(name.lower())
    if schemas is None:
        return False
    return schema is None or None in schemas or schema.lower() in schemas


def _split_name(names: Sequence[ast.Node]) -> tuple[str | None, str]:
    """``(schema, name)`` of a DROP's dotted name (a database prefix is ignored)."""
    parts = [part.sval for part in names if isinstance(part, ast.String)]
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def _qualified(schema: str | None, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)


def _table(relation: ast.RangeVar) -> str:
    return _qualified(relation.schemaname, relation.relname)


def _type_name(type_name: ast.TypeName | None) -> str:
    if type_name is None or not type_name.names:
        return ""
    return type_name.names[-1].sval.lower()


def _is_null(expr: ast.Node | None) -> bool:
    """True for ``DEFAULT NULL``, which is no default at all."""
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


def volatile_call(expr: ast.Node) -> str | None:
    """The name of the first volatile function called anywhere in ``expr``, if any."""
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower()
            if name in VOLATILE_FUNCTIONS:
                return name
    return None


def walk(node: object, skip: object = None) -> Iterator[ast.Node]:
    """Every node in the tree under ``node``, itself included (``skip`` and what is under
    it left out)."""
    if node is skip and skip is not None:
        return
    if isinstance(node, ast.Node):
        yield node
        for attribute in node.__slots__:
            yield from walk(getattr(node, attribute, None), skip)
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item, skip)
