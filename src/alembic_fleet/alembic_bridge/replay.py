"""Render each revision once, replay its SQL on every tenant.

Every tenant of a service runs the same revisions. Running them through Alembic online costs
about 20 ms of Python per target for 15 revisions (building ``Table`` objects and compiling
DDL) on top of the database's own work, which dominates a full migration of thousands of
tenants. So, for a revision whose ``upgrade()`` only issues ``op`` operations, fleet renders
the statements once per process (Alembic's offline mode, as ``--sql`` does) and replays them
on each target's connection, inside the same one-transaction-per-target frame: schema
created, ``SET LOCAL search_path`` (the schema, then the service's shared schemas), the
baseline when the schema was created here, the statements, the version row, commit.

A revision that may look at the database while upgrading (``op.get_bind()``,
``get_context()``, ``inspect``, batch mode, ``autocommit_block``, ...) or says
``fleet_replay = False`` is never replayed, nor is any service whose env.py passes options
that change how migrations run (``transaction_per_migration``, another version table, ...):
those go through Alembic online as before. ``FLEET_REPLAY=0`` turns replay off entirely.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic_fleet.alembic_bridge import baseline as baselines
from alembic_fleet.alembic_bridge.failures import ReplayFailed
from alembic_fleet.model.identifiers import quote_ident, search_path_value
from alembic_fleet.model.sql_text import skeleton
from alembic_fleet.model.targets import Baseline, Service

DYNAMIC = re.compile(
    r"get_bind|get_context|migration_context|inspect\s*\(|batch_alter_table|run_async"
    r"|autocommit_block|\.bind\b|reflect|fleet_replay\s*=\s*False"
)
"""Source patterns of a revision that may depend on the database's state while upgrading."""

SAFE_OPTIONS = frozenset({
    "target_metadata", "include_schemas", "include_name", "include_object", "compare_type",
    "compare_server_default", "render_as_batch", "process_revision_directives",
    "render_item", "user_module_prefix", "include_symbol", "sqlalchemy_module_prefix",
    "alembic_module_prefix",
})
"""env.py ``configure`` options that do not change what an upgrade executes."""

_TERMINATOR = ";\n\n"


class _Statements:
    """An output buffer that keeps each statement Alembic writes in offline mode."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def write(self, text: str) -> None:
        statement = text[: -len(_TERMINATOR)] if text.endswith(_TERMINATOR) else text
        if statement.strip():
            self.items.append(statement.strip())

    def flush(self) -> None:
        pass


def render_upgrade(module: Any, path: str, target_metadata: Any = None
                   ) -> tuple[str, ...] | None:
    """The statements of ``module.upgrade()``, or None when it must run online.

    The revision is rendered twice: a revision whose SQL differs between two renderings
    (``uuid4()``, ``now()``, a random token computed in Python, whatever an imported helper
    does) would give every tenant the same value if replayed, so it runs online, once per
    tenant, as plain Alembic would run it.
    """
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    if DYNAMIC.search(source):
        return None
    try:
        first = render_statements(module.upgrade, target_metadata)
        second = render_statements(module.upgrade, target_metadata)
    except Exception:  # anything offline mode cannot render runs online instead
        return None
    if first != second or any(ENDS_TRANSACTION.search(skeleton(sql)) for sql in first):
        return None
    return first


ENDS_TRANSACTION = re.compile(
    r"(?i)(?:\A|;)\s*(?:COMMIT|END|ROLLBACK|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE"
    r"|PREPARE\s+TRANSACTION)\b")
"""A rendered statement (its :func:`.skeleton`: comments and literals out) that ends or
opens a transaction itself (``op.execute("COMMIT")``, in any letter case): replayed inside
the target's one transaction, a ``ROLLBACK`` would drop the DDL before it while the version
row, written in the transaction the driver opens next, said head. Such a revision runs
through Alembic online, as plain Alembic runs it. (A procedure's body between dollar quotes
is not read.)"""


def _mixable(path: str) -> bool:
    """Whether a revision that must run online may run inside a mixed plan's transaction
    (see :data:`MIXING_BREAKERS`)."""
    try:
        return not MIXING_BREAKERS.search(Path(path).read_text(encoding="utf-8"))
    except OSError:
        return False


def render_statements(function: Any, target_metadata: Any = None) -> tuple[str, ...]:
    """The SQL statements ``function`` (a revision's upgrade or downgrade) emits offline.

    ``target_metadata`` is the env.py's: its ``naming_convention`` names the constraints
    an operation creates (``ck_t__positive``), exactly as online Alembic names them.
    Raises whatever the function raises when it needs a live database.
    """
    statements, error = render_until_error(function, target_metadata)
    if error is not None:
        raise error
    return statements


def render_until_error(function: Any, target_metadata: Any = None
                       ) -> tuple[tuple[str, ...], Exception | None]:
    """The statements ``function`` emits offline up to the first exception, and that
    exception (None when it ran to the end).

    In offline mode ``op.get_bind()`` is a mock connection: a statement executed on it is
    rendered like ``op.execute``, but nothing can be read back (``.scalar()`` is called on
    None, ``inspect()`` fails). What was emitted before such a read is still the revision's
    SQL; what comes after depends on the database and cannot be known offline.
    """
    from alembic.operations import Operations  # only when something is rendered
    from alembic.runtime.migration import MigrationContext

    buffer = _Statements()
    opts: dict[str, Any] = {"as_sql": True, "output_buffer": buffer, "literal_binds": True}
    if target_metadata is not None:
        opts["target_metadata"] = target_metadata
    context = MigrationContext.configure(
        dialect_name="postgresql",
        dialect_opts={"paramstyle": "named"},
        opts=opts,
    )
    try:
        with Operations.context(context):
            function()
    except Exception as exc:  # whatever needs a live database; the caller decides
        return tuple(buffer.items), exc
    return tuple(buffer.items), None


MIXING_BREAKERS = re.compile(r"(?i)autocommit_block|\b(?:commit|rollback)\b")
"""A revision that ends the transaction itself cannot run inside a mixed plan's single
transaction (Alembic refuses ``autocommit_block`` in a transaction it did not begin)."""


@dataclass
class ReplayPlan:
    """The statements from one revision to another, for one service, revision by revision.

    A revision whose statements are None runs online (Alembic, on the target's connection)
    at its place, inside the same transaction: a *mixed* plan. Plain Alembic would run the
    same revisions in the same order in one transaction, so the result is the same."""

    start: str | None
    destination: str
    revisions: tuple[tuple[str, tuple[str, ...] | None], ...]

    @property
    def mixed(self) -> bool:
        return any(statements is None for _, statements in self.revisions)

    def groups(self) -> list[tuple[bool, list[tuple[str, tuple[str, ...] | None]]]]:
        """Consecutive revisions that run the same way: ``(online, revisions)``."""
        groups: list[tuple[bool, list[tuple[str, tuple[str, ...] | None]]]] = []
        for revision, statements in self.revisions:
            online = statements is None
            if groups and groups[-1][0] == online:
                groups[-1][1].append((revision, statements))
            else:
                groups.append((online, [(revision, statements)]))
        return groups


@dataclass
class Replayer:
    """Renders a service's revisions once and replays them on targets."""

    version_table: str
    target_metadata: Any = None
    """The env.py's ``target_metadata`` (its naming convention shapes rendered names)."""
    search_path: tuple[str, ...] = ()
    """Shared schemas searched after the target's own (as the env helper sets them)."""
    baseline: Baseline | None = None
    """Applied to a schema that does not exist yet, before the first statement."""
    mixing: bool = field(default_factory=lambda: os.environ.get("FLEET_MIXED", "1") != "0")
    """Whether plans may mix replayed and online revisions (``FLEET_MIXED=0``: all or
    nothing, as before)."""
    _rendered: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    _plans: dict[tuple[str | None, str], ReplayPlan | None] = field(default_factory=dict)

    @classmethod
    def for_service(cls, service: Service, target_metadata: Any = None) -> Replayer:
        """A replayer that frames each target exactly as the env helper would."""
        return cls(service.version_table, target_metadata, service.search_path,
                   service.baseline)

    def renders_identically(self, revision: str) -> bool:
        """Whether ``revision`` was rendered for replay (twice, to the same SQL)."""
        return self._rendered.get(revision) is not None

    def plan(self, script: Any, current: tuple[str, ...], destination: str
             ) -> ReplayPlan | None:
        """A replay plan from ``current`` to ``destination``, or None to run online.

        Only straight lines are replayed: one current revision, each revision's only parent
        the previous one, the first's the current revision. A branch point (two heads to
        reach), a merge, or a destination that does not descend from the current revision
        runs online, where Alembic keeps every head in the version table.
        """
        if os.environ.get("FLEET_REPLAY", "1") == "0" or len(current) > 1:
            return None
        start = current[0] if current else None
        key = (start, destination)
        if key not in self._plans:
            self._plans[key] = self._make_plan(script, start, destination)
        return self._plans[key]

    def _make_plan(self, script: Any, start: str | None, destination: str) -> ReplayPlan | None:
        steps = script._upgrade_revs(destination, start)
        revisions: list[tuple[str, tuple[str, ...] | None]] = []
        online_paths = []
        previous = start
        for step in steps:
            revision = step.revision
            parents = tuple(revision._all_down_revisions)
            if not step.is_upgrade or parents != ((previous,) if previous else ()):
                return None
            previous = revision.revision
            if revision.revision not in self._rendered:
                self._rendered[revision.revision] = render_upgrade(
                    revision.module, revision.path, self.target_metadata)
            rendered = self._rendered[revision.revision]
            if rendered is None:
                online_paths.append(revision.path)
            revisions.append((revision.revision, rendered))
        if len(online_paths) == len(revisions):  # nothing to replay (or nothing at all)
            return None
        if online_paths and not (self.mixing and all(map(_mixable, online_paths))):
            return None
        return ReplayPlan(start, revisions[-1][0], tuple(revisions))

    def run(self, connection: Any, schema: str, plan: ReplayPlan, table_exists: bool,
            listener: Any = None, before_statement: Any = None) -> None:
        """Apply a plan without online revisions to ``schema`` in one transaction on a
        SQLAlchemy connection, framed as the env helper frames a migration; ``listener`` is
        told of each revision inside it, then just before the commit;
        ``before_statement(cursor, sql)`` runs before each replayed statement.

        A mixed plan runs inside Alembic's own frame instead (:func:`.runner.upgrade_mixed`
        calls :meth:`apply`), so that its online stretches share one Alembic set-up."""
        quoted = quote_ident(schema)
        with connection.begin():
            cursor = connection.connection.dbapi_connection.cursor()
            fresh = self.baseline is not None and not baselines.schema_exists(connection,
                                                                                schema)
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            cursor.execute(f"SET LOCAL search_path TO "
                           f"{search_path_value(schema, self.search_path)}")
            if fresh and self.baseline is not None:
                baselines.apply(connection, self.baseline)
            self.apply(connection, schema, plan, table_exists, listener, before_statement)
            if listener is not None:
                listener.before_commit(connection)

    def apply(self, connection: Any, schema: str, plan: ReplayPlan, table_exists: bool,
              listener: Any = None, before_statement: Any = None, online: Any = None) -> None:
        """The plan's revisions, in order, in the caller's transaction (the schema exists,
        the search path is set): replayed stretches through the DBAPI cursor, online ones
        by ``online(revision)``, which runs Alembic up to ``revision``."""
        version = f"{quote_ident(schema)}.{quote_ident(self.version_table)}"
        # The DBAPI cursor of whichever driver the service uses; statements carry no
        # parameters (values are rendered, revision ids are checked safe by the graph).
        cursor = connection.connection.dbapi_connection.cursor()
        if not table_exists:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {version} (version_num VARCHAR(32) NOT NULL, "
                f"CONSTRAINT {quote_ident(self.version_table + '_pkc')} "
                "PRIMARY KEY (version_num))"
            )
        current = plan.start
        for is_online, group in plan.groups():
            last = group[-1][0]
            if is_online:
                if online is None:
                    raise ReplayFailed(group[0][0], RuntimeError(
                        "this revision must run online, and no online runner was given"))
                online(last)  # Alembic moves the version row itself
                cursor = connection.connection.dbapi_connection.cursor()
                current = last
                continue
            started = getattr(listener, "revision_started", None)
            for revision, statements in group:
                if started is not None:
                    started(revision)
                try:
                    for statement in statements or ():
                        if before_statement is not None:
                            before_statement(cursor, statement)
                        cursor.execute(statement)
                except Exception as exc:
                    raise ReplayFailed(revision, exc) from exc
            try:  # the statement hook may find the transaction no longer the one begun
                self._move_version(cursor, schema, version, current, last, before_statement)
            except ReplayFailed:
                raise
            except Exception as exc:
                raise ReplayFailed(last, exc) from exc
            current = last
            if listener is not None:
                for revision, _ in group:
                    listener.revision_applied(connection, revision)

    @staticmethod
    def _move_version(cursor: Any, schema: str, version: str, current: str | None,
                      new: str, before_statement: Any = None) -> None:
        """The version row from ``current`` (None: an empty table) to ``new``, each
        statement through ``before_statement`` as the replayed ones are."""
        def execute(statement: str) -> None:
            if before_statement is not None:
                before_statement(cursor, statement)
            cursor.execute(statement)

        if current is None:
            execute(f"DELETE FROM {version}")
            execute(f"INSERT INTO {version} (version_num) VALUES ({_literal(new)})")
            return
        execute(f"UPDATE {version} SET version_num = {_literal(new)}"
                f" WHERE version_num = {_literal(current)}")
        if cursor.rowcount != 1:
            raise ReplayFailed(None, RuntimeError(
                f"{schema} is no longer at {current}: another runner changed it"))


def _literal(value: str) -> str:
    """A SQL string literal (no placeholders: their syntax differs between drivers)."""
    return "'" + value.replace("'", "''") + "'"


