"""``fleet plan`` over an open workspace: from the inventory to a :class:`PlanReport`.

1. the inventory, read as ``fleet migrate`` reads it (one catalog query and batched version
   reads per database): which targets are behind, and from where;
2. per service, its targets grouped by current revision (:func:`.report.starting_points`);
   each pending revision rendered offline once (:mod:`.render`) and its statements
   analysed in the order each group runs them (:mod:`.locks`); ``fleet check``'s
   unsafe-operation rules on the same SQL;
3. one catalog query per database for the size of every relation a statement locks, in
   every schema that will run it (:mod:`alembic_fleet.catalog.relation_sizes`); a copy
   another session holds in ACCESS EXCLUSIVE mode is not waited for: its size is unknown,
   and a warning names it;
4. one ledger query per database for the recent seconds per target of each service.

Nothing is written and no revision runs; the scratch database of ``fleet check`` is not
used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from alembic_fleet.catalog.relation_sizes import relation_sizes
from alembic_fleet.check.file_layer import unsafe_findings
from alembic_fleet.exceptions import DatabaseUnavailableError
from alembic_fleet.inventory import read_inventory
from alembic_fleet.ledger import Ledger
from alembic_fleet.model.findings import Finding
from alembic_fleet.model.status import TargetState, plan_step
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.planning import destinations
from alembic_fleet.redact import display, scrub
from alembic_fleet.review.render import render_pending
from alembic_fleet.review.report import (
    CopySize,
    PlannedRevision,
    PlanReport,
    ServicePlan,
    StartingPoint,
    analyze_revisions,
    copy_key,
    estimate,
    plan_statements,
    revision_order,
    starting_points,
)
from alembic_fleet.schema_owners import refuse_shared_schemas
from alembic_fleet.workspace import Workspace

LEDGER_SAMPLES = 100
"""How many of a service's most recently migrated targets the estimate's median reads."""


@dataclass
class _Pending:
    """One service's pending work before the catalog and the ledger are read."""

    name: str
    points: tuple[StartingPoint, ...]
    revisions: list[tuple[str, list, str | None, list[Finding], list[Target]]] = field(
        default_factory=list)
    """(revision, analysed statements, unrendered reason, findings, targets running it)."""


def build_plan(workspace: Workspace, services: Sequence[str] = (),
               tenants: Sequence[str] = (), *, jobs: int | None = None) -> PlanReport:
    """The pending work of the selected targets, statement by statement."""
    targets = workspace.select(services, tenants)
    refuse_shared_schemas(workspace, targets)
    wanted = destinations(workspace, targets, None)
    inventory = read_inventory(workspace, targets, wanted)
    workers = jobs or workspace.config.jobs or os.cpu_count() or 1
    pairs: dict[str, list[tuple[Target, tuple[str, ...]]]] = {}
    at_head = ahead = unreachable = 0
    for status in inventory.statuses:
        step = plan_step(status)
        if status.state is TargetState.UNREACHABLE:
            unreachable += 1
        elif step.upgrade:
            pairs.setdefault(status.target.service, []).append((status.target, status.current))
        elif status.state is TargetState.AHEAD:
            ahead += 1
        else:
            at_head += 1
    pending = [_pending(workspace, name, group, wanted[name]) for name, group in pairs.items()]
    warnings = list(inventory.warnings)
    sizes = _sizes(workspace, pending, warnings)
    samples = _samples(workspace, pending, warnings)
    plans = []
    for item in pending:
        graph = workspace.graph(item.name)
        revisions = []
        for revision, analysis, unrendered, findings, running in item.revisions:
            declared = graph.revisions[revision]
            revisions.append(PlannedRevision(
                revision, declared.message, declared.path, len(running),
                plan_statements(analysis, running, sizes), unrendered, tuple(findings)))
        count = sum(len(p.targets) for p in item.points)
        plans.append(ServicePlan(item.name, item.points, tuple(revisions),
                                 estimate(samples.get(item.name, []), count, workers)))
    shown = {t.database.key: display(t.database) for t in targets}
    return PlanReport(tuple(plans), workers, at_head, ahead,
                      {shown.get(k, k): v for k, v in inventory.unreachable.items()},
                      unreachable, tuple(warnings))


def _pending(workspace: Workspace, name: str, pairs: list[tuple[Target, tuple[str, ...]]],
             wanted: tuple[str, ...]) -> _Pending:
    graph = workspace.graph(name)
    points = starting_points(graph, pairs, wanted)
    order = revision_order(graph, points)
    rendered = {r.revision: r for r in render_pending(workspace, name, order)}
    analysis = analyze_revisions({r: item.statements for r, item in rendered.items()}, points)
    findings: dict[str, list[Finding]] = {}
    for found in unsafe_findings(name, [rendered[r] for r in order]):
        findings.setdefault(found.revision or "", []).append(found)
    item = _Pending(name, points)
    for revision in order:
        running = [t for p in points if revision in p.pending for t in p.targets]
        item.revisions.append((revision, analysis.get(revision, []), rendered[revision].error,
                               findings.get(revision, []), running))
    return item


def _sizes(workspace: Workspace, pending: Sequence[_Pending], warnings: list[str]
           ) -> dict[tuple[str, str, str], CopySize]:
    """Every copy of every relation a pending statement locks, in the schemas of the
    targets that run it: one catalog query per database."""
    wanted: dict[str, tuple[Database, set[str], set[str]]] = {}
    for item in pending:
        for _, analysis, _, _, running in item.revisions:
            for statement in analysis:
                for effect in statement.effects:
                    if effect.lock is None:
                        continue
                    for target in running:
                        key, schema, name = copy_key(target, effect.relation)
                        _, schemas, names = wanted.setdefault(
                            key, (target.database, set(), set()))
                        schemas.add(schema)
                        names.add(name)
    sizes: dict[tuple[str, str, str], CopySize] = {}
    for key, (database, schemas, names) in wanted.items():
        try:
            with workspace.databases.connect(database) as connection:
                found = relation_sizes(connection, schemas, names,
                                       lock_timeout=workspace.config.lock_timeout)
                connection.rollback()
        except (DBAPIError, DatabaseUnavailableError) as exc:
            warnings.append(f"cannot read the sizes of tables in {display(database)}: "
                            f"{_reason(exc)}")
            continue
        for (schema, name), size in found.items():
            sizes[(key, schema, name)] = CopySize(schema, size.rows, size.bytes)
        locked = sorted(f"{schema}.{name}" for (schema, name), size in found.items()
                        if size.locked)
        if locked:
            warnings.append(_locked_warning(display(database), locked))
    return sizes


LOCKED_SHOWN = 10
"""Locked relations named in the warning; more are counted (a migration of the application
holding every tenant's copy would otherwise make a warning of thousands of names)."""


def _locked_warning(database: str, locked: Sequence[str]) -> str:
    """The copies whose size was not read: another session holds or awaits them in ACCESS
    EXCLUSIVE mode, and reading their size would wait until it commits."""
    names = ", ".join(locked[:LOCKED_SHOWN]) + (
        f" and {len(locked) - LOCKED_SHOWN} more" if len(locked) > LOCKED_SHOWN else "")
    count = f"{len(locked)} relation{'' if len(locked) == 1 else 's'}"
    return (f"size of {count} in {database} unknown: locked by another session (ACCESS "
            f"EXCLUSIVE, held or awaited), not waited for: {names}")


def _samples(workspace: Workspace, pending: Sequence[_Pending], warnings: list[str]
             ) -> dict[str, list[float]]:
    """Recent seconds per migrated target of each service, from the ledger of every
    database its pending targets live in."""
    config = workspace.config
    if not config.ledger:
        return {}
    by_database: dict[str, tuple[Database, set[str]]] = {}
    for item in pending:
        for point in item.points:
            for target in point.targets:
                by_database.setdefault(target.database.key, (target.database, set()))[1].add(
                    item.name)
    ledger = Ledger(config.ledger_schema, config.lock_timeout)
    samples: dict[str, list[float]] = {}
    for database, services in by_database.values():
        try:
            with workspace.databases.connect(database) as connection:
                found = ledger.recent_seconds(connection, sorted(services), LEDGER_SAMPLES)
        except (DBAPIError, DatabaseUnavailableError) as exc:
            warnings.append(f"cannot read the ledger in {display(database)}: {_reason(exc)}; "
                            "no estimate from it")
            continue
        for service, seconds in found.items():
            samples.setdefault(service, []).extend(seconds)
    return samples


def _reason(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    message = getattr(original, "message", None) or str(original)
    return scrub(message.strip().splitlines()[0] if message.strip() else type(exc).__name__)
