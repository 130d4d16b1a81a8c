"""One function per verb: load, decide, execute, and return data. Nothing here prints.

The CLI parses arguments, calls these, hands the returned values to the reporting layer and
turns exceptions into exit codes. Library users can call them directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from alembic_fleet.alembic_bridge import runner, scaffold
from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.config import FleetConfig, find_config_file, load_config
from alembic_fleet.config.exports import database_variables
from alembic_fleet.config.tenant_sources import resolve_query
from alembic_fleet.databases import Databases, display, explain_connection_error, libpq_url
from alembic_fleet.embedded import EmbeddedServer
from alembic_fleet.exceptions import (
    ChangedRevisionError,
    DatabaseUnavailableError,
    RevisionError,
    UsageError,
)
from alembic_fleet.execution.events import Event, EventSink, ignore
from alembic_fleet.execution.executor import RunInterrupted, SerialExecutor
from alembic_fleet.execution.locking import check_session_pooling
from alembic_fleet.execution.pool import PoolExecutor
from alembic_fleet.execution.work import Policy, TargetMigrator, WorkFactory, describe_error
from alembic_fleet.inspect.versions import read_one, read_versions
from alembic_fleet.ledger import Ledger, RunInfo
from alembic_fleet.ledger.recorder import LedgerRecorder
from alembic_fleet.ledger.store import RunSummary
from alembic_fleet.model.identifiers import (
    quote_ident,
    split_schema,
    validate_schema_template,
    validate_tenant,
)
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.schedule import Schedule, dependencies, execution_order
from alembic_fleet.model.shard import Shard, take_share
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    classify,
    plan_step,
)
from alembic_fleet.model.targets import Database, Service, Target, targets_for
from alembic_fleet.redact import register_secret

if TYPE_CHECKING:  # the check machinery (pglast, autogenerate) loads only for check
    from alembic_fleet.check.gate import CheckOptions, CheckReport


@dataclass
class Fleet:
    """A validated configuration and the resources one command uses (engines, scripts)."""

    config: FleetConfig
    databases: Databases
    _scripts: dict[str, ServiceScripts] = field(default_factory=dict)
    _resolved: bool = False
    unreachable: dict[str, str] = field(default_factory=dict)
    """Database key -> why it could not be reached (its targets are reported failed)."""

    @classmethod
    def load(cls, config_path: str | None = None) -> Fleet:
        config = load_config(config_path)
        for secret in config.secrets:
            register_secret(secret)
        return cls(config, Databases(config.embedded_dir))

    def close(self) -> None:
        self.databases.dispose()

    def databases_in_use(self) -> list[Database]:
        """Each configured database once, in configuration order: the services' databases,
        then those of tenants placed on their own server."""
        found = {s.database.key: s.database for s in self.config.services.values()}
        if any(s.per_tenant for s in self.config.services.values()):
            for tenant, database in self.config.tenant_databases.items():
                if tenant in self.config.tenants:
                    found.setdefault(database.key, database)
        return list(found.values())

    def resolve_tenants(self) -> None:
        """Run the tenant registry query once, when the tenants come from one (and
        ``TENANTS`` does not override it)."""
        query = self.config.tenant_query
        if query is None or self.config.tenants_from_env or self._resolved:
            return
        self.config = self.config.with_tenants(resolve_query(query, self.databases.connect))
        self._resolved = True

    def service(self, name: str) -> Service:
        try:
            return self.config.services[name]
        except KeyError:
            known = ", ".join(self.config.services)
            raise UsageError(f"unknown service {name!r}",
                             hint=f"configured services: {known}") from None

    def scripts(self, name: str) -> ServiceScripts:
        if name not in self._scripts:
            self._scripts[name] = ServiceScripts(self.service(name))
        return self._scripts[name]

    def graph(self, name: str) -> RevisionGraph:
        return self.scripts(name).graph

    def select(self, services: Sequence[str] = (), tenants: Sequence[str] = ()) -> list[Target]:
        """The targets named by ``SERVICE...`` and ``--tenant``; unknown names are errors.

        ``--tenant`` narrows per-tenant services to those tenants and leaves single-schema
        services out, unless such a service is named explicitly.
        """
        self.resolve_tenants()
        chosen = [self.service(n) for n in dict.fromkeys(services)] or list(
            self.config.services.values()
        )
        for tenant in tenants:
            validate_tenant(tenant)
            if tenant not in self.config.tenants:
                raise UsageError(
                    f"tenant {tenant!r} is not configured",
                    hint="add it to 'tenants' in the configuration, or set "
                    f"TENANTS=\"{' '.join((*self.config.tenants, tenant))}\"",
                )
        if tenants:
            chosen = [s for s in chosen if s.per_tenant or s.name in services]
        wanted = list(dict.fromkeys(tenants)) or list(self.config.tenants)
        return targets_for(chosen, wanted, self.config.tenant_databases)

    def destinations(self, targets: Sequence[Target], to: str | None) -> dict[str, tuple[str, ...]]:
        """Per service, the revisions ``migrate`` brings its targets to (``--to`` or heads)."""
        names = list(dict.fromkeys(t.service for t in targets))
        if to in (None, "head", "heads"):
            return {name: self.graph(name).heads for name in names}
        if len(names) != 1:
            raise UsageError("--to REV needs exactly one SERVICE",
                             hint="e.g. 'fleet migrate auth --to 1a2b3c'")
        return {names[0]: self.scripts(names[0]).resolve(to)}

    def statuses(
        self, targets: Sequence[Target], destinations: dict[str, tuple[str, ...]] | None = None,
        *, orphans: bool = False,
    ) -> list[TargetStatus]:
        """Where each target stands: a catalog query and batched reads, none per schema.

        With ``orphans``, schemas that a selected service's template matches but whose tenant
        is not configured are appended with the state ``orphan``.
        """
        by_database: dict[str, list[Target]] = {}
        for target in targets:
            by_database.setdefault(target.database.key, []).append(target)
        current: dict[Target, tuple[str, ...] | None] = {}
        extra: list[TargetStatus] = []
        errors: dict[str, DatabaseUnavailableError] = {}
        for key, group in by_database.items():
            database = group[0].database
            services = [self.service(n) for n in dict.fromkeys(t.service for t in group)]
            wanted = {(t.schema, self.service(t.service).version_table) for t in group}
            templates = [(s.schema, s.version_table) for s in services if s.per_tenant]
            try:
                with self.databases.connect(database) as connection:
                    try:
                        found = read_versions(
                            connection, wanted, templates if orphans else (),
                            connect=lambda db=database: self.databases.connect(db))
                    except DBAPIError as exc:
                        raise explain_connection_error(exc, display(database)) from None
                    connection.rollback()
            except DatabaseUnavailableError as exc:
                errors[key] = exc
                continue
            for t in group:
                current[t] = found.get((t.schema, self.service(t.service).version_table))
            if orphans:
                extra.extend(self._orphans(found, wanted, services, database))
        if errors and len(errors) == len(by_database):
            raise next(iter(errors.values()))  # nothing reachable: a usage-level error (2)
        self.unreachable.update({k: e.message for k, e in errors.items()})
        result = []
        for target in targets:
            destination = (destinations or {}).get(target.service)
            if target.database.key in errors:
                # One server down fails only its own targets; the others go on.
                graph = self.graph(target.service)
                wanted = destination or graph.heads
                result.append(TargetStatus(target, (), wanted, graph.pending((), wanted),
                                           TargetState.FAILED))
                continue
            result.append(classify(target, current[target], self.graph(target.service),
                                   destination))
        return self._mark_failed(result) + extra

    def _mark_failed(self, statuses: list[TargetStatus]) -> list[TargetStatus]:
        """Targets not at head whose last recorded run failed are in state ``failed``.

        Reads the ledger only when something is not at head: the no-op path stays free.
        """
        if not self.config.ledger:
            return statuses
        behind = [s for s in statuses if s.state in (TargetState.BEHIND, TargetState.MISSING)
                  and s.target.database.key not in self.unreachable]
        by_database: dict[str, list[TargetStatus]] = {}
        for status in behind:
            by_database.setdefault(status.target.database.key, []).append(status)
        failed: set[tuple[str, str, str]] = set()
        ledger = Ledger(self.config.ledger_schema)
        for group in by_database.values():
            database = group[0].target.database
            with self.databases.connect(database) as connection:
                found = ledger.failed_targets(
                    connection, [(s.target.service, s.target.schema) for s in group])
            failed.update((database.key, svc, schema) for svc, schema in found)
        return [
            TargetStatus(s.target, s.current, s.head, s.pending, TargetState.FAILED)
            if (s.target.database.key, s.target.service, s.target.schema) in failed else s
            for s in statuses
        ]

    def _orphans(self, found: dict[tuple[str, str], tuple[str, ...]],
                 wanted: set[tuple[str, str]], services: Sequence[Service],
                 database: Database) -> list[TargetStatus]:
        """Found version tables that belong to no configured target."""
        configured = set(self.config.tenants)
        result = []
        for schema, table in sorted(set(found) - wanted):
            for service in services:
                tenant = split_schema(service.schema, schema)
                if (tenant is not None and table == service.version_table
                        and tenant not in configured):
                    target = Target(service.name, tenant, schema, database)
                    heads = self.graph(service.name).heads
                    result.append(TargetStatus(target, found[(schema, table)], heads, 0,
                                               TargetState.ORPHAN))
                    break
        return result


def status(fleet: Fleet, services: Sequence[str] = (), tenants: Sequence[str] = (),
           shard: Shard | None = None) -> list[TargetStatus]:
    """Current against head for every selected target, and orphan schemas (when no tenant
    filter or shard is given)."""
    targets = take_share(fleet.select(services, tenants), shard)
    return fleet.statuses(targets, orphans=not tenants and shard is None)


def plan(fleet: Fleet, services: Sequence[str] = (), tenants: Sequence[str] = (),
         to: str | None = None, shard: Shard | None = None) -> list[Step]:
    """What ``migrate`` would do: one step per target, upgrade or skip with a reason.

    With ``shard``, only the targets of that shard (see :mod:`alembic_fleet.model.shard`).
    """
    targets = take_share(fleet.select(services, tenants), shard)
    destinations = fleet.destinations(targets, to)
    return [plan_step(s) for s in fleet.statuses(targets, destinations)]


def migrate(
    fleet: Fleet,
    services: Sequence[str] = (),
    tenants: Sequence[str] = (),
    *,
    to: str | None = None,
    jobs: int | None = None,
    fail_fast: bool = False,
    on_event: EventSink = ignore,
) -> list[TargetResult]:
    """Bring the selected targets to head (or ``to``); targets already there are not touched."""
    steps = plan(fleet, services, tenants, to)
    return run_plan(fleet, steps, jobs=jobs, fail_fast=fail_fast, on_event=on_event).results


@dataclass
class RunOutcome:
    """What ``migrate`` did: every target's result, and warnings for the user."""

    results: list[TargetResult]
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None


def policy_for(fleet: Fleet, **overrides: float | int | None) -> Policy:
    """The run's lock, timeout and retry policy: configuration, then command-line options."""
    config = fleet.config
    values = {"lock_wait": config.lock_wait, "lock_timeout": config.lock_timeout,
              "statement_timeout": config.statement_timeout, "retries": config.retries}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Policy(lock_wait=float(values["lock_wait"]),
                  lock_timeout=float(values["lock_timeout"]),
                  statement_timeout=float(values["statement_timeout"]),
                  retries=int(values["retries"]))


def run_plan(
    fleet: Fleet,
    steps: Sequence[Step],
    *,
    jobs: int | None = None,
    fail_fast: bool = False,
    policy: Policy | None = None,
    command: str = "fleet migrate",
    on_event: EventSink = ignore,
    allow_changed: bool = False,
) -> RunOutcome:
    """Execute a plan made by :func:`plan` (steps that need no upgrade are reported skipped).

    More than one target to migrate and more than one job: a pool of worker processes;
    otherwise this process does the work (no start-up cost for a single target). Runs that
    migrate something are written to the ledger; a run with nothing to do writes nothing.
    Raises :class:`RunInterrupted` (carrying the results) on Ctrl-C, and
    :class:`ChangedRevisionError` before anything runs when a revision file changed after it
    was applied somewhere (unless ``allow_changed``).
    """
    policy = policy or policy_for(fleet)
    down = [s for s in steps if s.target.database.key in fleet.unreachable]
    order_of = {s.target: i for i, s in enumerate(steps)}
    if down:
        steps = [s for s in steps if s.target.database.key not in fleet.unreachable]
        if not steps:
            raise DatabaseUnavailableError(fleet.unreachable[down[0].target.database.key])
    services = [fleet.service(n) for n in dict.fromkeys(s.target.service for s in steps)]
    destinations = {s.name: _alembic_destination(steps, s.name) for s in services}
    order = execution_order(steps, services, fleet.config.tenants, fleet.config.priority)
    schedule = Schedule(order, dependencies(steps, fleet.config.services.values()))
    runnable = sum(1 for s in steps if s.upgrade)
    wanted = jobs or fleet.config.jobs or os.cpu_count() or 1
    scripts = {s.name: fleet.scripts(s.name) for s in services}
    if runnable:
        _check_direct_sessions(fleet, steps)
        if fleet.config.ledger and not allow_changed:
            _refuse_changed_revisions(fleet, steps)
    recorder = None
    if runnable and fleet.config.ledger:
        recorder = LedgerRecorder(fleet.databases, Ledger(fleet.config.ledger_schema),
                                  RunInfo.current(command),
                                  {name: s.graph for name, s in scripts.items()})
        recorder.start(steps)

    def sink(event: Event) -> None:
        if recorder is not None:
            recorder.observe(event)
        on_event(event)

    if wanted > 1 and runnable > 1:
        for name, script in scripts.items():  # load and render before forking: workers
            _ = script.graph, script.uses_helper  # inherit all of it
            if script.replayer is not None:
                for current in {s.status.current for s in steps
                                if s.upgrade and s.target.service == name}:
                    script.replayer.plan(script.script, current, destinations[name])
        factory = WorkFactory(fleet.config.embedded_dir,
                              {s.name: s for s in services}, destinations,
                              fleet.config.secrets, scripts, policy)
        executor: PoolExecutor | SerialExecutor = PoolExecutor(
            factory, jobs=min(wanted, runnable), fail_fast=fail_fast)
        work = None
    else:
        work = TargetMigrator(fleet.databases, scripts, destinations, policy)
        executor = SerialExecutor(work, fail_fast=fail_fast)
    try:
        results = executor.run(steps, schedule, sink)
    except RunInterrupted:
        if recorder is not None:
            recorder.finish("interrupted")
        raise
    finally:
        if work is not None:
            work.close()
    if down:  # back in plan order: reports pair results with the plan's statuses
        results = sorted([*(_unreachable_result(fleet, s) for s in down), *results],
                         key=lambda r: order_of[r.target])
    failed = any(r.outcome is Outcome.FAILED for r in results)
    if recorder is not None:
        recorder.finish("failed" if failed else "succeeded")
    return RunOutcome(results, recorder.warnings if recorder else [],
                      recorder.info.run_id if recorder else None)


def _unreachable_result(fleet: Fleet, step: Step) -> TargetResult:
    return TargetResult(step.target, Outcome.FAILED, (), (),
                        error=fleet.unreachable[step.target.database.key],
                        hint="the other databases were migrated; run 'fleet migrate' again "
                        "once this one is reachable")


def _check_direct_sessions(fleet: Fleet, steps: Sequence[Step]) -> None:
    """Refuse transaction-pooling poolers before anything runs (see execution.locking)."""
    seen: set[str] = set()
    for step in steps:
        database = step.target.database
        if not step.upgrade or database.key in seen or database.is_embedded:
            continue
        seen.add(database.key)
        check_session_pooling(lambda db=database: fleet.databases.connect(db), display(database))


def _refuse_changed_revisions(fleet: Fleet, steps: Sequence[Step]) -> None:
    """Flyway's ``validate`` before a run: an applied revision whose file changed since means
    the targets already migrated and the ones about to be would end up different."""
    from alembic_fleet.check.gate import Subject, changed_revisions

    by_database: dict[str, tuple[Database, set[str]]] = {}
    for step in steps:
        if step.upgrade:
            entry = by_database.setdefault(step.target.database.key,
                                           (step.target.database, set()))
            entry[1].add(step.target.service)
    changed = []
    for database, names in by_database.values():
        with fleet.databases.connect(database) as connection:
            for name in sorted(names):
                subject = Subject(fleet.service(name), fleet.scripts(name))
                changed.extend(f for f in changed_revisions(
                    subject, connection, fleet.config.ledger_schema)
                    if f.code == "FC401")
    if changed:
        first = changed[0]
        raise ChangedRevisionError(
            f"{first.service}: {first.message}"
            + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""),
            hint="restore the file and put the change in a new revision; 'fleet check "
            "--database' lists every changed revision; --allow-changed runs anyway")


def _alembic_destination(steps: Sequence[Step], service: str) -> str:
    heads = next(s.status.head for s in steps if s.target.service == service)
    return heads[0] if len(heads) == 1 else "heads"


def migrate_sql(fleet: Fleet, services: Sequence[str] = (), tenants: Sequence[str] = (),
                to: str | None = None, shard: Shard | None = None) -> list[TargetResult]:
    """The SQL ``migrate`` would run, per target, from each target's current revision."""
    results = []
    for step in plan(fleet, services, tenants, to, shard):
        current = step.status.current
        if not step.upgrade:
            results.append(TargetResult(step.target, Outcome.SKIPPED, current, current,
                                        note=step.reason))
            continue
        if len(current) > 1:
            raise UsageError(f"{step.target.label} has several current revisions; "
                             "--sql needs a single starting point")
        heads = step.status.head
        sql = runner.upgrade_sql(fleet.scripts(step.target.service), step.target.schema,
                                 current[0] if current else None,
                                 heads[0] if len(heads) == 1 else "heads", "postgresql+psycopg://")
        results.append(TargetResult(step.target, Outcome.SKIPPED, current, heads,
                                    note="SQL only, nothing executed", sql=sql))
    return results


def downgrade(fleet: Fleet, service: str, tenant: str | None, revision: str) -> TargetResult:
    """Step one target down to ``revision`` (an id, ``base`` or ``-N``)."""
    target = downgrade_target(fleet, service, tenant)
    before = fleet.statuses([target])[0]
    if before.state is TargetState.MISSING:
        raise UsageError(f"{target.label} has no version table: nothing to downgrade")
    scripts = fleet.scripts(service)
    table = scripts.service.version_table
    with fleet.databases.connect(target.database) as connection:
        try:
            runner.downgrade(scripts, connection, target.schema, revision)
        except runner.RevisionFailed as exc:
            reason, hint = describe_error(exc.error)
            return TargetResult(target, Outcome.FAILED, before.current, before.current,
                                error=(f"revision {exc.revision}: " if exc.revision else "")
                                + reason, hint=hint)
        after = read_one(connection, target.schema, table) or ()
    return TargetResult(target, Outcome.MIGRATED, before.current, after)


def downgrade_target(fleet: Fleet, service: str, tenant: str | None) -> Target:
    """The one target ``downgrade`` acts on; per-tenant services need ``--tenant``."""
    svc = fleet.service(service)
    if svc.per_tenant and not tenant:
        raise UsageError(f"service '{service}' keeps one schema per tenant: pass --tenant T")
    targets = fleet.select([service], [tenant] if tenant and svc.per_tenant else [])
    return targets[0]


def history(fleet: Fleet, service: str) -> RevisionGraph:
    """The revision graph of one service, read from its scripts (no database)."""
    return fleet.graph(service)


def heads(fleet: Fleet, services: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Head revisions per service, read from the scripts (no database)."""
    names = list(dict.fromkeys(services)) or list(fleet.config.services)
    result = {}
    for name in names:
        graph = fleet.graph(name)
        if not graph.heads:
            raise RevisionError(f"service '{name}' has no revisions")
        result[name] = graph.heads
    return result


def _embedded(fleet: Fleet) -> EmbeddedServer:
    """The configuration's embedded server; an error when no service uses it."""
    if not fleet.config.uses_embedded:
        raise UsageError(
            "no service uses the embedded PostgreSQL: every service has a database URL",
            hint="'fleet db' and 'fleet reset' manage only the embedded server; "
            "unset DATABASE_URI to use it",
        )
    return fleet.databases.embedded


def embedded_url(fleet: Fleet, database: str | None = None) -> str:
    """The embedded server's libpq URL for ``database`` (server and database created)."""
    server = _embedded(fleet)
    names = [s.database.embedded_name for s in fleet.config.services.values()
             if s.database.is_embedded]
    name = database or names[0] or "postgres"
    fleet.databases.url(Database(embedded_name=name))
    return server.url(name)


def embedded_stop(fleet: Fleet) -> bool:
    return _embedded(fleet).stop()


def embedded_dir(fleet: Fleet) -> Path:
    return _embedded(fleet).pgdata


def embedded_program(fleet: Fleet, name: str) -> str:
    """Path of a bundled PostgreSQL program (psql, pg_dump) of the embedded server."""
    return str(_embedded(fleet).bin_path() / name)


def log(fleet: Fleet, limit: int = 20) -> list[tuple[str, RunSummary]]:
    """Recent runs from the ledger of every configured database, newest first."""
    ledger = Ledger(fleet.config.ledger_schema)
    runs: list[tuple[str, RunSummary]] = []
    for database in fleet.databases_in_use():
        with fleet.databases.connect(database) as connection:
            runs.extend((display(database), r) for r in ledger.recent_runs(connection, limit))
    runs.sort(key=lambda item: item[1].started_at, reverse=True)
    return runs[:limit]


def run_details(fleet: Fleet, run_id: str) -> list[dict]:
    """The targets a run (given by an id prefix) migrated or failed, from every ledger."""
    ledger = Ledger(fleet.config.ledger_schema)
    rows: list[dict] = []
    for database in fleet.databases_in_use():
        with fleet.databases.connect(database) as connection:
            rows.extend(ledger.run_targets(connection, run_id))
    return rows


def wait_for_databases(fleet: Fleet, seconds: float) -> list[str]:
    """Wait until every configured database accepts connections; the ones still down."""
    import time

    deadline = time.monotonic() + seconds
    pending = {d.key: d for d in fleet.databases_in_use()}
    while True:
        for key, database in list(pending.items()):
            try:
                with fleet.databases.connect(database) as connection:
                    connection.exec_driver_sql("SELECT 1")
                del pending[key]
            except (DatabaseUnavailableError, DBAPIError):
                continue
        if not pending or time.monotonic() >= deadline:
            return [display(d) for d in pending.values()]
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def database_names(fleet: Fleet) -> list[str]:
    """The names of the configured databases (what ``reset --force`` asks to type)."""
    names = [fleet.databases.url(d).database for d in fleet.databases_in_use()]
    return list(dict.fromkeys(n for n in names if n))


def drop_all_schemas(fleet: Fleet) -> list[str]:
    """Drop every configured target schema (``public`` is recreated empty) and the ledger."""
    dropped: list[str] = []
    targets = fleet.select()
    by_database: dict[str, list[Target]] = {}
    for target in targets:
        by_database.setdefault(target.database.key, []).append(target)
    for group in by_database.values():
        database = group[0].database
        with fleet.databases.connect(database) as connection, connection.begin():
            for schema in sorted({t.schema for t in group} | {fleet.config.ledger_schema}):
                quoted = quote_ident(schema)
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
                if schema == "public":
                    connection.exec_driver_sql("CREATE SCHEMA public")
                dropped.append(f"{display(database)} {schema}")
    return dropped


def reset(fleet: Fleet) -> bool:
    """Delete the embedded server's data; never touches any other database."""
    return _embedded(fleet).reset()


def init(config_path: str | None, service: tuple[str, str] | None, schema: str | None
         ) -> list[Path]:
    """Write a fleet.toml (in the working directory), or add a service to the existing one."""
    if service is None:
        return [scaffold.write_config(Path.cwd())]
    name, folder = service
    config_file = find_config_file(config_path)
    template = schema or f"{name.replace('-', '_')}_{{tenant}}"
    validate_schema_template(template, file=None, key="--schema")
    written = scaffold.add_service(config_file, name, folder, template)
    load_config(config_file)  # the result must be a valid configuration
    return written


def chdir(directory: str | None) -> None:
    """``-C DIR``: run as if started in DIR."""
    if directory:
        path = Path(directory)
        if not path.is_dir():
            raise UsageError(f"-C {directory}: no such directory")
        os.chdir(path)


def check(fleet: Fleet, services: Sequence[str] = (), tenants: Sequence[str] = (), *,
          options: CheckOptions | None = None) -> CheckReport:
    """``fleet check``: lint the scripts, exercise them on a scratch schema and, with
    ``options.database``, compare the real schemas and checksums with them."""
    from alembic_fleet.check.gate import CheckOptions, Subject, run_checks

    options = options or CheckOptions()
    names = list(dict.fromkeys(services)) or list(fleet.config.services)
    subjects = [Subject(fleet.service(n), fleet.scripts(n)) for n in names]

    def statuses(selected: Sequence[str]) -> list[TargetStatus]:
        return fleet.statuses(fleet.select(selected, tenants))

    return run_checks(subjects, options, statuses, fleet.databases)


def revision(fleet: Fleet, service: str, message: str, *, autogenerate: bool = False,
             scratch_url: str | None = None) -> tuple[list[Path], CheckReport]:
    """``fleet revision``: a new revision file for ``service``, checked at once."""
    from alembic_fleet.check.gate import Subject, create_revision

    subject = Subject(fleet.service(service), fleet.scripts(service))
    return create_revision(subject, message, autogenerate=autogenerate,
                           scratch_url=scratch_url, databases=fleet.databases)



@dataclass
class UpResult:
    """What ``fleet up`` did: the servers it made ready, the migrations it ran, the URLs."""

    embedded: bool
    outcome: RunOutcome | None
    """None when migrations were skipped or nothing was pending."""
    steps: list[Step]
    exports: dict[str, str]
    """Variable name -> libpq URL, the way each service reads its database."""


def up(fleet: Fleet, *, migrate: bool = True, wait: float = 30.0,
       on_event: EventSink = ignore) -> UpResult:
    """``fleet up``: databases ready (embedded started, others waited for), migrations run
    only when something is pending, and the URLs the services should use."""
    for database in fleet.databases_in_use():
        if database.is_embedded:  # starts the server, creates the database (engine cached)
            fleet.databases.engine(database)
    down = [d for d in fleet.databases_in_use() if not d.is_embedded]
    if down:
        still_down = wait_for_databases(fleet, wait)
        if still_down:
            raise DatabaseUnavailableError(
                f"{', '.join(still_down)} did not accept connections within {wait:g} s",
                hint="start the database (docker compose up -d postgres?), or unset "
                "DATABASE_URI to use the embedded PostgreSQL")
    steps: list[Step] = []
    outcome = None
    if migrate:
        steps = plan(fleet)
        if any(s.upgrade for s in steps):
            outcome = run_plan(fleet, steps, command="fleet up", on_event=on_event)
    return UpResult(fleet.config.uses_embedded, outcome, steps, database_exports(fleet))


def database_exports(fleet: Fleet) -> dict[str, str]:
    """The URL of each service's database under the variable the configuration reads."""
    names = database_variables(fleet.config.file, list(fleet.config.services))
    exports: dict[str, str] = {}
    for name, service in fleet.config.services.items():
        if names[name] not in exports:
            exports[names[name]] = libpq_url(fleet.databases.engine(service.database).url)
    return exports
