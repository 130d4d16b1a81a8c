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
from alembic_fleet.databases import display, explain_connection_error
from alembic_fleet.exceptions import DatabaseUnavailableError
from alembic_fleet.ledger import Ledger
from alembic_fleet.model.identifiers import split_schema
from alembic_fleet.model.status import TargetState, TargetStatus, classify
from alembic_fleet.model.targets import Database, Service, Target
from alembic_fleet.workspace import Workspace


@dataclass(frozen=True)
class Inventory:
    """The selected targets' statuses (in selection order), orphan schemas, and the
    databases that could not be read (key -> reason)."""

    statuses: tuple[TargetStatus, ...]
    orphans: tuple[TargetStatus, ...] = ()
    unreachable: Mapping[str, str] = field(default_factory=dict)

    @property
    def everything(self) -> tuple[TargetStatus, ...]:
        """What ``fleet status`` lists: the targets, then the orphans."""
        return self.statuses + self.orphans

    @property
    def up_to_date(self) -> bool:
        """True when every target is at head (orphans are not targets)."""
        return all(s.state is TargetState.AT_HEAD for s in self.statuses)


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
    for key, group in by_database.items():
        database = group[0].database
        try:
            found = _read_database(workspace, database, group, orphans)
        except DatabaseUnavailableError as exc:
            errors[key] = exc
            continue
        for target in group:
            current[target] = found.get((target.schema, _table(workspace, target)))
        if orphans:
            found_orphans.extend(_orphans(workspace, found, group, database))
    if errors and len(errors) == len(by_database):
        raise next(iter(errors.values()))  # nothing reachable: a usage-level error (2)
    statuses = []
    for target in targets:
        destination = (destinations or {}).get(target.service)
        graph = workspace.graph(target.service)
        if target.database.key in errors:
            wanted = destination or graph.heads
            statuses.append(TargetStatus(target, (), wanted, graph.pending((), wanted),
                                         TargetState.FAILED))
        else:
            statuses.append(classify(target, current[target], graph, destination))
    unreachable = {k: e.message for k, e in errors.items()}
    return Inventory(tuple(_mark_failed(workspace, statuses, unreachable)),
                     tuple(found_orphans), unreachable)


def _table(workspace: Workspace, target: Target) -> str:
    return workspace.service(target.service).version_table


def _read_database(workspace: Workspace, database: Database, group: Sequence[Target],
                   orphans: bool) -> dict[tuple[str, str], tuple[str, ...]]:
    services = [workspace.service(n) for n in dict.fromkeys(t.service for t in group)]
    wanted = {(t.schema, _table(workspace, t)) for t in group}
    templates = [(s.schema, s.version_table) for s in services if s.per_tenant] if orphans \
        else []
    with workspace.databases.connect(database) as connection:
        try:
            found = read_versions(connection, wanted, templates,
                                  connect=lambda: workspace.databases.connect(database))
        except DBAPIError as exc:
            raise explain_connection_error(exc, display(database)) from None
        connection.rollback()
    return found


def _mark_failed(workspace: Workspace, statuses: list[TargetStatus],
                 unreachable: Mapping[str, str]) -> list[TargetStatus]:
    """Targets not at head whose last recorded run failed are in state ``failed``.

    Reads the ledger only when something is not at head: the no-op path stays free.
    """
    if not workspace.config.ledger:
        return statuses
    behind = [s for s in statuses if s.state in (TargetState.BEHIND, TargetState.MISSING)
              and s.target.database.key not in unreachable]
    by_database: dict[str, list[TargetStatus]] = {}
    for status in behind:
        by_database.setdefault(status.target.database.key, []).append(status)
    failed: set[tuple[str, str, str]] = set()
    ledger = Ledger(workspace.config.ledger_schema)
    for group in by_database.values():
        database = group[0].target.database
        with workspace.databases.connect(database) as connection:
            found = ledger.failed_targets(
                connection, [(s.target.service, s.target.schema) for s in group])
        failed.update((database.key, svc, schema) for svc, schema in found)
    return [
        TargetStatus(s.target, s.current, s.head, s.pending, TargetState.FAILED)
        if (s.target.database.key, s.target.service, s.target.schema) in failed else s
        for s in statuses
    ]


def _orphans(workspace: Workspace, found: Mapping[tuple[str, str], tuple[str, ...]],
             group: Sequence[Target], database: Database) -> list[TargetStatus]:
    """Found version tables that belong to no configured target."""
    wanted = {(t.schema, _table(workspace, t)) for t in group}
    services: list[Service] = [workspace.service(n)
                               for n in dict.fromkeys(t.service for t in group)]
    configured = set(workspace.config.tenants)
    result = []
    for schema, table in sorted(set(found) - wanted):
        for service in services:
            tenant = split_schema(service.schema, schema)
            if (tenant is not None and table == service.version_table
                    and tenant not in configured):
                target = Target(service.name, tenant, schema, database)
                heads = workspace.graph(service.name).heads
                result.append(TargetStatus(target, found[(schema, table)], heads, 0,
                                           TargetState.ORPHAN))
                break
    return result
