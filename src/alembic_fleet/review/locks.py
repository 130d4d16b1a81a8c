"""The table-level lock each SQL statement takes, and whether it rewrites or scans a table.

``fleet plan`` shows a reviewer, for every statement a pending revision renders, which
relation it locks, in which mode, and how much work it does under that lock. The statement
is parsed with pglast (PostgreSQL's own parser) and the parse tree, never the SQL text,
decides. The modes and what they conflict with are PostgreSQL's:

* the table-level lock modes and which statements acquire them, "Table-Level Locks" and
  "Table 13.2. Conflicting Lock Modes",
  https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES;
* the mode of each ``ALTER TABLE`` subcommand (ACCESS EXCLUSIVE unless noted; several
  subcommands take the strongest of theirs), the notes of
  https://www.postgresql.org/docs/current/sql-altertable.html, as ``AlterTableGetLockLevel``
  in ``src/backend/commands/tablecmds.c`` implements them;
* ``CREATE INDEX`` (SHARE; CONCURRENTLY: SHARE UPDATE EXCLUSIVE), ``REINDEX``, ``CREATE
  TRIGGER`` (SHARE ROW EXCLUSIVE), ``COMMENT ON`` and ``CREATE STATISTICS`` (SHARE UPDATE
  EXCLUSIVE), ``ALTER INDEX ... RENAME`` (SHARE UPDATE EXCLUSIVE, PG 12+): their own pages.

Every lock is held until the end of the transaction, and fleet migrates a target's pending
revisions in one transaction: a lock taken by the first revision is held until the last one
commits.

*Work* is what the statement does to the rows already there while it holds the lock:
``rewrite`` (a new copy of the table and its indexes is written, e.g. a volatile default or
``SET LOGGED``), ``may rewrite`` (``ALTER COLUMN TYPE``: a rewrite unless the old type is
binary-coercible to the new one, which the SQL alone cannot tell), ``scan`` (every row is
read: building an index, validating a constraint, ``SET NOT NULL``, an ``UPDATE`` or
``DELETE`` without ``WHERE``). Nothing: only the catalog changes.

A relation created earlier in the same sequence of statements has no rows and no readers:
its effects are marked ``created``.

Pure functions: no database, no Alembic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from pglast import ast, parse_sql
from pglast.enums import (
    AlterTableType,
    ConstrType,
    DropBehavior,
    ObjectType,
    ReindexObjectType,
)
from pglast.parser import ParseError
from pglast.stream import RawStream

from alembic_fleet.check.unsafe import SERIAL_TYPES, volatile_call, walk
from alembic_fleet.model.identifiers import quote_ident as _quote

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def quote_ident(name: str) -> str:
    """An identifier as a reviewer reads it: bare when PostgreSQL would read it back
    unchanged, quoted otherwise."""
    return name if _PLAIN.fullmatch(name) else _quote(name)


class Lock(IntEnum):
    """PostgreSQL's table-level lock modes, weakest first (the values are PostgreSQL's own
    ``LOCKMODE`` numbers, as ``LOCK TABLE`` reports them in its parse tree)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """As the documentation writes it: ``ACCESS EXCLUSIVE``."""
        return self.name.replace("_", " ")

    @property
    def blocks(self) -> str:
        """What the application cannot do on the relation while the lock is held
        (Table 13.2): ``reads and writes``, ``writes`` or ``no reads or writes``."""
        if self is Lock.ACCESS_EXCLUSIVE:
            return "reads and writes"
        if self >= Lock.SHARE:
            return "writes"
        return "no reads or writes"


class Work(StrEnum):
    """What a statement does to the existing rows of a relation while it holds its lock."""

    REWRITE = "rewrite"
    MAY_REWRITE = "may rewrite"
    SCAN = "scan"

    @property
    def weight(self) -> int:
        return {Work.REWRITE: 3, Work.MAY_REWRITE: 2, Work.SCAN: 1}[self]


@dataclass(frozen=True, order=True)
class Relation:
    """A relation a statement names: ``schema`` is None when it is unqualified (then it is
    the target's own schema, first on the migration's ``search_path``)."""

    name: str
    schema: str | None = None
    kind: str = "table"
    """``table``, ``index``, ``view``, ``materialized view``, ``sequence``."""

    @property
    def display(self) -> str:
        name = quote_ident(self.name)
        return f"{quote_ident(self.schema)}.{name}" if self.schema else name


@dataclass(frozen=True)
class Effect:
    """What one statement does to one relation."""

    relation: Relation
    lock: Lock | None
    """The mode it takes; None for a relation the statement creates (no lock anyone waits
    for)."""
    work: Work | None = None
    why: tuple[str, ...] = ()
    """Short reasons, e.g. ``ADD COLUMN "token" with the volatile default gen_random_uuid()``."""
    created: bool = False
    """The relation is created by this statement or an earlier one of the same sequence:
    empty, and nobody uses it yet."""


@dataclass(frozen=True)
class StatementAnalysis:
    """One SQL statement: its kind, the relations it locks, and notes."""

    index: int
    """The position of the string it came from in the sequence analysed."""
    sql: str
    kind: str
    """``ALTER TABLE``, ``CREATE INDEX CONCURRENTLY``, ``UPDATE``, ..."""
    effects: tuple[Effect, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    """PostgreSQL's parser rejected the statement (it is shown, not analysed)."""

    @property
    def strongest(self) -> Lock | None:
        """The strongest lock the statement takes on an existing relation."""
        locks = [e.lock for e in self.effects if e.lock is not None and not e.created]
        return max(locks) if locks else None


def analyze_statements(statements: Sequence[str]) -> list[StatementAnalysis]:
    """Every statement in ``statements``, in order (each string may hold several)."""
    analyzer = _Analyzer()
    result: list[StatementAnalysis] = []
    for index, text in enumerate(statements):
        result.extend(analyzer.analyze(index, text))
    return result


# --- the analyzer ------------------------------------------------------------------------


RELOPTIONS_SHARE_UPDATE_EXCLUSIVE = frozenset({
    "fillfactor", "toast_tuple_target", "parallel_workers", "vacuum_index_cleanup",
    "vacuum_truncate", "log_autovacuum_min_duration", "autovacuum_enabled",
})
"""Storage parameters ``ALTER TABLE ... SET (...)`` changes under SHARE UPDATE EXCLUSIVE
(``AlterTableGetRelOptionsLockLevel``); so do every ``autovacuum_*`` and
``toast.autovacuum_*`` one. Any other takes ACCESS EXCLUSIVE."""

_OBJECT_KINDS = {
    ObjectType.OBJECT_TABLE: "table",
    ObjectType.OBJECT_INDEX: "index",
    ObjectType.OBJECT_VIEW: "view",
    ObjectType.OBJECT_MATVIEW: "materialized view",
    ObjectType.OBJECT_SEQUENCE: "sequence",
    ObjectType.OBJECT_FOREIGN_TABLE: "foreign table",
}


@dataclass
class _Statement:
    """Effects collected for one statement, merged per relation."""

    kind: str
    effects: dict[Relation, Effect] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, relation: Relation, lock: Lock | None, work: Work | None = None,
            why: str | None = None, *, created: bool = False) -> None:
        previous = self.effects.get(relation)
        reasons = (why,) if why else ()
        if previous is None:
            self.effects[relation] = Effect(relation, lock, work, reasons, created)
            return
        locks = [x for x in (previous.lock, lock) if x is not None]
        works = [x for x in (previous.work, work) if x is not None]
        self.effects[relation] = Effect(
            relation, max(locks) if locks else None,
            max(works, key=lambda w: w.weight) if works else None,
            previous.why + tuple(r for r in reasons if r not in previous.why),
            previous.created or created)

    def add_reads(self, node: object, target: Relation, why: str | None = None) -> None:
        """What the query parts ``node`` read, besides the statement's own ``target``."""
        for source in _range_vars(node):
            if source != target:
                self.add(source, Lock.ACCESS_SHARE, None, why)


_ONE_RELATION: dict[str, tuple[str, str, Lock]] = {
    "CreateTrigStmt": ("CREATE TRIGGER", "relation", Lock.SHARE_ROW_EXCLUSIVE),
    "RuleStmt": ("CREATE RULE", "relation", Lock.ACCESS_EXCLUSIVE),
    "CreatePolicyStmt": ("CREATE POLICY", "table", Lock.ACCESS_EXCLUSIVE),
    "AlterPolicyStmt": ("ALTER POLICY", "table", Lock.ACCESS_EXCLUSIVE),
}
"""Statements that lock one relation and do nothing else a plan shows: the statement's
kind, the node's attribute naming the relation, the lock."""


@dataclass
class _Analyzer:
    """Walks the statements in order, remembering what they created."""

    created: set[tuple[str | None, str]] = field(default_factory=set)
    """(schema, name) of relations created so far (lowercase; schema None: unqualified)."""
    not_valid_keys: dict[tuple[str, str], Relation] = field(default_factory=dict)
    """(table, constraint) -> referenced table, for foreign keys added NOT VALID."""

    def analyze(self, index: int, text: str) -> Iterator[StatementAnalysis]:
        try:
            raw_statements = parse_sql(text)
        except ParseError as error:
            yield StatementAnalysis(index, text.strip(), "unparsable", error=str(error))
            return
        for raw in raw_statements:
            end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(text)
            sql = text[raw.stmt_location:end].strip()
            found = self._statement(raw.stmt)
            effects = tuple(
                replace(e, created=e.created or self._is_created(e.relation))
                for e in found.effects.values())
            yield StatementAnalysis(index, sql, found.kind, effects, tuple(found.notes))

    # -- bookkeeping -----------------------------------------------------------------------

    def _is_created(self, relation: Relation) -> bool:
        name = relation.name.lower()
        schema = relation.schema.lower() if relation.schema else None
        return any(n == name and (schema is None or s is None or s == schema)
                   for s, n in self.created)

    def _remember(self, relation: Relation) -> None:
        schema = relation.schema.lower() if relation.schema else None
        self.created.add((schema, relation.name.lower()))

    # -- dispatch --------------------------------------------------------------------------

    def _statement(self, node: ast.Node) -> _Statement:
        one = _ONE_RELATION.get(type(node).__name__)
        if one is not None:
            kind, attribute, lock = one
            found = _Statement(kind)
            found.add(_relation(getattr(node, attribute)), lock)
            return found
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is not None:
            return handler(node)
        return _Statement(_generic_kind(node))

    # CREATE ------------------------------------------------------------------------------

    def _CreateStmt(self, node: ast.CreateStmt) -> _Statement:
        table = _relation(node.relation)
        found = _Statement("CREATE TABLE")
        found.add(table, None, why="new table", created=True)
        if node.partbound is not None:
            for parent in node.inhRelations or ():
                found.add(_relation(parent), Lock.ACCESS_EXCLUSIVE,
                          why="CREATE TABLE ... PARTITION OF")
        else:
            for parent in node.inhRelations or ():
                found.add(_relation(parent), Lock.SHARE_UPDATE_EXCLUSIVE,
                          why="CREATE TABLE ... INHERITS")
        for element in node.tableElts or ():
            if isinstance(element, ast.TableLikeClause):
                found.add(_relation(element.relation), Lock.ACCESS_SHARE,
                          why="CREATE TABLE ... (LIKE ...)")
        for constraint in _constraints_of(node.tableElts or ()):
            if constraint.contype == ConstrType.CONSTR_FOREIGN and constraint.pktable:
                found.add(_relation(constraint.pktable), Lock.SHARE_ROW_EXCLUSIVE,
                          why=f"referenced by a foreign key of new table {table.display}")
        self._remember(table)
        return found

    def _CreateTableAsStmt(self, node: ast.CreateTableAsStmt) -> _Statement:
        kind = ("CREATE MATERIALIZED VIEW" if node.objtype == ObjectType.OBJECT_MATVIEW
                else "CREATE TABLE AS")
        created = _relation(node.into.rel, _OBJECT_KINDS.get(node.objtype, "table"))
        found = _Statement(kind)
        found.add(created, None, why="new " + created.kind, created=True)
        reads = not node.into.skipData
        for source in _range_vars(node.query):
            found.add(source, Lock.ACCESS_SHARE, Work.SCAN if reads else None,
                      "read to fill the new relation" if reads else None)
        self._remember(created)
        return found

    def _SelectStmt(self, node: ast.SelectStmt) -> _Statement:
        if node.intoClause is not None:
            created = _relation(node.intoClause.rel)
            found = _Statement("SELECT INTO")
            found.add(created, None, why="new table", created=True)
            for source in _range_vars(node, skip=node.intoClause):
                found.add(source, Lock.ACCESS_SHARE, Work.SCAN, "read to fill the new table")
            self._remember(created)
            return found
        found = _Statement("SELECT")
        lock = Lock.ROW_SHARE if node.lockingClause else Lock.ACCESS_SHARE
        for source in _range_vars(node):
            found.add(source, lock, why="SELECT ... FOR UPDATE/SHARE" if node.lockingClause
                      else None)
        return found

    def _ViewStmt(self, node: ast.ViewStmt) -> _Statement:
        view = _relation(node.view, "view")
        found = _Statement("CREATE OR REPLACE VIEW" if node.replace else "CREATE VIEW")
        if node.replace and not self._is_created(view):
            found.add(view, Lock.ACCESS_EXCLUSIVE, why="replaces the view's definition")
        else:
            found.add(view, None, why="new view", created=True)
            self._remember(view)
        for source in _range_vars(node.query):
            found.add(source, Lock.ACCESS_SHARE)
        return found

    def _IndexStmt(self, node: ast.IndexStmt) -> _Statement:
        kind = "CREATE " + ("UNIQUE " if node.unique else "") + "INDEX" + (
            " CONCURRENTLY" if node.concurrent else "")
        found = _Statement(kind)
        table = _relation(node.relation)
        name = quote_ident(node.idxname) if node.idxname else "an unnamed index"
        if node.concurrent:
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE, Work.SCAN,
                      f"builds {name} from every row (twice), writes go on")
            found.notes.append("CONCURRENTLY cannot run inside a transaction block: the "
                               "revision needs op.get_context().autocommit_block()")
        else:
            found.add(table, Lock.SHARE, Work.SCAN,
                      f"builds {name} from every row while writes wait")
        if node.idxname:
            self._remember(Relation(node.idxname, table.schema, "index"))
        return found

    def _CreateStatsStmt(self, node: ast.CreateStatsStmt) -> _Statement:
        found = _Statement("CREATE STATISTICS")
        for item in node.relations or ():
            if isinstance(item, ast.RangeVar):
                found.add(_relation(item), Lock.SHARE_UPDATE_EXCLUSIVE)
        return found

    def _CommentStmt(self, node: ast.CommentStmt) -> _Statement:
        found = _Statement(f"COMMENT ON {_object_word(node.objtype)}")
        names = _names(node.object)
        if node.objtype == ObjectType.OBJECT_COLUMN and len(names) >= 2:
            found.add(_dotted(names[:-1]), Lock.SHARE_UPDATE_EXCLUSIVE)
        elif node.objtype in _OBJECT_KINDS and names:
            found.add(_dotted(names, _OBJECT_KINDS[node.objtype]), Lock.SHARE_UPDATE_EXCLUSIVE)
        return found

    # ALTER TABLE --------------------------------------------------------------------------

    def _AlterTableStmt(self, node: ast.AlterTableStmt) -> _Statement:
        kind = _OBJECT_KINDS.get(node.objtype, "table")
        found = _Statement(f"ALTER {kind.upper()}")
        table = _relation(node.relation, kind)
        for cmd in node.cmds or ():
            self._alter_command(found, table, cmd)
        return found

    def _alter_command(self, found: _Statement, table: Relation, cmd: ast.AlterTableCmd
                       ) -> None:
        subtype = cmd.subtype
        column = quote_ident(cmd.name) if cmd.name else ""
        if subtype == AlterTableType.AT_AddColumn:
            self._add_column(found, table, cmd.def_)
        elif subtype == AlterTableType.AT_DropColumn:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None,
                      f"DROP COLUMN {column}: the column is only marked dropped")
        elif subtype == AlterTableType.AT_AlterColumnType:
            type_name = RawStream()(cmd.def_.typeName)
            using = " USING ..." if cmd.def_.raw_default is not None else ""
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.MAY_REWRITE,
                      f"ALTER COLUMN {column} TYPE {type_name}{using}: rewrites the table and "
                      "its indexes unless the old type is binary-coercible to it")
        elif subtype == AlterTableType.AT_SetNotNull:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.SCAN,
                      f"SET NOT NULL on {column}: every row is checked (unless a valid "
                      "CHECK (... IS NOT NULL) proves it, PG 12+)")
        elif subtype == AlterTableType.AT_DropNotNull:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None, f"DROP NOT NULL on {column}")
        elif subtype == AlterTableType.AT_ColumnDefault:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None,
                      f"ALTER COLUMN {column} {'SET' if cmd.def_ is not None else 'DROP'} "
                      "DEFAULT: existing rows are not touched")
        elif subtype in (AlterTableType.AT_AddConstraint, AlterTableType.AT_AddIndexConstraint):
            if isinstance(cmd.def_, ast.Constraint):
                self._add_constraint(found, table, cmd.def_)
            else:
                found.add(table, Lock.ACCESS_EXCLUSIVE)
        elif subtype == AlterTableType.AT_ValidateConstraint:
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE, Work.SCAN,
                      f"VALIDATE CONSTRAINT {column}: every row is checked, reads and writes "
                      "go on")
            referenced = self.not_valid_keys.get((table.name, cmd.name or ""))
            if referenced is not None:
                found.add(referenced, Lock.ROW_SHARE,
                          why=f"referenced by foreign key {column}")
        elif subtype == AlterTableType.AT_DropConstraint:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None, f"DROP CONSTRAINT {column}")
            found.notes.append("dropping a foreign key also locks the table it references "
                               "(ACCESS EXCLUSIVE, to drop its triggers)")
        elif subtype in (AlterTableType.AT_SetStatistics, AlterTableType.AT_SetOptions,
                         AlterTableType.AT_ResetOptions, AlterTableType.AT_ClusterOn,
                         AlterTableType.AT_DropCluster,
                         AlterTableType.AT_DetachPartitionFinalize):
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE, None, _subcommand(subtype))
        elif subtype in (AlterTableType.AT_SetRelOptions, AlterTableType.AT_ResetRelOptions):
            names = [d.defname for d in cmd.def_ or () if isinstance(d, ast.DefElem)]
            weak = all(_weak_reloption(d) for d in cmd.def_ or ()
                       if isinstance(d, ast.DefElem))
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE if weak else Lock.ACCESS_EXCLUSIVE,
                      None, f"storage parameters {', '.join(names)}")
        elif subtype in _TRIGGER_TOGGLES:
            found.add(table, Lock.SHARE_ROW_EXCLUSIVE, None, _subcommand(subtype))
        elif subtype in (AlterTableType.AT_SetLogged, AlterTableType.AT_SetUnLogged,
                         AlterTableType.AT_SetTableSpace, AlterTableType.AT_SetAccessMethod):
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"{_subcommand(subtype)}: the table is copied")
        elif subtype == AlterTableType.AT_SetExpression:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"SET EXPRESSION on {column}: every row is recomputed")
        elif subtype == AlterTableType.AT_AttachPartition:
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE, None, "ATTACH PARTITION")
            found.add(_relation(cmd.def_.name), Lock.ACCESS_EXCLUSIVE, Work.SCAN,
                      "attached: every row is checked against the bound (unless a CHECK "
                      "constraint proves it)")
        elif subtype == AlterTableType.AT_DetachPartition:
            concurrent = bool(cmd.def_.concurrent)
            found.add(table, Lock.SHARE_UPDATE_EXCLUSIVE if concurrent
                      else Lock.ACCESS_EXCLUSIVE, None,
                      "DETACH PARTITION" + (" CONCURRENTLY" if concurrent else ""))
            found.add(_relation(cmd.def_.name), Lock.SHARE_UPDATE_EXCLUSIVE if concurrent
                      else Lock.ACCESS_EXCLUSIVE, None, "detached")
        else:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None, _subcommand(subtype))

    def _add_column(self, found: _Statement, table: Relation, column: ast.ColumnDef) -> None:
        name = quote_ident(column.colname)
        constraints: Sequence[ast.Constraint] = column.constraints or ()
        kinds = {c.contype for c in constraints}
        default = next((c.raw_expr for c in constraints
                        if c.contype == ConstrType.CONSTR_DEFAULT), None)
        if isinstance(default, ast.A_Const) and default.isnull:
            default = None
        type_name = _type_name(column.typeName)
        volatile = volatile_call(default) if default is not None else None
        if volatile is not None:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"ADD COLUMN {name} with the volatile default {volatile}(): computed "
                      "for every row")
        elif type_name in SERIAL_TYPES:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"ADD COLUMN {name} {type_name}: nextval() for every row")
        elif ConstrType.CONSTR_IDENTITY in kinds:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"ADD COLUMN {name} GENERATED AS IDENTITY: a value for every row")
        elif ConstrType.CONSTR_GENERATED in kinds:
            found.add(table, Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      f"ADD COLUMN {name} GENERATED ALWAYS AS (...) STORED: computed for "
                      "every row")
        elif default is not None:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None,
                      f"ADD COLUMN {name} with a non-volatile default: kept in the catalog, "
                      "no rewrite (PG 11+)")
        else:
            found.add(table, Lock.ACCESS_EXCLUSIVE, None, f"ADD COLUMN {name}")
        not_null = column.is_not_null or bool(
            kinds & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY})
        generated = bool(kinds & {ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED})
        if not_null and default is None and not generated and type_name not in SERIAL_TYPES:
            found.notes.append(f"ADD COLUMN {name} NOT NULL without a default fails on a "
                               "table that has rows")
        for constraint in constraints:
            if constraint.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN,
                                      ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY,
                                      ConstrType.CONSTR_EXCLUSION):
                self._add_constraint(found, table, constraint, column=name)

    def _add_constraint(self, found: _Statement, table: Relation, constraint: ast.Constraint,
                        column: str | None = None) -> None:
        name = quote_ident(constraint.conname) if constraint.conname else None
        on = f" on {column}" if column else ""
        validated = not constraint.skip_validation
        contype = constraint.contype
        if contype == ConstrType.CONSTR_FOREIGN:
            referenced = _relation(constraint.pktable)
            what = f"foreign key {name}" if name else "a foreign key"
            if validated:
                found.add(table, Lock.SHARE_ROW_EXCLUSIVE, Work.SCAN,
                          f"ADD {what}{on}: every row is checked against "
                          f"{referenced.display}")
                found.add(referenced, Lock.SHARE_ROW_EXCLUSIVE, None,
                          f"referenced by {what} of {table.display}")
            else:
                found.add(table, Lock.SHARE_ROW_EXCLUSIVE, None, f"ADD {what}{on} NOT VALID")
                found.add(referenced, Lock.SHARE_ROW_EXCLUSIVE, None,
                          f"referenced by {what} of {table.display}")
                if constraint.conname:
                    self.not_valid_keys[(table.name, constraint.conname)] = referenced
        elif contype == ConstrType.CONSTR_CHECK:
            what = f"CHECK {name}" if name else "a CHECK constraint"
            if validated:
                found.add(table, Lock.ACCESS_EXCLUSIVE, Work.SCAN,
                          f"ADD {what}{on}: every row is checked")
            else:
                found.add(table, Lock.ACCESS_EXCLUSIVE, None, f"ADD {what}{on} NOT VALID")
        elif contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY,
                         ConstrType.CONSTR_EXCLUSION):
            word = {ConstrType.CONSTR_UNIQUE: "UNIQUE", ConstrType.CONSTR_PRIMARY:
                    "PRIMARY KEY", ConstrType.CONSTR_EXCLUSION: "EXCLUDE"}[contype]
            what = f"{word} {name}" if name else word
            if constraint.indexname:
                found.add(table, Lock.ACCESS_EXCLUSIVE, None,
                          f"ADD {what} USING INDEX {quote_ident(constraint.indexname)}")
            else:
                found.add(table, Lock.ACCESS_EXCLUSIVE, Work.SCAN,
                          f"ADD {what}{on}: builds its index from every row while reads "
                          "and writes wait")
        else:
            found.add(table, Lock.ACCESS_EXCLUSIVE)

    # RENAME, DROP, TRUNCATE ------------------------------------------------------------

    def _RenameStmt(self, node: ast.RenameStmt) -> _Statement:
        rename_type = node.renameType
        if rename_type == ObjectType.OBJECT_INDEX:
            found = _Statement("ALTER INDEX ... RENAME")
            found.add(_relation(node.relation, "index"), Lock.SHARE_UPDATE_EXCLUSIVE)
            return found
        if node.relation is None:
            return _Statement(f"ALTER {_object_word(rename_type)} ... RENAME")
        kind = _OBJECT_KINDS.get(node.relationType if rename_type in (
            ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABCONSTRAINT,
            ObjectType.OBJECT_TRIGGER) else rename_type, "table")
        relation = _relation(node.relation, kind)
        if rename_type == ObjectType.OBJECT_COLUMN:
            what = f"RENAME COLUMN {quote_ident(node.subname)} TO {quote_ident(node.newname)}"
        elif rename_type == ObjectType.OBJECT_TABCONSTRAINT:
            what = f"RENAME CONSTRAINT {quote_ident(node.subname)}"
        elif rename_type == ObjectType.OBJECT_TRIGGER:
            what = f"RENAME TRIGGER {quote_ident(node.subname)}"
        else:
            what = f"RENAME TO {quote_ident(node.newname)}"
            if self._is_created(relation):
                self._remember(Relation(node.newname, relation.schema, relation.kind))
        found = _Statement(f"ALTER {kind.upper()} ... RENAME")
        found.add(relation, Lock.ACCESS_EXCLUSIVE, None, what)
        return found

    def _DropStmt(self, node: ast.DropStmt) -> _Statement:
        remove = node.removeType
        word = _object_word(remove)
        concurrent = bool(node.concurrent)
        found = _Statement(f"DROP {word}" + (" CONCURRENTLY" if concurrent else ""))
        objects = [_names(item) for item in node.objects or ()]
        if remove == ObjectType.OBJECT_INDEX:
            for names in objects:
                found.add(_dotted(names, "index"),
                          Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE,
                          None, "its table is locked in the same mode")
        elif remove in _OBJECT_KINDS:
            for names in objects:
                found.add(_dotted(names, _OBJECT_KINDS[remove]), Lock.ACCESS_EXCLUSIVE)
            if remove == ObjectType.OBJECT_TABLE:
                found.notes.append("the tables its foreign keys reference are locked ACCESS "
                                   "EXCLUSIVE too (their triggers are dropped)")
        elif remove in (ObjectType.OBJECT_TRIGGER, ObjectType.OBJECT_RULE,
                        ObjectType.OBJECT_POLICY):
            for names in objects:
                if len(names) >= 2:
                    found.add(_dotted(names[:-1]), Lock.ACCESS_EXCLUSIVE, None,
                              f"DROP {word} {quote_ident(names[-1])}")
        if node.behavior == DropBehavior.DROP_CASCADE:
            found.notes.append("CASCADE also drops whatever depends on it")
        return found

    def _TruncateStmt(self, node: ast.TruncateStmt) -> _Statement:
        found = _Statement("TRUNCATE")
        for relation in node.relations or ():
            found.add(_relation(relation), Lock.ACCESS_EXCLUSIVE, None, "removes every row")
        return found

    def _LockStmt(self, node: ast.LockStmt) -> _Statement:
        lock = Lock(node.mode) if node.mode in Lock._value2member_map_ else (
            Lock.ACCESS_EXCLUSIVE)
        found = _Statement(f"LOCK TABLE IN {lock.label} MODE")
        for relation in node.relations or ():
            found.add(_relation(relation), lock)
        return found

    # Data -------------------------------------------------------------------------------

    def _InsertStmt(self, node: ast.InsertStmt) -> _Statement:
        found = _Statement("INSERT")
        target = _relation(node.relation)
        found.add(target, Lock.ROW_EXCLUSIVE)
        found.add_reads(node.selectStmt, target, "INSERT ... SELECT reads it")
        return found

    def _UpdateStmt(self, node: ast.UpdateStmt) -> _Statement:
        return self._modify("UPDATE", node, "updates every row, each locked until commit")

    def _DeleteStmt(self, node: ast.DeleteStmt) -> _Statement:
        return self._modify("DELETE", node, "deletes every row, each locked until commit")

    def _modify(self, kind: str, node: ast.UpdateStmt | ast.DeleteStmt, everything: str
                ) -> _Statement:
        found = _Statement(kind)
        target = _relation(node.relation)
        if node.whereClause is None:
            found.add(target, Lock.ROW_EXCLUSIVE, Work.SCAN, f"no WHERE: {everything}")
        else:
            found.add(target, Lock.ROW_EXCLUSIVE, None, "the rows matching WHERE")
        found.add_reads((getattr(node, "fromClause", None), getattr(node, "usingClause", None),
                         node.whereClause), target)
        return found

    def _MergeStmt(self, node: ast.MergeStmt) -> _Statement:
        found = _Statement("MERGE")
        target = _relation(node.relation)
        found.add(target, Lock.ROW_EXCLUSIVE)
        found.add_reads(node.sourceRelation, target)
        return found

    # Maintenance -------------------------------------------------------------------------

    def _ReindexStmt(self, node: ast.ReindexStmt) -> _Statement:
        concurrent = any(isinstance(p, ast.DefElem) and p.defname == "concurrently"
                         for p in node.params or ())
        found = _Statement("REINDEX" + (" CONCURRENTLY" if concurrent else ""))
        if node.relation is None:
            found.notes.append("REINDEX of a whole schema or database: every table in it")
            return found
        if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX:
            found.add(_relation(node.relation, "index"),
                      Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE,
                      Work.SCAN, "rebuilt from every row of its table" + (
                          "" if concurrent else "; the table is locked SHARE"))
        else:
            found.add(_relation(node.relation),
                      Lock.SHARE_UPDATE_EXCLUSIVE if concurrent else Lock.SHARE, Work.SCAN,
                      "every index rebuilt from every row")
        return found

    def _ClusterStmt(self, node: ast.ClusterStmt) -> _Statement:
        found = _Statement("CLUSTER")
        if node.relation is not None:
            found.add(_relation(node.relation), Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                      "the table is rewritten in index order")
        return found

    def _VacuumStmt(self, node: ast.VacuumStmt) -> _Statement:
        options = {o.defname for o in node.options or () if isinstance(o, ast.DefElem)}
        if not node.is_vacuumcmd:
            found = _Statement("ANALYZE")
            lock, work, why = Lock.SHARE_UPDATE_EXCLUSIVE, None, "samples rows"
        elif "full" in options:
            found = _Statement("VACUUM FULL")
            lock, work, why = Lock.ACCESS_EXCLUSIVE, Work.REWRITE, "the table is copied"
        else:
            found = _Statement("VACUUM")
            lock, work, why = Lock.SHARE_UPDATE_EXCLUSIVE, Work.SCAN, "reads every page"
        if node.is_vacuumcmd:
            found.notes.append("VACUUM cannot run inside a transaction block")
        for item in node.rels or ():
            if isinstance(item, ast.VacuumRelation) and item.relation is not None:
                found.add(_relation(item.relation), lock, work, why)
        return found

    def _RefreshMatViewStmt(self, node: ast.RefreshMatViewStmt) -> _Statement:
        concurrent = bool(node.concurrent)
        found = _Statement("REFRESH MATERIALIZED VIEW" + (" CONCURRENTLY" if concurrent
                                                          else ""))
        found.add(_relation(node.relation, "materialized view"),
                  Lock.EXCLUSIVE if concurrent else Lock.ACCESS_EXCLUSIVE, Work.REWRITE,
                  "its query runs again and its rows are replaced")
        return found

    def _AlterObjectSchemaStmt(self, node: ast.AlterObjectSchemaStmt
                               ) -> _Statement:
        found = _Statement(f"ALTER {_object_word(node.objectType)} ... SET SCHEMA")
        if node.relation is not None:
            found.add(_relation(node.relation, _OBJECT_KINDS.get(node.objectType, "table")),
                      Lock.ACCESS_EXCLUSIVE, None, f"moved to {quote_ident(node.newschema)}")
        return found

    def _AlterEnumStmt(self, node: ast.AlterEnumStmt) -> _Statement:
        found = _Statement("ALTER TYPE ... ADD VALUE" if node.newVal and not node.oldVal
                           else "ALTER TYPE ... RENAME VALUE")
        if node.newVal and not node.oldVal:
            found.notes.append("the new value cannot be used before the transaction commits")
        return found

    def _AlterDomainStmt(self, node: ast.AlterDomainStmt) -> _Statement:
        found = _Statement("ALTER DOMAIN")
        if node.subtype == "C":  # ADD CONSTRAINT
            found.notes.append("ADD CONSTRAINT on a domain checks every column of that type "
                               "in every table")
        return found

    def _CreateSeqStmt(self, node: ast.CreateSeqStmt) -> _Statement:
        found = _Statement("CREATE SEQUENCE")
        sequence = _relation(node.sequence, "sequence")
        found.add(sequence, None, why="new sequence", created=True)
        self._remember(sequence)
        return found

    def _DoStmt(self, node: ast.DoStmt) -> _Statement:
        found = _Statement("DO")
        found.notes.append("a DO block runs PL/pgSQL: its statements cannot be analysed")
        return found


# --- helpers -------------------------------------------------------------------------------

_TRIGGER_TOGGLES = frozenset({
    AlterTableType.AT_EnableTrig, AlterTableType.AT_EnableAlwaysTrig,
    AlterTableType.AT_EnableReplicaTrig, AlterTableType.AT_DisableTrig,
    AlterTableType.AT_EnableTrigAll, AlterTableType.AT_DisableTrigAll,
    AlterTableType.AT_EnableTrigUser, AlterTableType.AT_DisableTrigUser,
})


def _subcommand(subtype: AlterTableType) -> str:
    """``AT_SetStatistics`` -> ``SET STATISTICS`` (near enough for a reason)."""
    name = subtype.name.removeprefix("AT_")
    words = []
    current = ""
    for char in name:
        if char.isupper() and current:
            words.append(current)
            current = char
        else:
            current += char
    words.append(current)
    return " ".join(words).upper()


def _weak_reloption(option: ast.DefElem) -> bool:
    name = (option.defname or "").lower()
    namespace = (option.defnamespace or "").lower()
    if namespace == "toast":
        return name.startswith("autovacuum_") or name in ("vacuum_index_cleanup",
                                                          "vacuum_truncate")
    return name in RELOPTIONS_SHARE_UPDATE_EXCLUSIVE or name.startswith("autovacuum_")


def _relation(node: ast.RangeVar, kind: str = "table") -> Relation:
    return Relation(node.relname, node.schemaname or None, kind)


def _names(node: object) -> list[str]:
    """The parts of a dotted name in a parse tree (a list of ``String`` nodes)."""
    if isinstance(node, ast.String):
        return [node.sval]
    if isinstance(node, (list, tuple)):
        return [part.sval for part in node if isinstance(part, ast.String)]
    return []


def _dotted(names: Sequence[str], kind: str = "table") -> Relation:
    """``[schema, name]`` or ``[name]`` (a database prefix is ignored)."""
    return Relation(names[-1], names[-2] if len(names) > 1 else None, kind)


def _object_word(object_type: ObjectType) -> str:
    return object_type.name.removeprefix("OBJECT_").replace("_", " ").replace(
        "MATVIEW", "MATERIALIZED VIEW").replace("TABCONSTRAINT", "CONSTRAINT")


_KINDS = {
    "CreateEnumStmt": "CREATE TYPE ... AS ENUM",
    "CompositeTypeStmt": "CREATE TYPE",
    "CreateSeqStmt": "CREATE SEQUENCE",
    "AlterSeqStmt": "ALTER SEQUENCE",
    "VariableSetStmt": "SET",
    "TransactionStmt": "transaction control",
    "CreateFunctionStmt": "CREATE FUNCTION",
    "DefineStmt": "CREATE (type, aggregate, operator, ...)",
}


def _generic_kind(node: ast.Node) -> str:
    """``CreateFunctionStmt`` -> ``CREATE FUNCTION``."""
    if type(node).__name__ in _KINDS:
        return _KINDS[type(node).__name__]
    if isinstance(node, ast.GrantStmt):
        return "GRANT" if node.is_grant else "REVOKE"
    name = type(node).__name__.removesuffix("Stmt")
    words = []
    current = ""
    for char in name:
        if char.isupper() and current and not current.isupper():
            words.append(current)
            current = char
        else:
            current += char
    words.append(current)
    return " ".join(words).upper()


def _constraints_of(elements: Iterable[ast.Node]) -> Iterator[ast.Constraint]:
    for element in elements:
        if isinstance(element, ast.Constraint):
            yield element
        elif isinstance(element, ast.ColumnDef):
            yield from (c for c in element.constraints or () if isinstance(c, ast.Constraint))


def _type_name(type_name: ast.TypeName | None) -> str:
    if type_name is None or not type_name.names:
        return ""
    return type_name.names[-1].sval.lower()


def _range_vars(node: object, skip: object = None) -> list[Relation]:
    """The relations a query reads (``RangeVar`` nodes; CTE names excluded), each once."""
    ctes: set[str] = set()
    found: dict[Relation, None] = {}
    for item in walk(node, skip):
        if isinstance(item, ast.CommonTableExpr) and item.ctename:
            ctes.add(item.ctename)
        elif isinstance(item, ast.RangeVar) and not (
                item.schemaname is None and item.relname in ctes):
            found[_relation(item)] = None
    return [r for r in found if not (r.schema is None and r.name in ctes)]
