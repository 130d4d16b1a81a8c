"""The ``fleet`` command: parse, call :mod:`alembic_fleet.commands`, report, exit.

Exceptions become exit codes in exactly one place, :func:`main`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import click

from alembic_fleet import __version__, commands
from alembic_fleet.exceptions import Aborted, DatabaseUnavailableError, FleetError, UsageError
from alembic_fleet.execution.executor import RunInterrupted
from alembic_fleet.exit_codes import ExitCode, exit_code_for
from alembic_fleet.model.shard import Shard, parse_shard
from alembic_fleet.model.status import Outcome, TargetState
from alembic_fleet.reporting import Reporter

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object instead of text.")
tenant_option = click.option("--tenant", "-t", "tenants", multiple=True, metavar="T",
                             help="Only this tenant (repeatable).")


shard_option = click.option(
    "--shard", "shard", metavar="I/K|auto",
    help="Only this process's share of the targets: shard I of K by a stable hash of the "
    "tenant; 'auto' reads JOB_COMPLETION_INDEX and JOB_COMPLETION_COUNT (Indexed Job).")


def _lifecycle() -> ModuleType:
    """The tenant-lifecycle module, imported only by the tenant commands (it loads tomlkit
    and the pg_dump helpers, which ``migrate`` and ``status`` do not need)."""
    from alembic_fleet import lifecycle

    return lifecycle


def _shard(text: str | None) -> Shard | None:
    return parse_shard(text, os.environ) if text else None


class State:
    """Global options shared by every command."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    def fleet(self) -> commands.Fleet:
        return commands.Fleet.load(self.config)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", metavar="DIR", help="Run as if fleet was started in DIR.")
@click.option("--config", "config", metavar="PATH", envvar="FLEET_CONFIG",
              help="Configuration file (default: fleet.toml or [tool.fleet] in pyproject.toml, "
              "searched upwards).")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(__version__, prog_name="alembic-fleet")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, config: str | None, debug: bool) -> None:
    """Run Alembic migrations for every service and every tenant schema at once."""
    if config:
        config = os.path.abspath(config)
    commands.chdir(directory)
    ctx.obj = State(config)


seconds = click.FloatRange(min=0)


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
@click.option("--lock-timeout", type=seconds, metavar="S",
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
@json_option
@click.pass_obj
def migrate(state: State, services: Sequence[str], tenants: Sequence[str], to: str | None,
            shard: str | None, jobs: int | None, fail_fast: bool, dry_run: bool, sql: bool,
            lock_wait: float | None, lock_timeout: float | None,
            statement_timeout: float | None, retries: int | None, allow_changed: bool,
            wait_for_db: float | None, as_json: bool) -> int:
    """Bring targets to head (or --to REV). Targets already there are not touched.

    Each target migrates in one transaction under an advisory lock, so concurrent runners
    never apply a revision twice. A failed target is rolled back and reported; the others
    go on. Ctrl-C rolls back the targets in flight and exits with 130.

    Exit codes: 0 every target reached its revision; 1 some target failed; 2 usage,
    configuration or database unreachable (nothing executed); 130 interrupted.
    """
    reporter = Reporter(json_mode=as_json)
    share = _shard(shard)
    fleet = state.fleet()
    try:
        if wait_for_db is not None:
            _wait(fleet, wait_for_db)
        if sql:
            reporter.sql(commands.migrate_sql(fleet, services, tenants, to, shard=share))
            return ExitCode.OK
        steps = commands.plan(fleet, services, tenants, to, shard=share)
        if share is not None:
            reporter.note(f"shard {share}: {len(steps)} target(s) of this shard")
        if dry_run:
            reporter.plan(steps)
            return ExitCode.OK
        policy = commands.policy_for(fleet, lock_wait=lock_wait, lock_timeout=lock_timeout,
                                     statement_timeout=statement_timeout, retries=retries)
        before = [s.status for s in steps]
        try:
            outcome = commands.run_plan(fleet, steps, jobs=jobs, fail_fast=fail_fast,
                                        policy=policy, command=_command_line(),
                                        on_event=reporter.event,
                                        allow_changed=allow_changed)
        except RunInterrupted as interrupted:
            reporter.migrate(interrupted.results, before, interrupted=True)
            return ExitCode.INTERRUPTED
        reporter.migrate(outcome.results, before)
        for warning in outcome.warnings:
            reporter.note(f"warning: {warning}")
        failed = any(r.outcome is Outcome.FAILED for r in outcome.results)
        return ExitCode.FAILED if failed else ExitCode.OK
    finally:
        fleet.close()


def _command_line() -> str:
    return " ".join(["fleet", *sys.argv[1:]])[:500]


def _wait(fleet: commands.Fleet, timeout: float) -> None:
    down = commands.wait_for_databases(fleet, timeout)
    if down:
        raise DatabaseUnavailableError(
            f"still not accepting connections after {timeout:g}s: {', '.join(down)}",
            hint="check the server, or wait longer (--wait-for-db / fleet wait --timeout)")


skip_migrations_option = click.option(
    "--skip-migrations", is_flag=True, envvar="SKIP_MIGRATIONS",
    help="Do not migrate (also SKIP_MIGRATIONS=true).")
wait_option = click.option("--wait-for-db", "wait_for_db", type=seconds, default=30,
                           show_default=True, metavar="S",
                           help="How long to wait for a configured (non-embedded) database.")


@cli.command()
@skip_migrations_option
@wait_option
@json_option
@click.pass_obj
def up(state: State, skip_migrations: bool, wait_for_db: float, as_json: bool) -> int:
    """Get a development database ready: start the embedded PostgreSQL (or wait for the
    configured one), migrate only if something is pending, print the URLs to export.

    The URLs go to stdout as shell lines, so 'eval "$(fleet up)"' sets them.

    Exit codes: 0 ready; 1 a migration failed; 2 database unreachable or bad configuration.
    """
    result = _up(state, skip_migrations, wait_for_db, Reporter(json_mode=as_json,
                                                                out=sys.stderr))
    Reporter(json_mode=as_json).up(result, skipped=skip_migrations)
    return _up_exit_code(result)


def _up(state: State, skip_migrations: bool, wait_for_db: float, progress: Reporter
        ) -> commands.UpResult:
    """``fleet up``'s work; progress goes to stderr, stdout is for the exports."""
    fleet = state.fleet()
    try:
        return commands.up(fleet, migrate=not skip_migrations, wait=wait_for_db,
                           on_event=progress.event)
    finally:
        progress.stop_progress()
        fleet.close()


def _up_exit_code(result: commands.UpResult) -> int:
    if result.outcome and any(r.outcome is Outcome.FAILED for r in result.outcome.results):
        return ExitCode.FAILED
    return ExitCode.OK


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@skip_migrations_option
@wait_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run(state: State, skip_migrations: bool, wait_for_db: float, command: Sequence[str]) -> int:
    """Like 'fleet up', then run COMMAND with the database URLs in its environment.

    Use '--' before COMMAND: fleet run -- uvicorn app:app. COMMAND replaces fleet (same
    process, same signals), so its exit code is fleet's. Nothing runs when a migration fails.
    """
    reporter = Reporter(out=sys.stderr)
    result = _up(state, skip_migrations, wait_for_db, reporter)
    reporter.up(result, skipped=skip_migrations, exports=False)
    code = _up_exit_code(result)
    if code != ExitCode.OK:
        return code
    environment = {**os.environ, **result.exports}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), environment)
    except OSError as exc:
        raise UsageError(f"cannot run {command[0]!r}: {exc.strerror}",
                         hint="check the command after '--'") from None
    return ExitCode.FAILED  # pragma: no cover - exec does not return


@cli.command()
@click.option("--timeout", type=seconds, default=60, show_default=True, metavar="S",
              help="Give up after this many seconds.")
@click.pass_obj
def wait(state: State, timeout: float) -> int:
    """Wait until every configured database accepts connections (for Kubernetes Jobs).

    Exit codes: 0 all reachable; 2 still unreachable after --timeout.
    """
    reporter = Reporter()
    fleet = state.fleet()
    try:
        _wait(fleet, timeout)
    finally:
        fleet.close()
    reporter.line("all databases accept connections")
    return ExitCode.OK


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to show.")
@click.option("--run", "run_id", metavar="ID", help="Show the targets of one run (id prefix).")
@json_option
@click.pass_obj
def log(state: State, limit: int, run_id: str | None, as_json: bool) -> int:
    """Show recent runs from the ledger (who, where, when, what they did)."""
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        if run_id:
            reporter.run_details(run_id, commands.run_details(fleet, run_id))
        else:
            reporter.runs(commands.log(fleet, limit))
    finally:
        fleet.close()
    return ExitCode.OK


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@tenant_option
@shard_option
@json_option
@click.pass_obj
def status(state: State, services: Sequence[str], tenants: Sequence[str], shard: str | None,
           as_json: bool) -> int:
    """Show the current revision of every target against its head.

    Schemas a service's template matches whose tenant is not configured are listed with
    the state 'orphan' (without --tenant); they do not change the exit code.

    Exit codes: 0 every target at head; 3 some target behind, missing, ahead or failed.
    """
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        statuses = commands.status(fleet, services, tenants, shard=_shard(shard))
    finally:
        fleet.close()
    reporter.status(statuses)
    for reason in fleet.unreachable.values():
        reporter.note(f"warning: {reason}; its targets are shown as failed")
    if all(s.state in (TargetState.AT_HEAD, TargetState.ORPHAN) for s in statuses):
        return ExitCode.OK
    return ExitCode.NOT_UP_TO_DATE


@cli.command()
@click.argument("service")
@json_option
@click.pass_obj
def history(state: State, service: str, as_json: bool) -> int:
    """List a service's revisions, newest first (reads the scripts only)."""
    fleet = state.fleet()
    Reporter(json_mode=as_json).history(service, commands.history(fleet, service))
    return ExitCode.OK


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@json_option
@click.pass_obj
def heads(state: State, services: Sequence[str], as_json: bool) -> int:
    """Show each service's head revision(s) (reads the scripts only)."""
    fleet = state.fleet()
    Reporter(json_mode=as_json).heads(commands.heads(fleet, services))
    return ExitCode.OK


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--database", "database", is_flag=True,
              help="Also check the configured databases: checksums of applied revisions and "
              "every tenant schema against the migrations.")
@tenant_option
@click.option("--since", metavar="REF",
              help="Lint only revisions added since git REF (e.g. origin/main) for unsafe "
              "operations; default: revisions not applied yet with --database, else all.")
@click.option("--scratch-url", metavar="URL", envvar="FLEET_SCRATCH_DATABASE_URL",
              help="Scratch database for the schema checks (default: the embedded "
              "PostgreSQL). Env: FLEET_SCRATCH_DATABASE_URL.")
@click.option("--no-scratch", is_flag=True,
              help="Skip the checks that need a scratch database (model drift, round trip).")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "github"]),
              default="table", show_default=True,
              help="'github' prints workflow annotations for pull requests.")
@json_option
@click.pass_obj
def check(state: State, services: Sequence[str], database: bool, tenants: Sequence[str],
          since: str | None, scratch_url: str | None, no_scratch: bool, output_format: str,
          as_json: bool) -> int:
    """Check the migration scripts (and, with --database, the schemas) for problems.

    Finds: duplicate revision ids, several heads, unknown down_revision, cycles, names
    that break the configured patterns, a missing downgrade(), revisions importing the
    application, models that differ from the migrations, downgrades that do not undo
    their upgrade, unsafe operations in new revisions, and with --database revisions
    edited after they were applied and tenant schemas changed by hand.

    Accept a finding in the revision file with '# fleet: allow RULE: reason'.

    Exit codes: 0 no problems; 3 problems found; 2 bad input.
    """
    reporter = Reporter(json_mode=as_json or output_format == "json")
    fleet = state.fleet()
    from alembic_fleet.check.gate import CheckOptions

    options = CheckOptions(scratch=not no_scratch, scratch_url=scratch_url,
                                    database=database, since=since)
    try:
        report = commands.check(fleet, services, tenants, options=options)
    finally:
        fleet.close()
    reporter.check(report, output_format="json" if as_json else output_format)
    return ExitCode.NOT_UP_TO_DATE if report.failed else ExitCode.OK


@cli.command()
@click.argument("service")
@click.option("--message", "-m", required=True, metavar="MSG", help="The revision's message.")
@click.option("--autogenerate", is_flag=True,
              help="Compare the models with a scratch schema at head and write the "
              "operations (no shared database needed).")
@click.option("--scratch-url", metavar="URL", envvar="FLEET_SCRATCH_DATABASE_URL",
              help="Scratch database for --autogenerate (default: the embedded PostgreSQL).")
@json_option
@click.pass_obj
def revision(state: State, service: str, message: str, autogenerate: bool,
             scratch_url: str | None, as_json: bool) -> int:
    """Create a revision file for SERVICE, then check it at once.

    With --autogenerate the models are compared with a throwaway schema upgraded to head on
    the scratch database, so nothing schema-qualified leaks into the file.

    Exit codes: 0 created, no problems; 3 created, with problems to look at; 2 bad input.
    """
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        files, report = commands.revision(fleet, service, message, autogenerate=autogenerate,
                                          scratch_url=scratch_url)
    finally:
        fleet.close()
    reporter.revision([str(f) for f in files], report)
    return ExitCode.NOT_UP_TO_DATE if report.failed else ExitCode.OK


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("revision")
@click.option("--tenant", "-t", metavar="T", help="The tenant (per-tenant services).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def downgrade(state: State, service: str, revision: str, tenant: str | None, yes: bool,
              as_json: bool) -> int:
    """Step one target down to REVISION (an id, 'base' or '-1').

    Exit codes: 0 done; 1 failed or declined.
    """
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        target = commands.downgrade_target(fleet, service, tenant)
        _confirm(f"Downgrade {target.label} to {revision}? Data in dropped tables and "
                 "columns is lost.", yes)
        result = commands.downgrade(fleet, service, tenant, revision)
    finally:
        fleet.close()
    reporter.downgrade(result)
    return ExitCode.FAILED if result.outcome is Outcome.FAILED else ExitCode.OK


@cli.command()
@click.option("--service", "service", nargs=2, metavar="NAME PATH",
              help="Create an Alembic folder at PATH and add it to fleet.toml as NAME.")
@click.option("--schema", metavar="TEMPLATE",
              help="Schema of the new service: 'NAME_{tenant}' (default) or a fixed name.")
@click.pass_obj
def init(state: State, service: tuple[str, str] | None, schema: str | None) -> int:
    """Write a fleet.toml here, or add a service with its Alembic folder."""
    reporter = Reporter()
    written = commands.init(state.config, service, schema)
    for path in written:
        reporter.line(f"wrote {path}")
    if service:
        reporter.note(f"next: write a revision with 'cd {service[1]} && alembic revision -m msg', "
                      "then 'fleet migrate'")
    return ExitCode.OK


@cli.group()
def tenants() -> None:
    """Tenant lifecycle: list, add and remove tenants and their schemas."""


@tenants.command("list")
@json_option
@click.pass_obj
def tenants_list(state: State, as_json: bool) -> int:
    """Configured tenants against what the databases hold, per service.

    'present' (schema with a version table), 'missing', or 'orphan' (a schema whose tenant
    is not configured), with each target's state.
    """
    fleet = state.fleet()
    try:
        rows = _lifecycle().list_tenants(fleet)
    finally:
        fleet.close()
    Reporter(json_mode=as_json).tenants(rows)
    return ExitCode.OK


@tenants.command("add")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--no-migrate", is_flag=True, help="Only record the tenants.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes for the migration.")
@json_option
@click.pass_obj
def tenants_add(state: State, names: Sequence[str], no_migrate: bool, jobs: int | None,
                as_json: bool) -> int:
    """Record tenants where the configured tenant source lives, then create and migrate
    their schemas for every per-tenant service. Adding an existing tenant changes nothing.

    Exit codes: 0 added; 1 a migration failed; 2 invalid name or configuration.
    """
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        result = _lifecycle().add_tenants(fleet, names, migrate=not no_migrate, jobs=jobs,
                                       on_event=reporter.event)
    finally:
        fleet.close()
    reporter.tenants_added(result)
    if result.outcome and any(r.outcome is Outcome.FAILED for r in result.outcome.results):
        return ExitCode.FAILED
    return ExitCode.OK


@tenants.command("remove")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the tenant's name.")
@click.option("--dump", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write a pg_dump of the tenant's schemas to FILE first.")
@json_option
@click.pass_obj
def tenants_remove(state: State, name: str, yes: bool, dump: str | None, as_json: bool) -> int:
    """Drop a tenant's schemas (after typing its name) and forget the tenant.

    Only the schemas rendered for NAME from the services' templates are dropped; no other
    tenant's schema is touched. Single-schema services are not affected.

    Exit codes: 0 removed; 1 declined or pg_dump failed (nothing dropped); 2 bad input.
    """
    reporter = Reporter(json_mode=as_json)
    fleet = state.fleet()
    try:
        present = _lifecycle().existing_schemas(fleet, _lifecycle().tenant_targets(fleet, name))
        if not yes:
            listed = ", ".join(t.schema for t in present) or "no schema"
            typed = click.prompt(f"This drops {listed} for tenant {name!r}. "
                                 "Type the tenant's name to confirm", default="",
                                 show_default=False, err=True)
            if typed != name:
                raise Aborted("not confirmed: nothing was dropped")
        result = _lifecycle().remove_tenant(fleet, name, dump=Path(dump) if dump else None)
    finally:
        fleet.close()
    reporter.tenants_removed(name, result)
    return ExitCode.OK


@cli.group()
def db() -> None:
    """The embedded PostgreSQL (used when no database URL is configured)."""


@db.command("url")
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.pass_obj
def db_url(state: State, database: str | None) -> int:
    """Print the embedded server's URL (starting it if needed)."""
    fleet = state.fleet()
    Reporter().line(commands.embedded_url(fleet, database))
    return ExitCode.OK


@db.command("start")
@click.pass_obj
def db_start(state: State) -> int:
    """Start the embedded server (data under .fleet/ next to the configuration)."""
    fleet = state.fleet()
    url = commands.embedded_url(fleet)
    Reporter().line(f"embedded PostgreSQL running: {url}")
    return ExitCode.OK


@db.command("stop")
@click.pass_obj
def db_stop(state: State) -> int:
    """Stop the embedded server (its data is kept)."""
    fleet = state.fleet()
    stopped = commands.embedded_stop(fleet)
    Reporter().line("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was "
                    "not running")
    return ExitCode.OK


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def db_psql(state: State, database: str | None, psql_args: Sequence[str]) -> int:
    """Open psql on the embedded server; extra arguments go to psql."""
    fleet = state.fleet()
    url = commands.embedded_url(fleet, database)
    psql = commands.embedded_program(fleet, "psql")
    sys.stdout.flush()
    os.execv(psql, [psql, url, *psql_args])
    return ExitCode.OK  # pragma: no cover - execv does not return


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (embedded only).")
@click.option("--force", is_flag=True,
              help="Also act on a database that is not the embedded one: drop every "
              "configured schema there (needs the database name typed, or --confirm).")
@click.option("--confirm", "confirm_name", metavar="DATABASE",
              help="With --force and no terminal: the database name, as typed confirmation.")
@click.pass_obj
def reset(state: State, yes: bool, force: bool, confirm_name: str | None) -> int:
    """Delete ALL data of the embedded PostgreSQL (development only).

    Refuses any other database. With --force, drops every configured schema of every
    service and tenant (and the ledger) in the configured databases, after you type the
    database name.
    """
    fleet = state.fleet()
    reporter = Reporter()
    if fleet.config.uses_embedded and not force:
        server_dir = commands.embedded_dir(fleet)
        _confirm(f"Delete the embedded PostgreSQL and all its data in {server_dir}?", yes)
        removed = commands.reset(fleet)
        reporter.line("embedded PostgreSQL data deleted" if removed else "nothing to delete")
        return ExitCode.OK
    if not force:
        raise UsageError(
            "fleet reset deletes only the embedded PostgreSQL; this configuration uses "
            "database URLs",
            hint="to drop every configured schema there, run 'fleet reset --force' and type "
            "the database name")
    names = commands.database_names(fleet)
    expected = ",".join(names)
    if confirm_name is None:
        if not sys.stdin or not sys.stdin.isatty():
            raise UsageError("--force needs the database name typed at a terminal",
                             hint=f"or pass --confirm {expected}")
        confirm_name = click.prompt(
            f"This drops every configured schema in {expected}. Type the database name "
            "to confirm", default="", show_default=False)
    if confirm_name != expected:
        raise Aborted("the typed name does not match; nothing was changed")
    dropped = commands.drop_all_schemas(fleet)
    for schema in dropped:
        reporter.line(f"dropped {schema}")
    reporter.line(f"{len(dropped)} schema(s) dropped")
    return ExitCode.OK


def _confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; refuse to guess when nobody can answer."""
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError("confirmation needed, but standard input is not a terminal",
                         hint="pass --yes to confirm")
    if not click.confirm(question, default=False):
        raise Aborted("declined; nothing was changed")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleet`` command; returns (and exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    debug = "--debug" in args
    reporter = Reporter(json_mode=as_json)
    try:
        result = cli.main(args=args, prog_name="fleet", standalone_mode=False)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        reporter.error("interrupted", None, ExitCode.INTERRUPTED)
        code = ExitCode.INTERRUPTED
    except click.ClickException as exc:
        if as_json:
            reporter.error(exc.format_message(), None, ExitCode.USAGE)
        else:
            exc.show()
        code = ExitCode.USAGE
    except KeyboardInterrupt:
        reporter.error("interrupted", None, ExitCode.INTERRUPTED)
        code = ExitCode.INTERRUPTED
    except FleetError as exc:
        code = exit_code_for(exc)
        reporter.error(exc.message, exc.hint, code)
    except Exception as exc:  # the last resort: never a raw traceback with secrets in it
        reporter.crash(exc, debug=debug)
        code = ExitCode.FAILED
    sys.exit(code) if argv is None else None
    return code


if __name__ == "__main__":  # pragma: no cover
    main()

