"""Where every target stands: read from the databases in bulk, returned as plain data.

For each database: one catalog query and batched reads of the version tables (never one
query per schema, see :mod:`alembic_fleet.catalog.versions`), then the ledger only for the
targets that are not at head (so a no-op run reads nothing more). A database that cannot be
reached is recorded in ``unreachable``; its targets are reported as such, and the others go
on. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from alembic_fleet.catalog.versions import read_versions
from alembic_fleet.exceptions import DatabaseUnavailableError, FleetError
from alembic_fleet.ledger import Ledger
from alembic_fleet.model.status import TargetState, TargetStatus, classify
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.redact import display, first_line
from alembic_fleet.workspace import Workspace


@dataclass(frozen=True)
class Inventory:
    """The selected targets' statuses (in selection order), orphan schemas, and the
    databases that could not be read (key -> reason)."""

    statuses: tuple[TargetStatus, ...]
    orphans: tuple[TargetStatus, ...] = ()
    unreachable: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """What could not be read (a version table, the ledger), each saying what and why."""
    unloadable: Mapping[str, str] = field(default_factory=dict)
    """Services whose scripts cannot be loaded (service -> why): their targets are left
    out, the others are reported."""
    mirrored: frozenset[Target] = frozenset()
    """Targets whose revisions came from a trustworthy version mirror row
    (``version_mirror = true``): their trigger is in place."""

    @property
    def everything(self) -> tuple[TargetStatus, ...]:
        """What ``fleet status`` lists: the targets, then the orphans."""
        return self.statuses + self.orphans

    @property
    def up_to_date(self) -> bool:
        """True when every target is at head (orphans are not targets)."""
        return not self.unloadable and all(s.state is TargetState.AT_HEAD
                                           for s in self.statuses)


def read_inventory(
    workspace: Workspace, targets: Sequence[Target],
    destinations: Mapping[str, tuple[str, ...]] | None = None, *, orphans: bool = False,
) -> Inventory:
    """Where each target stands against ``destinations`` (default: each service's heads).

    With ``orphans``, schemas that a selected service's template matches but whose tenant is
    not configured are listed too. Raises :class:`DatabaseUnavailableError` only when no
    database at all can be read.
    """
    by_database: dict[str, list[Target]] = {}
    for target in targets:
        by_database.setdefault(target.database.key, []).append(target)
    current: dict[Target, tuple[str, ...] | None] = {}
    found_orphans: list[TargetStatus] = []
    errors: dict[str, DatabaseUnavailableError] = {}
    warnings: list[str] = []
    broken: set[Target] = set()
    mirrored: set[Target] = set()
    for key, group in by_database.items():
        database = group[0].database
        unreadable: dict[tuple[str, str], str] = {}
        from_mirror: set[tuple[str, str]] = set()
        try:
            found = _read_database(workspace, database, group, orphans, unreadable,
                                   from_mirror)
        except DatabaseUnavailableError as exc:
            errors[key] = exc
            continue
        for (schema, table), reason in sorted(unreadable.items()):
            warnings.append(f"cannot read {schema}.{table} in {display(database)}: {reason}")
        tables = _tables(workspace, group)
        for target in group:
            pair = (target.schema, tables[target.service])
            current[target] = found.get(pair)
            if unreadable and pair in unreadable:
                broken.add(target)
            if pair in from_mirror:
                mirrored.add(target)
        if orphans:
            found_orphans.extend(_orphans(workspace, found, group, database))
    if errors and len(errors) == len(by_database):
        raise next(iter(errors.values()))  # nothing reachable: a usage-level error (2)
    statuses = []
    graphs = {name: workspace.graph(name) for name in dict.fromkeys(t.service for t in targets)}
    for target in targets:
        destination = (destinations or {}).get(target.service)
        graph = graphs[target.service]
        if target in broken or (errors and target.database.key in errors):
            wanted = destination or graph.heads
            state = TargetState.FAILED if target in broken else TargetState.UNREACHABLE
            statuses.append(TargetStatus(target, (), wanted, graph.pending((), wanted), state))
        else:
            statuses.append(classify(target, current[target], graph, destination))
    unreachable = {k: e.message for k, e in errors.items()}
    marked = _mark_failed(workspace, statuses, unreachable, warnings)
    return Inventory(tuple(marked), tuple(found_orphans), unreachable, tuple(warnings),
                     mirrored=frozenset(mirrored))


def _tables(workspace: Workspace, targets: Sequence[Target]) -> dict[str, str]:
    """Each service's version table, looked up once (not once per target)."""
    return {name: workspace.service(name).version_table
            for name in dict.fromkeys(t.service for t in targets)}


def _read_database(workspace: Workspace, database: Database, group: Sequence[Target],
                   orphans: bool, unreadable: dict[tuple[str, str], str],
                   mirrored: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Every version table of ``group`` (and of the templates, for orphans) in one
    database. Connecting may fail (unreachable); a read that fails is said as such."""
    services = [workspace.service(n) for n in dict.fromkeys(t.service for t in group)]
    tables = _tables(workspace, group)
    wanted = {(t.schema, tables[t.service]) for t in group}
    templates = [(s.schema, s.version_table) for s in services if s.per_tenant] if orphans \
        else []
    with workspace.databases.connect(database) as connection:
        try:
            config = workspace.config
            found = read_versions(connection, wanted, templates,
                                  connect=lambda: workspace.databases.connect(database),
                                  unreadable=unreadable,
                                  mirror=config.ledger_schema if config.version_mirror
                                  else None, lock_wait=config.lock_wait, mirrored=mirrored)
        except DBAPIError as exc:
            raise FleetError(f"cannot read the catalog of {display(database)}: "
                             f"{first_line(exc)}",
                             hint="check that this user may read pg_catalog and the "
                             "schemas' version tables") from None
        connection.rollback()
    return found


def _mark_failed(workspace: Workspace, statuses: list[TargetStatus],
                 unreachable: Mapping[str, str], warnings: list[str]) -> list[TargetStatus]:
    """Targets not at head whose last recorded run failed are in state ``failed``.

    Reads the ledger only when something is not at head: the no-op path stays free. A
    ledger that cannot be read (a lock held on it, a permission) is a warning, not an
    error: the version tables, not the ledger, say where a target stands.
    """
    if not workspace.config.ledger:
        return statuses
    behind = [s for s in statuses if s.state in (TargetState.BEHIND, TargetState.MISSING)
              and s.target.database.key not in unreachable]
    by_database: dict[str, list[TargetStatus]] = {}
    for status in behind:
        by_database.setdefault(status.target.database.key, []).append(status)
    failed: set[tuple[str, str, str]] = set()
    ledger = Ledger(workspace.config.ledger_schema, workspace.config.lock_timeout)
    for group in by_database.values():
        database = group[0].target.database
        try:
            with workspace.databases.connect(database) as connection:
                found = ledger.failed_targets(
                    connection, [(s.target.service, s.target.schema) for s in group])
        except DBAPIError as exc:
            warnings.append(f"cannot read the ledger in {display(database)}: "
                            f"{first_line(exc)}; targets whose "
                            "last run failed are shown as behind")
            continue
        failed.update((database.key, svc, schema) for svc, schema in found)
    return [
        TargetStatus(s.target, s.current, s.head, s.pending, TargetState.FAILED)
        if (s.target.database.key, s.target.service, s.target.schema) in failed else s
        for s in statuses
    ]


def _orphans(workspace: Workspace, found: Mapping[tuple[str, str], tuple[str, ...]],
             group: Sequence[Target], database: Database) -> list[TargetStatus]:
    """Found version tables that belong to no configured target: schemas that a selected
    service's template renders for a tenant that is not configured (the schema namespace
    decides; a schema anything configured owns is never an orphan)."""
    tables = _tables(workspace, group)
    wanted = {(t.schema, tables[t.service]) for t in group}
    selected = {t.service for t in group}
    namespace = workspace.config.namespace
    result = []
    for schema, table in sorted(set(found) - wanted):
        owner = namespace.template_owner(database.key, schema)
        if owner is None or owner[0] not in selected:
            continue
        service, tenant = owner
        if tenant in workspace.config.tenants or table != _table_of(workspace, service):
            continue
        target = Target(service, tenant, schema, database)
        result.append(TargetStatus(target, found[(schema, table)],
                                   workspace.graph(service).heads, 0, TargetState.ORPHAN))
    return result


def _table_of(workspace: Workspace, service: str) -> str:
    return workspace.service(service).version_table
