"""The ``fleet`` command: parse, call :mod:`alembic_fleet.commands`, report, exit.

Exceptions become exit codes in exactly one place, :func:`main`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from alembic_fleet import __version__, commands
from alembic_fleet.exceptions import Aborted, FleetError, UsageError
from alembic_fleet.execution.run import RunOptions, execute, policy_for
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.model.shard import Shard, parse_shard
from alembic_fleet.planning import make_plan
from alembic_fleet.reporting import Reporter
from alembic_fleet.workspace import Workspace

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object instead of text.")
tenant_option = click.option("--tenant", "-t", "tenants", multiple=True, metavar="T",
                             help="Only this tenant (repeatable).")


shard_option = click.option(
    "--shard", "shard", metavar="I/K|auto",
    help="Only this process's share of the targets: shard I of K by a stable hash of the "
    "tenant; 'auto' reads JOB_COMPLETION_INDEX and JOB_COMPLETION_COUNT (Indexed Job).")


def _tenants() -> ModuleType:
    """The tenants module, imported only by the tenant commands (it loads tomlkit and the
    pg_dump helpers, which ``migrate`` and ``status`` do not need)."""
    from alembic_fleet import tenants

    return tenants


def _devloop() -> ModuleType:
    """The dev-loop and embedded-server module, imported only by its commands."""
    from alembic_fleet import devloop

    return devloop


def _shard(text: str | None) -> Shard | None:
    return parse_shard(text, os.environ) if text else None


class Invocation:
    """The global options, and the workspace, opened at most once per command."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._workspace: Workspace | None = None

    def workspace(self) -> Workspace:
        """The command's workspace: opened on first use, closed when the command ends."""
        if self._workspace is None:
            root = click.get_current_context().find_root()
            self._workspace = root.with_resource(Workspace.open(self.config))
        return self._workspace


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
    ctx.obj = Invocation(config)


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
def migrate(invocation: Invocation, services: Sequence[str], tenants: Sequence[str], to: str | None,
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
    workspace = invocation.workspace()
    if wait_for_db is not None:
        commands.require_databases(workspace, wait_for_db)
    plan = make_plan(workspace, services, tenants, to, share)
    if share is not None:
        reporter.note(f"shard {share}: {len(plan.steps)} target(s) of this shard")
    if sql:
        reporter.sql(commands.migrate_sql(workspace, plan))
        return ExitCode.OK
    if dry_run:
        reporter.plan(plan)
        return ExitCode.OK
    policy = policy_for(workspace, lock_wait=lock_wait, lock_timeout=lock_timeout,
                        statement_timeout=statement_timeout, retries=retries)
    options = RunOptions(jobs=jobs, fail_fast=fail_fast, policy=policy,
                         command=_command_line(), allow_changed=allow_changed)
    outcome = execute(workspace, plan, options, reporter.event)
    reporter.migrate(outcome)
    return exit_code(outcome)


def _command_line() -> str:
    return " ".join(["fleet", *sys.argv[1:]])[:500]


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
def up(invocation: Invocation, skip_migrations: bool, wait_for_db: float, as_json: bool) -> int:
    """Get a development database ready: start the embedded PostgreSQL (or wait for the
    configured one), migrate only if something is pending, print the URLs to export.

    The URLs go to stdout as shell lines, so 'eval "$(fleet up)"' sets them.

    Exit codes: 0 ready; 1 a migration failed; 2 database unreachable or bad configuration.
    """
    progress = Reporter(json_mode=as_json, out=sys.stderr)
    result = _up(invocation, skip_migrations, wait_for_db, progress)
    Reporter(json_mode=as_json).up(result, skipped=skip_migrations)
    return _up_exit_code(result)


def _up(invocation: Invocation, skip_migrations: bool, wait_for_db: float, progress: Reporter
        ) -> Any:
    """``fleet up``'s work; progress goes to stderr, stdout is for the exports."""
    try:
        return _devloop().up(invocation.workspace(), migrate=not skip_migrations,
                             wait=wait_for_db, on_event=progress.event)
    finally:
        progress.stop_progress()


def _up_exit_code(result: Any) -> int:
    return exit_code(result.outcome) if result.outcome is not None else ExitCode.OK


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@skip_migrations_option
@wait_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run(invocation: Invocation, skip_migrations: bool, wait_for_db: float,
        command: Sequence[str]) -> int:
    """Like 'fleet up', then run COMMAND with the database URLs in its environment.

    Use '--' before COMMAND: fleet run -- uvicorn app:app. COMMAND replaces fleet (same
    process, same signals), so its exit code is fleet's. Nothing runs when a migration fails.
    """
    reporter = Reporter(out=sys.stderr)
    result = _up(invocation, skip_migrations, wait_for_db, reporter)
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
def wait(invocation: Invocation, timeout: float) -> int:
    """Wait until every configured database accepts connections (for Kubernetes Jobs).

    Exit codes: 0 all reachable; 2 still unreachable after --timeout.
    """
    commands.require_databases(invocation.workspace(), timeout)
    Reporter().line("all databases accept connections")
    return ExitCode.OK


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs to show.")
@click.option("--run", "run_id", metavar="ID", help="Show the targets of one run (id prefix).")
@json_option
@click.pass_obj
def log(invocation: Invocation, limit: int, run_id: str | None, as_json: bool) -> int:
    """Show recent runs from the ledger (who, where, when, what they did)."""
    reporter = Reporter(json_mode=as_json)
    workspace = invocation.workspace()
    if run_id:
        rows = commands.run_details(workspace, run_id)
        if not rows:
            raise UsageError(f"no run {run_id!r} in the ledger", hint="see 'fleet log'")
        reporter.run_details(run_id, rows)
    else:
        reporter.runs(commands.log(workspace, limit))
    return ExitCode.OK


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

    Exit codes: 0 every target at head; 3 some target behind, missing, ahead or failed.
    """
    inventory = commands.status(invocation.workspace(), services, tenants, shard=_shard(shard))
    Reporter(json_mode=as_json).status(inventory)
    return exit_code(inventory)


@cli.command()
@click.argument("service")
@json_option
@click.pass_obj
def history(invocation: Invocation, service: str, as_json: bool) -> int:
    """List a service's revisions, newest first (reads the scripts only)."""
    graph = commands.history(invocation.workspace(), service)
    Reporter(json_mode=as_json).history(service, graph)
    return ExitCode.OK


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@json_option
@click.pass_obj
def heads(invocation: Invocation, services: Sequence[str], as_json: bool) -> int:
    """Show each service's head revision(s) (reads the scripts only)."""
    Reporter(json_mode=as_json).heads(commands.heads(invocation.workspace(), services))
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
def check(invocation: Invocation, services: Sequence[str], database: bool, tenants: Sequence[str],
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
    from alembic_fleet.check.gate import CheckOptions

    reporter = Reporter(json_mode=as_json or output_format == "json")
    options = CheckOptions(scratch=not no_scratch, scratch_url=scratch_url, database=database,
                           since=since)
    report = commands.check(invocation.workspace(), services, tenants, options=options)
    reporter.check(report, output_format="json" if as_json else output_format)
    return exit_code(report)


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
def revision(invocation: Invocation, service: str, message: str, autogenerate: bool,
             scratch_url: str | None, as_json: bool) -> int:
    """Create a revision file for SERVICE, then check it at once.

    With --autogenerate the models are compared with a throwaway schema upgraded to head on
    the scratch database, so nothing schema-qualified leaks into the file.

    Exit codes: 0 created, no problems; 3 created, with problems to look at; 2 bad input.
    """
    files, report = commands.revision(invocation.workspace(), service, message,
                                      autogenerate=autogenerate, scratch_url=scratch_url)
    Reporter(json_mode=as_json).revision([str(f) for f in files], report)
    return exit_code(report)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.argument("revision")
@click.option("--tenant", "-t", metavar="T", help="The tenant (per-tenant services).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def downgrade(invocation: Invocation, service: str, revision: str, tenant: str | None, yes: bool,
              as_json: bool) -> int:
    """Step one target down to REVISION (an id, 'base' or '-1').

    Exit codes: 0 done; 1 failed or declined.
    """
    workspace = invocation.workspace()
    target = commands.downgrade_target(workspace, service, tenant)
    _confirm(f"Downgrade {target.label} to {revision}? Data in dropped tables and "
             "columns is lost.", yes)
    result = commands.downgrade(workspace, target, revision)
    Reporter(json_mode=as_json).downgrade(result)
    return ExitCode.FAILED if result.error else ExitCode.OK


@cli.command()
@click.option("--service", "service", nargs=2, metavar="NAME PATH",
              help="Create an Alembic folder at PATH and add it to fleet.toml as NAME.")
@click.option("--schema", metavar="TEMPLATE",
              help="Schema of the new service: 'NAME_{tenant}' (default) or a fixed name.")
@click.pass_obj
def init(invocation: Invocation, service: tuple[str, str] | None, schema: str | None) -> int:
    """Write a fleet.toml here, or add a service with its Alembic folder."""
    reporter = Reporter()
    written = commands.init(invocation.config, service, schema)
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
def tenants_list(invocation: Invocation, as_json: bool) -> int:
    """Configured tenants against what the databases hold, per service.

    'present' (schema with a version table), 'missing', or 'orphan' (a schema whose tenant
    is not configured), with each target's state.
    """
    rows = _tenants().list_tenants(invocation.workspace())
    Reporter(json_mode=as_json).tenants(rows)
    return ExitCode.OK


@tenants.command("add")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--no-migrate", is_flag=True, help="Only record the tenants.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes for the migration.")
@json_option
@click.pass_obj
def tenants_add(invocation: Invocation, names: Sequence[str], no_migrate: bool, jobs: int | None,
                as_json: bool) -> int:
    """Record tenants where the configured tenant source lives, then create and migrate
    their schemas for every per-tenant service. Adding an existing tenant changes nothing.

    Exit codes: 0 added; 1 a migration failed; 2 invalid name or configuration.
    """
    reporter = Reporter(json_mode=as_json)
    result = _tenants().add_tenants(invocation.workspace(), names, migrate=not no_migrate,
                                    jobs=jobs, on_event=reporter.event)
    reporter.tenants_added(result)
    return exit_code(result.outcome) if result.outcome is not None else ExitCode.OK


@tenants.command("remove")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask to type the tenant's name.")
@click.option("--dump", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write a pg_dump of the tenant's schemas to FILE first.")
@json_option
@click.pass_obj
def tenants_remove(invocation: Invocation, name: str, yes: bool, dump: str | None,
                   as_json: bool) -> int:
    """Drop a tenant's schemas (after typing its name) and forget the tenant.

    Only the schemas rendered for NAME from the services' templates are dropped; no other
    tenant's schema is touched. Single-schema services are not affected.

    Exit codes: 0 removed; 1 declined or pg_dump failed (nothing dropped); 2 bad input.
    """
    workspace = invocation.workspace()
    tenants = _tenants()
    present = tenants.existing_schemas(workspace, tenants.tenant_targets(workspace, name))
    if not yes:
        listed = ", ".join(t.schema for t in present) or "no schema"
        try:
            typed = click.prompt(f"This drops {listed} for tenant {name!r}. "
                                 "Type the tenant's name to confirm", default="",
                                 show_default=False, err=True)
        except click.exceptions.Abort:
            if sys.stdin and sys.stdin.isatty():
                raise
            raise UsageError("confirmation needed, but standard input has nothing to read",
                             hint="pass --yes to remove the tenant without typing its name"
                             ) from None
        if typed != name:
            raise Aborted("not confirmed: nothing was dropped")
    result = tenants.remove_tenant(workspace, name, dump=Path(dump) if dump else None)
    Reporter(json_mode=as_json).tenants_removed(name, result)
    return ExitCode.OK


@cli.group()
def db() -> None:
    """The embedded PostgreSQL (used when no database URL is configured)."""


@db.command("url")
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.pass_obj
def db_url(invocation: Invocation, database: str | None) -> int:
    """Print the embedded server's URL (starting it if needed)."""
    Reporter().line(_devloop().embedded_url(invocation.workspace(), database))
    return ExitCode.OK


@db.command("start")
@click.pass_obj
def db_start(invocation: Invocation) -> int:
    """Start the embedded server (data under .fleet/ next to the configuration)."""
    url = _devloop().embedded_url(invocation.workspace())
    Reporter().line(f"embedded PostgreSQL running: {url}")
    return ExitCode.OK


@db.command("stop")
@click.pass_obj
def db_stop(invocation: Invocation) -> int:
    """Stop the embedded server (its data is kept)."""
    stopped = _devloop().embedded_server(invocation.workspace()).stop()
    Reporter().line("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was "
                    "not running")
    return ExitCode.OK


@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def db_psql(invocation: Invocation, database: str | None, psql_args: Sequence[str]) -> int:
    """Open psql on the embedded server; extra arguments go to psql."""
    url = _devloop().embedded_url(invocation.workspace(), database)
    psql = _devloop().embedded_program(invocation.workspace(), "psql")
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
def reset(invocation: Invocation, yes: bool, force: bool, confirm_name: str | None) -> int:
    """Delete ALL data of the embedded PostgreSQL (development only).

    Refuses any other database. With --force, drops every configured schema of every
    service and tenant (and the ledger) in the configured databases, after you type the
    database name.
    """
    workspace = invocation.workspace()
    devloop = _devloop()
    reporter = Reporter()
    if workspace.config.uses_embedded and not force:
        server_dir = devloop.embedded_dir(workspace)
        _confirm(f"Delete the embedded PostgreSQL and all its data in {server_dir}?", yes)
        removed = devloop.reset_embedded(workspace)
        reporter.line("embedded PostgreSQL data deleted" if removed else "nothing to delete")
        return ExitCode.OK
    if not force:
        raise UsageError(
            "fleet reset deletes only the embedded PostgreSQL; this configuration uses "
            "database URLs",
            hint="to drop every configured schema there, run 'fleet reset --force' and type "
            "the database name")
    names = devloop.database_names(workspace)
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
    dropped = devloop.drop_all_schemas(workspace)
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
    except KeyboardInterrupt as exc:
        code = exit_code(exc)
        reporter.error("interrupted", None, code)
    except FleetError as exc:
        code = exit_code(exc)
        reporter.error(exc.message, exc.hint, code)
    except Exception as exc:  # the last resort: never a raw traceback with secrets in it
        reporter.crash(exc, debug=debug)
        code = ExitCode.FAILED
    sys.exit(code) if argv is None else None
    return code


if __name__ == "__main__":  # pragma: no cover
    main()

