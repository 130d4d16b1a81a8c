"""The façade: one function per verb over an open workspace. Nothing here prints.

Each function composes the pipeline (workspace -> inventory -> plan -> execute) and returns
plain data; the CLI hands it to :mod:`alembic_fleet.reporting` and turns it into an exit
code with :func:`alembic_fleet.exit_codes.exit_code`. Library users can call these directly.
The dev loop and the embedded server are in :mod:`alembic_fleet.devloop`, tenant lifecycle
in :mod:`alembic_fleet.tenants`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import DBAPIError

from alembic_fleet import drivers, interpreters
from alembic_fleet.alembic_bridge.failures import RevisionFailed
from alembic_fleet.catalog.shared import existing_schemas
from alembic_fleet.catalog.versions import read_one
from alembic_fleet.config import find_config_file, load_config
from alembic_fleet.config.loader import SERVICE_NAME
from alembic_fleet.exceptions import (
    DatabaseUnavailableError,
    FleetError,
    RevisionError,
    UsageError,
)
from alembic_fleet.execution.events import EventSink, ignore
from alembic_fleet.execution.locking import configure_session, lock_key, try_lock, unlock
from alembic_fleet.execution.run import RunOptions, execute
from alembic_fleet.execution.target_migration import describe_error
from alembic_fleet.inventory import Inventory, read_inventory
from alembic_fleet.ledger import Ledger, RunInfo
from alembic_fleet.ledger.recorder import RunRecorder
from alembic_fleet.ledger.store import RunSummary
from alembic_fleet.ledger.target_ledger import RunLedger
from alembic_fleet.model.identifiers import validate_schema_template
from alembic_fleet.model.outcome import RunOutcome
from alembic_fleet.model.plan import Plan
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.shard import Shard, take_share
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    reached,
)
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.planning import make_plan
from alembic_fleet.redact import display, first_line
from alembic_fleet.shared_schemas import shared_schema_warnings
from alembic_fleet.workspace import Workspace

if TYPE_CHECKING:  # the check machinery (pglast, autogenerate) loads only for check
    from alembic_fleet.check.gate import CheckOptions, CheckReport
    from alembic_fleet.review.report import PlanReport


def status(workspace: Workspace, services: Sequence[str] = (), tenants: Sequence[str] = (),
           shard: Shard | None = None) -> Inventory:
    """Current against head for every selected target, and orphan schemas (when no tenant
    filter or shard is given)."""
    targets = take_share(workspace.select(services, tenants), shard)
    unloadable: dict[str, str] = {}
    first: RevisionError | None = None
    for name in dict.fromkeys(t.service for t in targets):
        try:
            workspace.graph(name)
        except RevisionError as exc:  # one broken service must not hide the others
            unloadable[name] = exc.message + (f" ({exc.hint})" if exc.hint else "")
            first = first or exc
    if first is not None and len(unloadable) == len({t.service for t in targets}):
        raise first
    targets = [t for t in targets if t.service not in unloadable]
    inventory = read_inventory(workspace, targets, orphans=not tenants and shard is None)
    shared = shared_schema_warnings(
        workspace, [t for t in targets if t.database.key not in inventory.unreachable])
    return replace(inventory, unloadable=unloadable,
                   warnings=(*inventory.warnings, *shared))


def migrate(workspace: Workspace, services: Sequence[str] = (), tenants: Sequence[str] = (),
            *, to: str | None = None, shard: Shard | None = None,
            options: RunOptions | None = None, on_event: EventSink = ignore) -> RunOutcome:
    """Bring the selected targets to head (or ``to``); targets already there are not touched."""
    plan = make_plan(workspace, services, tenants, to, shard)
    return execute(workspace, plan, options or RunOptions(), on_event)


def migrate_sql(workspace: Workspace, plan: Plan) -> list[TargetResult]:
    """The SQL each step of ``plan`` would run, from each target's current revision.

    A target whose schema does not exist gets its service's baseline in its script, as it
    would online (a SQL file; a Python baseline cannot be rendered and is refused)."""
    fresh = _fresh_targets(workspace, plan)
    requests: dict[str, list[tuple[int, tuple]]] = {}
    for index, step in enumerate(plan.steps):
        current = step.status.current
        if step.upgrade and len(current) > 1:
            raise UsageError(f"{step.target.label} has several current revisions; "
                             "--sql needs a single starting point")
        if step.upgrade:
            requests.setdefault(step.target.service, []).append((index, (
                step.target.schema, current[0] if current else None,
                plan.alembic_destination(step.target.service), "postgresql+psycopg://",
                step.target in fresh)))
    scripts: dict[int, str] = {}
    for name, wanted in requests.items():
        service = workspace.service(name)
        if service.python is not None:  # rendered by the service's own interpreter
            rendered = interpreters.call(service, "alembic_fleet.remote:upgrade_sql",
                                         service, [request for _, request in wanted])
        else:
            from alembic_fleet.alembic_bridge import runner  # imports Alembic

            rendered = [runner.upgrade_sql(workspace.scripts(name), *request[:-1],
                                           fresh=request[-1]) for _, request in wanted]
        scripts.update(zip((index for index, _ in wanted), rendered, strict=True))
    results = []
    for index, step in enumerate(plan.steps):
        current = step.status.current
        if index in scripts:
            results.append(TargetResult(step.target, Outcome.SKIPPED, current,
                                        step.status.head, note="SQL only, nothing executed",
                                        sql=scripts[index]))
        else:
            results.append(TargetResult(step.target, Outcome.SKIPPED, current, current,
                                        note=step.reason))
    return results


def _fresh_targets(workspace: Workspace, plan: Plan) -> set[Target]:
    """The targets to upgrade whose service has a baseline and whose schema does not exist
    (one catalog query per database)."""
    candidates: dict[str, list[Target]] = {}
    for step in plan.steps:
        if (step.upgrade and step.status.state is TargetState.MISSING
                and workspace.service(step.target.service).baseline is not None):
            candidates.setdefault(step.target.database.key, []).append(step.target)
    fresh = set()
    for group in candidates.values():
        with workspace.databases.connect(group[0].database) as connection:
            present = existing_schemas(connection, {t.schema for t in group})
        fresh.update(t for t in group if t.schema not in present)
    return fresh


def downgrade_target(workspace: Workspace, service: str, tenant: str | None) -> Target:
    """The one target ``downgrade`` acts on; per-tenant services need ``--tenant``."""
    svc = workspace.service(service)
    if svc.per_tenant and not tenant:
        raise UsageError(f"service '{service}' keeps one schema per tenant: pass --tenant T")
    return workspace.select([service], [tenant] if tenant and svc.per_tenant else [])[0]


def downgrade(workspace: Workspace, target: Target, revision: str) -> TargetResult:
    """Step one target down to ``revision`` (an id, ``base`` or ``-N``)."""
    if not revision.strip():
        raise UsageError("downgrade needs a revision: an id, 'base' or '-N'")
    if workspace.service(target.service).python is not None:  # its code runs there
        interpreters.resolve_embedded(workspace.databases, [target.database])
        return interpreters.run_command(workspace.service(target.service),
                                        workspace.config.file, "downgrade", target, revision)
    before = read_inventory(workspace, [target]).statuses[0]
    if before.state is TargetState.MISSING:
        raise UsageError(f"{target.label} has no version table: nothing to downgrade")
    scripts = workspace.scripts(target.service)
    table = scripts.service.version_table
    if revision != "base" and not revision.startswith("-"):
        wanted = scripts.resolve(revision)
        graph = scripts.graph
        if graph.ancestors(before.current) <= graph.ancestors(wanted):
            return TargetResult(target, Outcome.SKIPPED, before.current, before.current,
                                note=f"already at {', '.join(before.current) or 'base'}, "
                                f"not above {revision}: nothing to downgrade")
    recorder = None
    if workspace.config.ledger:  # the ledger forgets the revisions removed, in the same
        recorder = RunRecorder(workspace.databases,  # transaction that removes them
                               Ledger(workspace.config.ledger_schema),
                               RunInfo.current(f"fleet downgrade {target.label} {revision}"))
        recorder.start([Step(before, True)])
    started = time.perf_counter()

    def run() -> TargetResult | tuple[str, ...]:
        """The downgrade on the service's driver; the revisions it leaves, or a failure."""
        with workspace.databases.connect(target.database, for_migrations=True) as connection:
            # The same manners as a migration: timeouts so the application never queues
            # behind it for longer than the lock timeout, and the target's lock so that no
            # runner migrates it meanwhile.
            config = workspace.config
            configure_session(connection, lock_timeout=config.lock_timeout,
                              statement_timeout=config.statement_timeout)
            key = lock_key(target.service, target.schema)
            if not try_lock(connection, key, config.lock_wait):
                raise FleetError(f"{target.label} is being migrated by another runner",
                                 hint="run the downgrade again when it is done")
            listener = None
            if recorder is not None:
                listener = RunLedger(recorder.ledger, recorder.info.run_id).for_target(
                    target, table, scripts.graph, before.current, started, 1, "downgraded")
            from alembic_fleet.alembic_bridge import runner  # imports Alembic

            try:
                runner.downgrade(scripts, connection, target.schema, revision, listener)
            except RevisionFailed as exc:
                reason, hint = describe_error(exc.error)
                return TargetResult(target, Outcome.FAILED, before.current, before.current,
                                    error=(f"revision {exc.revision}: " if exc.revision
                                           else "") + reason
                                    + (f" ({exc.location})" if exc.location else ""),
                                    hint=hint)
            finally:
                connection.rollback()
                unlock(connection, key)
            return read_one(connection, target.schema, table) or ()

    try:
        after = drivers.run_on(target.database.url, run)
    finally:
        if recorder is not None:
            recorder.finish("succeeded")
    if isinstance(after, TargetResult):
        return after
    return TargetResult(target, Outcome.MIGRATED, before.current, after,
                        time.perf_counter() - started)


def history(workspace: Workspace, service: str) -> RevisionGraph:
    """The revision graph of one service, read from its scripts (no database)."""
    return workspace.graph(service)


def heads(workspace: Workspace, services: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Head revisions per service, read from the scripts (no database)."""
    result = {}
    for name in list(dict.fromkeys(services)) or list(workspace.config.services):
        graph = workspace.graph(name)
        if not graph.heads:
            raise RevisionError(f"service '{name}' has no revisions")
        result[name] = graph.heads
    return result


def log(workspace: Workspace, limit: int = 20) -> list[tuple[str, RunSummary]]:
    """Recent runs from the ledger of every configured database, newest first."""
    ledger = Ledger(workspace.config.ledger_schema)
    runs = [(display(database), run) for database, found in _each_ledger(
        workspace, lambda connection: ledger.recent_runs(connection, limit)) for run in found]
    runs.sort(key=lambda item: item[1].started_at, reverse=True)
    return runs[:limit]


def run_details(workspace: Workspace, run_id: str) -> list[dict]:
    """The targets a run (given by an id prefix) migrated or failed, from every ledger."""
    ledger = Ledger(workspace.config.ledger_schema)
    return [row for _, rows in _each_ledger(
        workspace, lambda connection: ledger.run_targets(connection, run_id)) for row in rows]


T = TypeVar("T")


def _each_ledger(workspace: Workspace, read: Callable[[Any], list[T]]
                 ) -> list[tuple[Database, list[T]]]:
    """What ``read`` finds in each configured database's ledger, once per database on the
    server: two URLs of one database (another driver, another spelling of the host) hold
    one ledger, whose runs are listed once (see :meth:`Databases.identity`)."""
    seen: set[tuple[object, ...]] = set()
    found: list[tuple[Database, list[T]]] = []
    for database in workspace.databases_in_use():
        with workspace.databases.connect(database) as connection, _reading_ledger(
                workspace, database):
            identity = workspace.databases.identity(database, connection)
            if identity not in seen:
                seen.add(identity)
                found.append((database, read(connection)))
    return found


@contextlib.contextmanager
def _reading_ledger(workspace: Workspace, database: Database):
    """A ledger the user may not read (no USAGE on its schema, say) is a clear error
    naming it, not an internal one with the SQL; what to do next depends on what the
    database said (a right missing, a table gone, a lock held)."""
    try:
        yield
    except DBAPIError as exc:
        schema = workspace.config.ledger_schema
        hint = {
            "42501": f"grant this user USAGE on schema {schema} and SELECT on its tables, "
                     "or run it as the user that migrates",
            "42P01": "a ledger table is missing (the history it held is gone): the next "
                     "fleet migrate that migrates something makes it again",
            "55P03": "another session holds a lock on a ledger table (a run recording, or "
                     "a LOCK TABLE): try again, or see who holds it in pg_locks",
        }.get(drivers.sqlstate(exc) or "")
        raise FleetError(f"cannot read the ledger ({schema}) in {display(database)}: "
                         f"{first_line(exc)}", hint=hint) from None


def wait_for_databases(workspace: Workspace, seconds: float) -> list[str]:
    """Wait until every configured database accepts connections; the ones still down."""
    deadline = time.monotonic() + seconds
    pending = {d.key: d for d in workspace.databases_in_use()}
    first = True
    while True:
        for key, database in list(pending.items()):
            left = deadline - time.monotonic()
            # Each database is asked at least once: one that froze and took all the time
            # must not get a healthy one named as down.
            if left <= 0 and not first:
                break
            try:
                workspace.databases.probe(database, left)
                del pending[key]
            except (DatabaseUnavailableError, DBAPIError):
                continue
        first = False
        if not pending or time.monotonic() >= deadline:
            return [display(d) for d in pending.values()]
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def require_databases(workspace: Workspace, seconds: float) -> None:
    """Wait for the databases; an error naming those still down after ``seconds``."""
    down = wait_for_databases(workspace, seconds)
    if down:
        raise DatabaseUnavailableError(
            f"still not accepting connections after {seconds:g}s: {', '.join(down)}",
            hint="check the server, or wait longer (--wait-for-db / fleet wait --timeout)")


def parse_revision_gates(pairs: Sequence[str]) -> dict[str, str]:
    """``SERVICE=REV`` pairs (``fleet wait --revision``) as a mapping; malformed ones are
    usage errors."""
    gates: dict[str, str] = {}
    for pair in pairs:
        service, sep, revision = pair.partition("=")
        if not sep or not service.strip() or not revision.strip():
            raise UsageError(f"--revision {pair!r}: expected SERVICE=REVISION",
                             hint="e.g. --revision auth=a15f8c0e3d96 (or auth=head)")
        gates[service.strip()] = revision.strip()
    return gates


def wait_for_revisions(workspace: Workspace, gates: dict[str, str], seconds: float
                       ) -> list[TargetStatus]:
    """Wait until every target of each service in ``gates`` is at its revision or a
    descendant (``fleet wait --revision``: an init container of the application's new
    version); returns the targets still short when ``seconds`` ran out (empty: all there).
    """
    wanted = {name: workspace.scripts(name).resolve(revision)
              for name, revision in gates.items()}
    targets = workspace.select(list(gates))
    deadline = time.monotonic() + seconds
    while True:
        statuses = read_inventory(workspace, targets).statuses
        short = [s for s in statuses
                 if not reached(workspace.graph(s.target.service), s,
                                wanted[s.target.service])]
        if not short or time.monotonic() >= deadline:
            return short
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def check(workspace: Workspace, services: Sequence[str] = (), tenants: Sequence[str] = (), *,
          options: CheckOptions | None = None) -> CheckReport:
    """``fleet check``: lint the scripts, exercise them on a scratch schema and, with
    ``options.database``, compare the real schemas and checksums with them."""
    from alembic_fleet.check.gate import CheckedService, CheckOptions, run_checks
    from alembic_fleet.check.scratch_layer import scratch_server

    options = options or CheckOptions()
    names = list(dict.fromkeys(services)) or list(workspace.config.services)
    own = [n for n in names if workspace.service(n).python is not None]
    subjects = [CheckedService(workspace.service(n), workspace.scripts(n))
                for n in names if n not in own]

    def statuses(selected: Sequence[str]) -> Sequence:
        return read_inventory(workspace, workspace.select(selected, tenants)).statuses

    scratch = (scratch_server(workspace.databases, options.scratch_url)
               if own and options.scratch else contextlib.nullcontext())
    with scratch:
        report = run_checks(subjects, options, statuses, workspace.databases,
                            ledger_schema=workspace.config.ledger_schema)
        if own:
            interpreters.resolve_embedded(workspace.databases, workspace.databases_in_use())
        for name in own:  # checked by the service's own interpreter, which imports its code
            report.merge(interpreters.run_command(workspace.service(name),
                                                  workspace.config.file, "check", [name],
                                                  tenants, options=options))
    return report


def revision(workspace: Workspace, service: str, message: str, *, autogenerate: bool = False,
             scratch_url: str | None = None) -> tuple[list[Path], CheckReport]:
    """``fleet revision``: a new revision file for ``service``, checked at once."""
    from alembic_fleet.check.gate import CheckedService, create_revision
    from alembic_fleet.check.scratch_layer import scratch_server

    if workspace.service(service).python is not None:
        scratch = (scratch_server(workspace.databases, scratch_url) if autogenerate
                   else contextlib.nullcontext())
        with scratch:
            interpreters.resolve_embedded(workspace.databases, workspace.databases_in_use())
            return interpreters.run_command(workspace.service(service),
                                            workspace.config.file, "revision", service,
                                            message, autogenerate=autogenerate,
                                            scratch_url=scratch_url)
    subject = CheckedService(workspace.service(service), workspace.scripts(service))
    return create_revision(subject, message, autogenerate=autogenerate,
                           scratch_url=scratch_url, databases=workspace.databases)


def plan(workspace: Workspace, services: Sequence[str] = (), tenants: Sequence[str] = (), *,
         jobs: int | None = None) -> PlanReport:
    """``fleet plan``: per service, the pending revisions statement by statement (the lock
    each takes and on which table, rewrite or scan, tenants, the largest copy), unsafe
    findings and an estimate from the ledger. Reads only; nothing runs."""
    from alembic_fleet.review.build import build_plan

    return build_plan(workspace, services, tenants, jobs=jobs)


def init(config_path: str | None, service: tuple[str, str] | None, schema: str | None
         ) -> list[Path]:
    """Write a fleet.toml (in the working directory), or add a service to the existing one."""
    from alembic_fleet.alembic_bridge import scaffold  # imports Alembic and tomlkit

    if service is None:
        return [scaffold.write_config(Path.cwd())]
    name, folder = service
    if not SERVICE_NAME.fullmatch(name):
        raise UsageError(f"invalid service name {name!r}",
                         hint="a lowercase letter, then lowercase letters, digits, '_' or '-'")
    config_file = find_config_file(config_path)
    template = schema or f"{name.replace('-', '_')}_{{tenant}}"
    validate_schema_template(template, file=None, key="--schema")
    written = scaffold.add_service(config_file, name, folder, template)
    load_config(config_file)  # the result must be a valid configuration
    return written

