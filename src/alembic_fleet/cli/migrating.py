"""Commands that migrate and report: migrate, status, downgrade, history, heads, log, wait."""

from __future__ import annotations

from collections.abc import Sequence

import click

from alembic_fleet.cli.app import (
    STARTED,
    Invocation,
    cli,
    command_line,
    confirm,
    facade,
    json_option,
    make_reporter,
    positive_seconds,
    seconds,
    shard_from,
    shard_option,
    tenant_option,
)
from alembic_fleet.cli.telemetry import RunTelemetry, telemetry_options
from alembic_fleet.exceptions import UsageError
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.gc_pause import collection_paused
from alembic_fleet.model.budget import parse_duration, parse_max_failures


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@tenant_option
@click.option("--to", "to", metavar="REV", help="Stop at this revision (needs one SERVICE).")
@shard_option
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes (default: 'jobs' in the config, else one per CPU).")
@click.option("--fail-fast", is_flag=True, help="Start no new target after the first failure.")
@click.option("--dry-run", is_flag=True, help="Print the plan; execute nothing.")
@click.option("--sql", is_flag=True, help="Print the SQL each target would run; execute nothing.")
@click.option("--lock-wait", type=seconds, metavar="S",
              help="Wait this long for another runner's lock on a target (default 60).")
@click.option("--lock-timeout", type=positive_seconds, metavar="S",
              help="Give up a DDL statement waiting this long for a table lock, and retry "
              "(default 5).")
@click.option("--statement-timeout", type=seconds, metavar="S",
              help="Cancel any statement running longer (default 3600; 0: no limit).")
@click.option("--retries", type=click.IntRange(min=0), metavar="N",
              help="Retries of a target after a lock timeout, lost connection or server "
              "restart (default 3).")
@click.option("--allow-changed", is_flag=True,
              help="Run even though an applied revision file changed since it was applied.")
@click.option("--wait-for-db", type=seconds, metavar="S",
              help="First wait up to S seconds for the databases to accept connections.")
@click.option("--canary", type=click.IntRange(min=1), metavar="N",
              help="Migrate N tenants first (highest priority first) and stop, exit 1, if "
              "any of their targets fails.")
@click.option("--canary-tenant", "canary_tenants", multiple=True, metavar="T",
              help="The canary wave's tenants by name (repeatable; instead of --canary N).")
@click.option("--max-failures", metavar="N|P%",
              help="Start no new target once more than N targets (or P% of them) failed; "
              "the rest is reported pending and a rerun resumes.")
@click.option("--deadline", metavar="DURATION", envvar="FLEET_DEADLINE",
              help="Start no target that would not finish within DURATION of the start "
              "(900, 15m, 1h30m; also FLEET_DEADLINE): those in flight finish, the rest is "
              "pending, exit 4, and a rerun resumes.")
@json_option
@click.pass_obj
@telemetry_options
def migrate(invocation: Invocation, services: Sequence[str], tenants: Sequence[str], to: str | None,
            shard: str | None, jobs: int | None, fail_fast: bool, dry_run: bool, sql: bool,
            lock_wait: float | None, lock_timeout: float | None,
            statement_timeout: float | None, retries: int | None, allow_changed: bool,
            wait_for_db: float | None, canary: int | None, canary_tenants: Sequence[str],
            max_failures: str | None, deadline: str | None, as_json: bool,
            telemetry: RunTelemetry) -> int:
    """Bring targets to head (or --to REV). Targets already there are not touched.

    Each target migrates in one transaction under an advisory lock, so concurrent runners
    never apply a revision twice. A failed target is rolled back and reported; the others
    go on. Ctrl-C rolls back the targets in flight and exits with 130.

    Production rollouts: --canary migrates a first wave, --max-failures is an error
    budget, --deadline a time budget; a run they stop reports the targets it did not
    start as pending, and a rerun resumes.

    Exit codes: 0 every target reached its revision; 1 some target failed; 2 usage,
    configuration or database unreachable (nothing executed); 4 stopped at its deadline
    (rerun resumes); 130 interrupted; 143 terminated.
    """
    from alembic_fleet.execution.run import RunOptions, execute, policy_for
    from alembic_fleet.planning import make_plan

    budget = rollout_options(canary, canary_tenants, max_failures, deadline)
    reporter = make_reporter(json_mode=as_json)
    share = shard_from(shard)
    with collection_paused():  # the plan is data that lives until the end
        workspace = invocation.workspace()
    if wait_for_db is not None:
        facade().require_databases(workspace, wait_for_db)
    with collection_paused():
        plan = make_plan(workspace, services, tenants, to, share)
    if share is not None:
        reporter.note(f"shard {share}: {len(plan.steps)} target(s) of this shard")
    if sql:
        reporter.sql(facade().migrate_sql(workspace, plan))
        return ExitCode.OK
    if dry_run:
        reporter.plan(plan)
        return ExitCode.OK
    policy = policy_for(workspace, lock_wait=lock_wait, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout, retries=retries)
    options = RunOptions(jobs=jobs, fail_fast=fail_fast, policy=policy,
                         command=command_line(), allow_changed=allow_changed, **budget)
    outcome = execute(workspace, plan, options, telemetry.sink(reporter.event))
    with collection_paused():
        reporter.migrate(outcome)
    return exit_code(outcome)

def rollout_options(canary: int | None, canary_tenants: Sequence[str],
                    max_failures: str | None, deadline: str | None) -> dict[str, object]:
    """The rollout options as :class:`RunOptions` fields; bad values are usage errors."""
    if canary and canary_tenants:
        raise UsageError("--canary and --canary-tenant exclude each other",
                         hint="name the tenants, or give their number")
    fields: dict[str, object] = {"canary": canary or 0,
                                 "canary_tenants": tuple(dict.fromkeys(canary_tenants))}
    try:
        if max_failures is not None:
            count, percent = parse_max_failures(max_failures)
            fields.update(max_failures=count, max_failure_percent=percent)
        if deadline:
            fields["deadline"] = parse_duration(deadline)
            fields["started"] = STARTED
    except ValueError as exc:
        raise UsageError(str(exc), hint="e.g. --max-failures 10 or 5%, --deadline 45m") from None
    return fields


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@tenant_option
@shard_option
@json_option
@click.pass_obj
def status(invocation: Invocation, services: Sequence[str], tenants: Sequence[str],
           shard: str | None, as_json: bool) -> int:
    """Show the current revision of every target against its head.

    Schemas a service's template matches whose tenant is not configured are listed with
    the state 'orphan' (without --tenant); they do not change the exit code.

    Exit codes: 0 every target at head; 3 some target behind, missing, ahead, failed or
    unreachable (its database could not be read); 2 usage or configuration error, scripts
    that cannot be loaded, or no database reachable.
    """
    with collection_paused():  # only builds data that lives until the end
        inventory = facade().status(invocation.workspace(), services, tenants,
                                    shard=shard_from(shard))
        make_reporter(json_mode=as_json).status(inventory)
    return exit_code(inventory)

@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("revision")
@click.option("--tenant", "-t", metavar="T", help="The tenant (per-tenant services).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def downgrade(invocation: Invocation, service: str, revision: str, tenant: str | None, yes: bool,
              as_json: bool) -> int:
    """Step one target down to REVISION (an id, 'base' or '-N', e.g. -1).

    Asks first; without a terminal to ask at, --yes is needed.

    Exit codes: 0 done; 1 the downgrade failed, or declined; 2 bad input, or no terminal
    to confirm at and no --yes.
    """
    workspace = invocation.workspace()
    target = facade().downgrade_target(workspace, service, tenant)
    confirm(f"Downgrade {target.label} to {revision}? Data in dropped tables and "
             "columns is lost.", yes)
    result = facade().downgrade(workspace, target, revision)
    make_reporter(json_mode=as_json).downgrade(result)
    return ExitCode.FAILED if result.error else ExitCode.OK

@cli.command()
@click.argument("service")
@json_option
@click.pass_obj
def history(invocation: Invocation, service: str, as_json: bool) -> int:
    """List a service's revisions, newest first (reads the scripts only)."""
    graph = facade().history(invocation.workspace(), service)
    make_reporter(json_mode=as_json).history(service, graph)
    return ExitCode.OK

@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@json_option
@click.pass_obj
def heads(invocation: Invocation, services: Sequence[str], as_json: bool) -> int:
    """Show each service's head revision(s) (reads the scripts only)."""
    make_reporter(json_mode=as_json).heads(facade().heads(invocation.workspace(), services))
    return ExitCode.OK

@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="How many runs to show.")
@click.option("--run", "run_id", metavar="ID", help="Show the targets of one run (id prefix).")
@json_option
@click.pass_obj
def log(invocation: Invocation, limit: int, run_id: str | None, as_json: bool) -> int:
    """Show recent runs from the ledger (who, where, when, what they did)."""
    reporter = make_reporter(json_mode=as_json)
    workspace = invocation.workspace()
    if run_id:
        rows = facade().run_details(workspace, run_id)
        if not rows:
            raise UsageError(f"no run {run_id!r} in the ledger", hint="see 'fleet log'")
        reporter.run_details(run_id, rows)
    else:
        reporter.runs(facade().log(workspace, limit))
    return ExitCode.OK

@cli.command()
@click.option("--timeout", type=seconds, default=60, show_default=True, metavar="S",
              help="Give up after this many seconds.")
@click.option("--revision", "revisions", multiple=True, metavar="SERVICE=REV",
              help="Also wait until every target of SERVICE is at REV or a descendant of it "
              "(repeatable; REV may be 'head' or a partial id).")
@json_option
@click.pass_obj
def wait(invocation: Invocation, timeout: float, revisions: Sequence[str],
         as_json: bool) -> int:
    """Wait until the databases accept connections and, with --revision, until every
    target of a service has reached a revision: the gate of an application's new version
    (an init container), or of a Kubernetes Job.

    Exit codes: 0 all there; 2 a database still unreachable after --timeout; 3 a target
    still short of its revision after --timeout.
    """
    import time

    gates = facade().parse_revision_gates(revisions)
    started = time.monotonic()
    workspace = invocation.workspace()
    facade().require_databases(workspace, timeout)
    reporter = make_reporter(json_mode=as_json)
    if not gates:
        if as_json:
            reporter.json({"ready": True})
        else:
            reporter.line("all databases accept connections")
        return ExitCode.OK
    left = max(0.0, timeout - (time.monotonic() - started))
    short = facade().wait_for_revisions(workspace, gates, left)
    reporter.revision_gate(gates, short)
    return ExitCode.NOT_UP_TO_DATE if short else ExitCode.OK
