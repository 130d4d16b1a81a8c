"""Tenants: list, add, remove. Returns data; the CLI reports it.

* ``list``: configured tenants against what the databases hold, per service: present,
  missing, or orphan (a schema a service's template matches whose tenant is not configured).
* ``add``: validate, record the tenant where the configured source lives (fleet.toml, the
  tenants file, the registry), create and migrate its schemas: the ordinary migrate path, so
  locks, retries and the ledger apply. Idempotent.
* ``remove``: optionally ``pg_dump`` the tenant's schemas, drop exactly those schemas (names
  rendered from the templates, never a pattern), then forget the tenant in its source.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from alembic_fleet.catalog.versions import read_versions
from alembic_fleet.config.loader import parse_config
from alembic_fleet.config.tenant_sources import (
    check_forgettable,
    forget_tenant,
    record_tenants,
    resolve_query,
    unchanged_while,
)
from alembic_fleet.exceptions import ConfigError, FleetError, UsageError
from alembic_fleet.execution.events import EventSink, ignore
from alembic_fleet.execution.locking import lock_key, try_lock, unlock
from alembic_fleet.execution.run import RunOptions, execute, preflight
from alembic_fleet.inventory import read_inventory
from alembic_fleet.ledger import Ledger
from alembic_fleet.model.identifiers import quote_ident, validate_tenant
from alembic_fleet.model.outcome import RunOutcome
from alembic_fleet.model.status import TargetState, TargetStatus
from alembic_fleet.model.targets import Database, Target, targets_for
from alembic_fleet.pg_tools import find_pg_dump, pg_dump_command
from alembic_fleet.planning import make_plan
from alembic_fleet.redact import display, scrub
from alembic_fleet.schema_owners import refuse_shared_schemas
from alembic_fleet.workspace import Workspace


@dataclass(frozen=True)
class TenantRow:
    """One (tenant, service) pair as ``fleet tenants list`` shows it."""

    tenant: str
    status: TargetStatus
    presence: str
    """``present`` (the schema has a version table), ``missing`` or ``orphan``."""


def list_tenants(workspace: Workspace) -> list[TenantRow]:
    """Every configured tenant's per-tenant targets, then the orphans."""
    targets = [t for t in workspace.select() if t.tenant is not None]
    rows = []
    for status in read_inventory(workspace, targets, orphans=True).everything:
        tenant = status.target.tenant or ""
        if status.state is TargetState.ORPHAN:
            presence = "orphan"
        elif status.state is TargetState.MISSING:
            presence = "missing"
        else:
            presence = "present"
        rows.append(TenantRow(tenant, status, presence))
    return rows


@dataclass
class AddResult:
    """Where the tenants were recorded and what their migration did."""

    recorded: dict[str, str]
    """tenant -> where it was recorded (or "already configured")."""
    outcome: RunOutcome | None
    warnings: list[str] = field(default_factory=list)


def add_tenants(workspace: Workspace, names: Sequence[str], *, migrate: bool = True,
                jobs: int | None = None, on_event: EventSink = ignore) -> AddResult:
    """Record ``names`` and bring each tenant's schemas to head."""
    names = list(dict.fromkeys(names))
    for name in names:
        validate_tenant(name)
    config = workspace.resolve_tenants()
    if not any(s.per_tenant for s in config.services.values()):
        raise UsageError("no service keeps one schema per tenant",
                         hint="add {tenant} to a service's schema template in fleet.toml")
    # Check every schema name before writing anything (too long, invalid characters...).
    try:
        workspace.config = config.with_tenants(
            [*config.tenants, *(n for n in names if n not in config.tenants)],
            key="tenants add")
    except ConfigError as exc:  # the names given, not the file, are at fault
        raise UsageError(f"cannot add these tenants: {exc.reason}", hint=exc.hint) from None
    warnings = []
    if config.tenants_from_env:
        warnings.append("TENANTS is set: the tenants were recorded in the configuration, but "
                        "this shell's TENANTS list still decides what other commands see")
    recorded = {name: "already configured" for name in names
                if name in config.tenants and not config.tenants_from_env}
    new = [name for name in names if name not in recorded]
    if not migrate:  # make_plan checks them otherwise: a tenant recorded whose schema
        # another owner holds (through another spelling of a URL) is one no plan could run
        refuse_shared_schemas(workspace, [t for name in names
                                          for t in workspace.config.namespace.schemas_of(name)])
    options = RunOptions(jobs=jobs, command="fleet tenants add")
    plan = None
    if migrate:  # planned and checked first: a refusal (exit 2) must leave nothing recorded
        per_tenant = [s.name for s in config.services.values() if s.per_tenant]
        plan = make_plan(workspace, per_tenant, names)
        options = replace(options, checked=preflight(workspace, plan, options))
    if new:  # one edit of the tenant source for them all
        where = record_tenants(config, new, workspace.databases.connect,
                               while_held=lambda: _forget_removals(workspace, new))
        recorded = {name: recorded.get(name, where) for name in names}
    outcome = None if plan is None else execute(workspace, plan, options, on_event)
    return AddResult(recorded, outcome, warnings)


def _forget_removals(workspace: Workspace, names: Sequence[str]) -> None:
    """The new tenants' schemas removed before (``fleet tenants remove``) are wanted
    again: their removal records go, while the tenant source is still locked, so that no
    remove can come in between. (Kept, a removal that committed just before this add
    recorded the name made the add's own run skip the schemas it was there to make.)"""
    config = workspace.config
    if not config.ledger:
        return
    targets = [t for name in names for t in tenant_targets(workspace, name)]
    for database, group in _by_database(targets):
        with workspace.databases.connect(database) as connection:
            Ledger(config.ledger_schema, config.lock_timeout).forget_removals(
                connection, [(t.service, t.schema) for t in group])


@dataclass
class RemoveResult:
    """What ``remove`` dropped and wrote."""

    dropped: list[str]
    dumps: list[str]
    forgotten: str
    warnings: list[str] = field(default_factory=list)


def tenant_targets(workspace: Workspace, name: str) -> list[Target]:
    """The schemas ``tenants remove NAME`` may drop, as the schema namespace decides.

    A configured tenant: exactly its per-tenant schemas. A name that is not configured: only
    schemas that a service's template renders for that name and that nothing configured
    owns (its orphans); never a single-schema service's schema, the ledger, a reserved
    schema, or another tenant's.
    """
    validate_tenant(name)
    config = workspace.resolve_tenants()
    namespace = config.namespace
    if name in config.tenants:
        return namespace.schemas_of(name)
    services = [s for s in config.services.values() if s.per_tenant]
    candidates = [t for t in targets_for(services, [name], config.tenant_databases)
                  if namespace.template_owner(t.database.key, t.schema) == (t.service, name)]
    return _orphans_only(workspace, candidates)


def _orphans_only(workspace: Workspace, candidates: Sequence[Target]) -> list[Target]:
    """The candidates that fleet made for this service: a readable version table holding
    revisions, all of which the service's scripts know. A schema without one, with an empty
    one, or with a stray table of that name or of unknown revisions was not made by fleet
    for this tenant (or not recognisably), and is never dropped by name."""
    found = []
    for database, group in _by_database(candidates):
        wanted = {(t.schema, workspace.service(t.service).version_table) for t in group}
        unreadable: dict[tuple[str, str], str] = {}
        with workspace.databases.connect(database) as connection:
            versions = read_versions(connection, wanted, unreadable=unreadable)
        for target in group:
            revisions = versions.get(
                (target.schema, workspace.service(target.service).version_table))
            graph = workspace.graph(target.service)
            if revisions and all(graph.knows(r) for r in revisions):
                found.append(target)
    return found


def existing_schemas(workspace: Workspace, targets: Sequence[Target]) -> list[Target]:
    """The targets whose schema exists, per database (one catalog query each)."""
    found = []
    for database, group in _by_database(targets):
        with workspace.databases.connect(database) as connection:
            rows = connection.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%(names)s)",
                {"names": [t.schema for t in group]}).scalars().all()
        found.extend(t for t in group if t.schema in set(rows))
    return found


def remove_tenant(workspace: Workspace, name: str, *, dump: Path | None = None) -> RemoveResult:
    """Dump (optionally), forget the tenant, then drop its schemas, each under its lock.

    Everything that can refuse runs before anything changes (the dump, the tenant source's
    ability to forget). The tenant is forgotten before its schemas go: if a drop fails
    afterwards, what is left is an orphan that ``tenants remove`` finishes, never a
    configured tenant whose data is gone. Each schema is dropped under the target's advisory
    lock, so a ``fleet migrate`` running at the same time either finished it before or
    finds it gone and does not recreate it.
    """
    targets = tenant_targets(workspace, name)
    refuse_shared_schemas(workspace, targets)  # never drop a schema another owner holds
    present = existing_schemas(workspace, targets)
    configured = name in workspace.config.tenants or _recorded_under_env(workspace, name)
    warnings = []
    if workspace.config.tenants_from_env:
        warnings.append("TENANTS is set: the tenant was removed from the configuration, but "
                        "this shell's TENANTS list still decides what other commands see")
    if not present and not configured:
        _refuse_others(workspace, name)
        return RemoveResult([], [], "")  # nothing to remove: a rerun does nothing, as add's
    if configured:
        check_forgettable(workspace.config, name)
    dumps = _dump(workspace, present, dump) if dump is not None and present else []
    forgotten = (forget_tenant(workspace.config, name, workspace.databases.connect)
                 if configured else "")
    dropped = []
    config = workspace.config
    # A configured tenant's schemas that do not exist yet are recorded as removed too: a
    # 'fleet migrate' that started before must not create them after this.
    for database, group in _by_database(targets if configured else present):
        with workspace.databases.connect(database) as connection:
            ledger = None
            if config.ledger:
                ledger = Ledger(config.ledger_schema, config.lock_timeout)
                ledger.ensure(connection)
            for target in group:
                key = lock_key(target.service, target.schema)
                if not try_lock(connection, key, workspace.config.lock_wait):
                    raise FleetError(
                        f"{target.label} is being migrated by another runner: not dropped",
                        hint=f"run 'fleet tenants remove {name}' again when it is done")
                try:
                    # The source read again, and held unchanged until the drop commits: a
                    # 'fleet tenants add' that recorded the name since this command read its
                    # configuration (or forgot it) keeps its schema, and one that comes
                    # after the drop finds it gone and makes it again.
                    with unchanged_while(config), connection.begin():
                        if _in_source(workspace, name):
                            warnings.append(f"{name!r} was added meanwhile (fleet tenants "
                                            f"add): {target.schema} was kept")
                            continue
                        # Under the lock: a run may have made the schema since it was looked
                        # for (it is dropped all the same, and said).
                        there = connection.exec_driver_sql(
                            "SELECT to_regnamespace(%(s)s) IS NOT NULL",
                            {"s": quote_ident(target.schema)}).scalar()
                        connection.exec_driver_sql(
                            f"DROP SCHEMA IF EXISTS {quote_ident(target.schema)} CASCADE")
                        if ledger is not None:
                            ledger.record_removal(connection, target.service, target.schema)
                finally:
                    unlock(connection, key)
                if there:
                    dropped.append(f"{display(database)} {target.schema}")
    return RemoveResult(dropped, dumps, forgotten, warnings)


def _recorded_under_env(workspace: Workspace, name: str) -> bool:
    """With ``TENANTS`` set, whether the lasting tenant source (which ``tenants add`` wrote)
    records ``name`` all the same: then removing it must forget it there too, or its
    schemas go while it stays configured, and the next run makes them again, empty."""
    return workspace.config.tenants_from_env and _in_source(workspace, name)


def _in_source(workspace: Workspace, name: str) -> bool:
    """Whether the lasting tenant source records ``name`` now (read again): an orphan's
    schema is dropped under its lock only if no ``tenants add`` recorded the name since
    this command read its configuration (that add's tenant would lose its new schema)."""
    config = workspace.config
    environ = {k: v for k, v in os.environ.items() if k != "TENANTS"}
    lasting = parse_config(config.file, environ)
    if lasting.tenant_query is not None:
        return name in resolve_query(lasting.tenant_query, workspace.databases.connect)
    return name in lasting.tenants


def _refuse_others(workspace: Workspace, name: str) -> None:
    """For a name that is not configured and has no orphan: refuse when a schema its
    templates render exists all the same (``public`` under a bare ``{tenant}`` template,
    the ledger, a schema fleet did not make): it is somebody else's, and saying "nothing to
    remove" would hide that the name was not the tenant meant."""
    config = workspace.resolve_tenants()
    rendered = targets_for([s for s in config.services.values() if s.per_tenant], [name],
                           config.tenant_databases)
    others = existing_schemas(workspace, rendered)
    if others:
        raise UsageError(
            f"{name!r} is not a configured tenant, and {', '.join(t.schema for t in others)} "
            "is not a schema fleet made for it: nothing was dropped",
            hint="see 'fleet tenants list'")


def _dump(workspace: Workspace, targets: Sequence[Target], path: Path) -> list[str]:
    """One plain-SQL ``pg_dump`` per database holding the tenant's schemas."""
    written = []
    groups = _by_database(targets)
    for index, (database, group) in enumerate(groups):
        target_path = path if len(groups) == 1 else path.with_name(
            f"{path.stem}.{index + 1}{path.suffix}")
        with workspace.databases.connect(database) as connection:
            server = int(connection.exec_driver_sql("SHOW server_version_num").scalar()) // 10000
        arguments = ["--no-owner", "--file", str(target_path)]
        for target in group:
            arguments += ["--schema", quote_ident(target.schema)]
        argv, env = pg_dump_command(workspace.databases, database,
                                    find_pg_dump(workspace.databases, server), arguments)
        completed = subprocess.run(argv, capture_output=True, text=True, env=env)
        if completed.returncode != 0:
            raise FleetError(f"pg_dump failed, nothing was dropped: "
                             f"{scrub(completed.stderr.strip())}",
                             hint="fix the error or remove without --dump")
        written.append(str(target_path))
    return written


def _by_database(targets: Sequence[Target]) -> list[tuple[Database, list[Target]]]:
    groups: dict[str, tuple[Database, list[Target]]] = {}
    for target in targets:
        groups.setdefault(target.database.key, (target.database, []))[1].append(target)
    return list(groups.values())
