"""Execute a plan: pre-flight checks, the executor, the ledger, and the run's outcome.

:func:`execute` is the one entry point: it refuses before anything runs when a pre-flight
check fails, picks the executor (worker processes when more than one target runs on more
than one job, otherwise this process, with no start-up cost), records the run in the ledger
and returns a :class:`~alembic_fleet.model.outcome.RunOutcome`. It never prints: progress
goes to the ``on_event`` listener.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from alembic_fleet.exceptions import DatabaseUnavailableError, Terminated, UsageError
from alembic_fleet.execution.events import EventSink, ignore
from alembic_fleet.execution.executor import (
    INTERRUPTED_ERROR,
    RunInterrupted,
    SerialExecutor,
)
from alembic_fleet.execution.locking import lock_key, try_lock, unlock
from alembic_fleet.execution.mirror_upkeep import keep_up
from alembic_fleet.execution.preflight import (
    check_direct_sessions,
    check_drivers,
    refuse_changed_revisions,
    refuse_legacy_shared_context,
    services_by_database,
)
from alembic_fleet.execution.provision import fallback_warnings
from alembic_fleet.execution.target_migration import Policy, TargetMigrator, WorkFactory
from alembic_fleet.ledger import Ledger, RunInfo
from alembic_fleet.ledger.recorder import RunRecorder
from alembic_fleet.ledger.target_ledger import RunLedger
from alembic_fleet.model.budget import Budget
from alembic_fleet.model.outcome import RunEnd, RunOutcome
from alembic_fleet.model.plan import Plan
from alembic_fleet.model.schedule import Schedule
from alembic_fleet.model.status import Outcome, Step, TargetResult
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.shared_schemas import shared_schema_warnings
from alembic_fleet.workspace import Workspace

if TYPE_CHECKING:  # worker processes are imported when a run has them (multiprocessing, ctypes)
    from alembic_fleet.execution.pool import PoolExecutor


@dataclass(frozen=True)
class RunOptions:
    """How to run a plan: parallelism, failure handling, safety policy, provenance."""

    jobs: int | None = None
    fail_fast: bool = False
    policy: Policy | None = None
    """None: the configuration's (:func:`policy_for`), as every command that migrates
    without lock or timeout options of its own (``tenants add``, ``up``) must run."""
    command: str = "fleet migrate"
    allow_changed: bool = False
    canary: int = 0
    """Migrate this many tenants first (priority order) and stop if any of them fails."""
    canary_tenants: tuple[str, ...] = ()
    """The canary wave's tenants, by name (instead of the first ``canary``)."""
    max_failures: int | None = None
    max_failure_percent: float | None = None
    deadline: float | None = None
    """Seconds from the start after which no target may still be running."""
    started: float | None = None
    """When the command started (``time.monotonic()``): the deadline counts from there,
    waiting for the databases and planning included (default: when the run starts)."""
    checked: tuple[str, ...] | None = None
    """The warnings of :func:`preflight`, when the caller ran it already (not again)."""


def policy_for(workspace: Workspace, **overrides: float | int | None) -> Policy:
    """The run's lock, timeout and retry policy: configuration, then command-line options."""
    config = workspace.config
    values: dict[str, float | int] = {
        "lock_wait": config.lock_wait, "lock_timeout": config.lock_timeout,
        "statement_timeout": config.statement_timeout, "retries": config.retries}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Policy(lock_wait=float(values["lock_wait"]),
                  lock_timeout=float(values["lock_timeout"]),
                  statement_timeout=float(values["statement_timeout"]),
                  retries=int(values["retries"]))


READ_MARGIN = 0.05
"""Seconds added to the time between reading the tenants and starting the run row. That
time is measured after the row's insert, so it already reaches back past the reading;
the margin only covers the two clocks' ticks. Small, since a tenant removed and added
again within it would be taken as removed by the add (created by the next run)."""


def preflight(workspace: Workspace, plan: Plan, options: RunOptions | None = None
              ) -> tuple[str, ...]:
    """The checks :func:`execute` makes before anything runs, on their own: for a command
    that must know the run will start before it changes anything else (``tenants add``
    records its tenants only then). Raises as :func:`execute` would; returns the warnings,
    to be handed to it as ``RunOptions.checked``."""
    options = options or RunOptions()
    return tuple(_preflight(workspace, [plan.steps[i] for i in _reachable(plan)], options))


def _reachable(plan: Plan) -> list[int]:
    """The indices of the steps whose database could be read; none at all is an error."""
    reachable = [i for i, s in enumerate(plan.steps)
                 if s.target.database.key not in plan.unreachable]
    if plan.unreachable and not reachable:
        raise DatabaseUnavailableError(next(iter(plan.unreachable.values())))
    return reachable


def _preflight(workspace: Workspace, steps: list[Step], options: RunOptions) -> list[str]:
    if not any(s.upgrade for s in steps):
        return []
    warnings: list[str] = []
    check_drivers(workspace, steps)
    refuse_legacy_shared_context(workspace, steps)
    check_direct_sessions(workspace, steps)
    if workspace.config.ledger and not options.allow_changed:
        warnings += refuse_changed_revisions(workspace, steps)
    warnings += shared_schema_warnings(workspace, [s.target for s in steps if s.upgrade])
    return warnings


def execute(workspace: Workspace, plan: Plan, options: RunOptions | None = None,
            on_event: EventSink = ignore) -> RunOutcome:
    """Run ``plan``; targets that need no upgrade are reported skipped.

    Raises :class:`ChangedRevisionError` or a usage error before anything runs when a
    pre-flight check fails. Ctrl-C ends the run with the targets in flight rolled back
    and an outcome whose ``end`` says so.
    """
    options = options or RunOptions()
    if options.policy is None:
        options = replace(options, policy=policy_for(workspace))
    started = options.started if options.started is not None else time.monotonic()
    reachable = _reachable(plan)
    steps = [plan.steps[i] for i in reachable]
    local = {index: position for position, index in enumerate(reachable)}
    order = [local[i] for i in plan.order if i in local]
    canary, note = _canary(workspace, steps, order, options)
    order = [i for i in order if i in canary] + [i for i in order if i not in canary]
    schedule = Schedule(order,
                        {local[i]: {local[w] for w in ws} for i, ws in plan.waits.items()})
    runnable = sum(1 for s in steps if s.upgrade)
    warnings: list[str] = [note] if note else []
    warnings += (list(options.checked) if options.checked is not None
                 else _preflight(workspace, steps, options))
    recorder = _recorder(workspace, steps, options) if runnable else None
    try:  # the run's row is written: a Ctrl-C before its work starts closes it too
        run_ledger = (RunLedger(recorder.ledger, recorder.info.run_id,
                                time.monotonic() - workspace.tenants_read_at + READ_MARGIN)
                      if recorder else None)
        settler = (_Settler(workspace, recorder, run_ledger, options.policy)
                   if recorder is not None and run_ledger is not None else None)
        budget = Budget(options.max_failures, options.max_failure_percent,
                        None if options.deadline is None else started + options.deadline,
                        _typical_seconds(workspace, steps) if options.deadline else {})
        executor, work = _executor(workspace, plan, steps, runnable, options, run_ledger,
                                   settler, budget, frozenset(canary))
    except KeyboardInterrupt as stop:
        if recorder is not None:
            recorder.finish((RunEnd.TERMINATED if isinstance(stop, Terminated)
                             else RunEnd.INTERRUPTED).value)
        raise
    end = RunEnd.COMPLETED
    detail = None
    try:
        results = executor.run(steps, schedule, on_event)
        if executor.book is not None and executor.book.stopped_by is not None:
            end, detail = executor.book.stopped_by, executor.book.stop_detail
    except RunInterrupted as interrupted:
        results = interrupted.results
        end = RunEnd.TERMINATED if interrupted.terminated else RunEnd.INTERRUPTED
    finally:
        if work is not None:
            work.close()
    if end is RunEnd.COMPLETED:
        warnings += keep_up(workspace, plan)
    elif settler is not None:
        results, more = _settle_stopped(settler, steps, results)
        warnings += more
    by_target = {r.target: r for r in results}
    ordered = tuple(by_target.get(s.target) or _unreachable(plan, s) for s in plan.steps)
    failed = any(r.outcome is Outcome.FAILED for r in ordered)
    if recorder is not None:
        recorder.finish(end.value if end is not RunEnd.COMPLETED
                        else "failed" if failed else "succeeded")
    warnings += recorder.warnings if recorder else []
    warnings += fallback_warnings(ordered)
    return RunOutcome(ordered, plan.statuses, tuple(warnings),
                      recorder.info.run_id if recorder else None, end, detail)


def _settle_stopped(settler: _Settler, steps: list[Step], results: list[TargetResult]
                    ) -> tuple[list[TargetResult], list[str]]:
    """The targets a stopped run (Ctrl-C, SIGTERM) cut off, settled from the database as a
    dead worker's are (:class:`_Settler`): a Ctrl-C in this process may land after a
    target's COMMIT, which then stands, migrated. The others were rolled back, and get
    their failed row (nobody else would write one), so that the ledger counts what the run
    reports. Their sessions are gone by now: workers killed, this process's connection
    closed. The pool asked the database once already for its in-flight targets (its
    progress shows what it found); asking again costs a lock and a row per target in flight,
    at most one per job, on the run row's session, and keeps one place that decides for
    both executors."""
    by_target = {step.target: step for step in steps}
    settled, warnings = [], []
    for result in results:
        if result.outcome is Outcome.FAILED and result.error == INTERRUPTED_ERROR:
            try:
                found = settler(by_target[result.target])
                if found is None:
                    settler.failed(result)
                else:
                    result = found
            except Exception as exc:  # the ledger never breaks a run's report
                warnings.append(f"could not settle {result.target.schema} in the ledger: "
                                f"{type(exc).__name__}")
        settled.append(result)
    return settled, warnings


def _canary(workspace: Workspace, steps: list[Step], order: list[int], options: RunOptions
            ) -> tuple[set[int], str | None]:
    """The canary wave and a warning: the targets of the tenants named, or of the first
    ``canary`` tenants (in run order) with work to do, plus the single-schema targets that
    depend on no other service (one that does waits for every tenant: it cannot be in a
    wave that goes first). Named tenants that have nothing to do are replaced by the first
    tenants that have, so that the wave still tests the new revisions."""
    if not options.canary and not options.canary_tenants:
        return set(), None
    with_work = list(dict.fromkeys(steps[i].target.tenant for i in order
                                   if steps[i].upgrade and steps[i].target.tenant))
    note = None
    if options.canary_tenants:
        known = {s.target.tenant for s in steps}
        unknown = [t for t in options.canary_tenants if t not in known]
        if unknown:
            raise UsageError(f"--canary-tenant {unknown[0]!r} is not among this run's "
                             "tenants", hint="name a configured tenant that this run covers")
        chosen = {t for t in options.canary_tenants if t in with_work}
        if not chosen and with_work:
            chosen = set(with_work[:len(options.canary_tenants)])
            note = (f"the canary tenant(s) {', '.join(options.canary_tenants)} have nothing "
                    f"to migrate: the wave is {', '.join(sorted(chosen))} instead")
    else:
        chosen = set(with_work[:options.canary])
    alone = {name for name in {s.target.service for s in steps}
             if not workspace.service(name).depends_on}
    return {i for i, s in enumerate(steps) if s.target.tenant in chosen
            or (s.target.tenant is None and s.upgrade and s.target.service in alone)}, note


def _typical_seconds(workspace: Workspace, steps: list[Step]) -> dict[str, float]:
    """Per service, a target's usual seconds from the ledgers of the databases involved
    (the longest where they differ); nothing when there is no ledger or it cannot be read."""
    if not workspace.config.ledger:
        return {}
    typical: dict[str, float] = {}
    ledger = Ledger(workspace.config.ledger_schema)
    for database, services in services_by_database(steps):
        try:
            with workspace.databases.connect(database) as connection:
                found = ledger.typical_seconds(connection, sorted(services))
        except (DBAPIError, DatabaseUnavailableError):
            continue
        for service, seconds in found.items():
            typical[service] = max(seconds, typical.get(service, 0.0))
    return typical


def _recorder(workspace: Workspace, steps: list[Step], options: RunOptions
              ) -> RunRecorder | None:
    if not workspace.config.ledger:
        return None
    recorder = RunRecorder(workspace.databases,
                           Ledger(workspace.config.ledger_schema, options.policy.lock_timeout),
                           RunInfo.current(options.command))
    recorder.start(steps)
    return recorder


def _executor(workspace: Workspace, plan: Plan, steps: list[Step], runnable: int,
              options: RunOptions, run_ledger: RunLedger | None, settler: _Settler | None,
              budget: Budget, canary: frozenset[int]
              ) -> tuple[PoolExecutor | SerialExecutor, TargetMigrator | None]:
    """Worker processes for more than one target on more than one job; else this process."""
    names = list(dict.fromkeys(s.target.service for s in steps))
    scripts = {name: workspace.scripts(name) for name in names}
    targets = {name: plan.alembic_destination(name) for name in names}
    wanted = options.jobs or workspace.config.jobs or os.cpu_count() or 1
    # A service with its own interpreter always runs in workers started there.
    own_python = {name: workspace.service(name) for name in names
                  if workspace.service(name).python is not None}
    if (wanted > 1 and runnable > 1) or (own_python and runnable):
        for name, script in scripts.items():  # load and render before forking: the
            if name in own_python:  # workers inherit all of it (never another's code)
                continue
            script.prepare({s.status.current for s in steps
                            if s.upgrade and s.target.service == name}, targets[name])
        factory = WorkFactory(workspace.config.embedded_dir,
                              {name: workspace.service(name) for name in names}, targets,
                              workspace.config.secrets, scripts, options.policy, run_ledger)
        from alembic_fleet.execution.pool import PoolExecutor

        return PoolExecutor(factory, jobs=max(1, min(wanted, runnable)),
                            fail_fast=options.fail_fast, settle=settler,
                            record_failed=settler.failed if settler else None,
                            own_python=own_python, budget=budget, canary=canary), None
    work = TargetMigrator(workspace.databases, scripts, targets, options.policy, run_ledger)
    return SerialExecutor(work, fail_fast=options.fail_fast, budget=budget,
                          canary=canary), work


class _Settler:
    """How the parent finds out what happened to a target whose worker died or was
    stopped, and writes the failed row of one that was rolled back.

    The dead worker's session lock is released only once its server process is done with
    whatever it was doing (a COMMIT included), so the parent takes the target's lock first,
    then reads the target's ledger row, which exists exactly when the migration committed.
    It works on the run row's session (:meth:`RunRecorder.session`); a database it could
    not reach is not asked again in this run (each attempt would wait for the connect
    timeout, and a stopping run has seconds)."""

    def __init__(self, workspace: Workspace, recorder: RunRecorder, run_ledger: RunLedger,
                 policy: Policy) -> None:
        self.workspace = workspace
        self.recorder = recorder
        self.run_ledger = run_ledger
        self.policy = policy
        self.unreachable: dict[str, DatabaseUnavailableError] = {}
        self.rolled_back: set[Target] = set()
        """Targets found rolled back: their lock taken, no committed row. Only those get a
        failed row (one whose lock stayed held may still be committing)."""

    @contextlib.contextmanager
    def session(self, database: Database) -> Iterator[Any]:
        known = self.unreachable.get(database.key)
        if known is not None:
            raise known
        try:
            with self.recorder.session(database) as connection:
                yield connection
        except DatabaseUnavailableError as exc:
            self.unreachable[database.key] = exc
            raise

    def __call__(self, step: Step) -> TargetResult | None:
        target = step.target
        key = lock_key(target.service, target.schema)
        with self.session(target.database) as connection:
            if not try_lock(connection, key, self.policy.lock_wait):
                return None
            try:
                row = self.run_ledger.ledger.target_row(connection, self.run_ledger.run_id,
                                                        target.service, target.schema)
            finally:  # a read that failed (a locked ledger) must not keep the target's lock
                if connection.in_transaction():
                    connection.rollback()
                unlock(connection, key)
        # 'running': revisions committed one by one, short of the destination.
        if row is None or row[0] not in ("migrated", "running"):
            self.rolled_back.add(target)
            return None
        if self.workspace.graph(target.service).pending(row[1], step.status.head):
            # One transaction per revision: some committed, the rest did not run.
            return TargetResult(target, Outcome.FAILED, step.status.current, row[1], row[2],
                                error=f"it was stopped after revision "
                                f"{', '.join(row[1])} committed; the later ones did not run",
                                hint="run 'fleet migrate' again: only failed and pending "
                                "targets run")
        return TargetResult(target, Outcome.MIGRATED, step.status.current, row[1], row[2],
                            note="it was stopped (or its worker died) right after the "
                            "commit; the migration stands")

    def failed(self, result: TargetResult) -> None:
        """The failed row of a target found rolled back (its worker, which would have
        written it, was stopped or died); nothing for one not known to be."""
        if result.target not in self.rolled_back:
            return
        with self.session(result.target.database) as connection:
            self.run_ledger.failed(connection, result.target, result.from_revs,
                                   result.seconds, result.error, result.attempts)


def _unreachable(plan: Plan, step: Step) -> TargetResult:
    """The result of a target whose database could not be reached: it did not run."""
    return TargetResult(step.target, Outcome.FAILED, (), (),
                        error=plan.unreachable[step.target.database.key],
                        hint="run 'fleet migrate' again once this database is reachable")
