"""The development loop and the embedded server: up, run, init, db, reset."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from alembic_fleet import drivers
from alembic_fleet.cli.app import (
    Invocation,
    cli,
    confirm,
    devloop_module,
    facade,
    json_option,
    make_reporter,
    skip_migrations_option,
    wait_option,
)
from alembic_fleet.exceptions import Aborted, UsageError
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.reporting import streams

if TYPE_CHECKING:
    from alembic_fleet.reporting.console import Reporter


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
    progress = make_reporter(json_mode=as_json, out=sys.stderr)
    result = _up(invocation, skip_migrations, wait_for_db, progress)
    make_reporter(json_mode=as_json).up(result, skipped=skip_migrations)
    return _up_exit_code(result)

def _up(invocation: Invocation, skip_migrations: bool, wait_for_db: float, progress: Reporter
        ) -> Any:
    """``fleet up``'s work; progress goes to stderr, stdout is for the exports."""
    try:
        return devloop_module().up(invocation.workspace(), migrate=not skip_migrations,
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
    reporter = make_reporter(out=sys.stderr)
    result = _up(invocation, skip_migrations, wait_for_db, reporter)
    reporter.up(result, skipped=skip_migrations, exports=False)
    code = _up_exit_code(result)
    if code != ExitCode.OK:
        return code
    environment = {**drivers.users_environment(), **result.exports}
    sys.stdout.flush()
    sys.stderr.flush()
    streams.restore_for_exec()
    try:
        os.execvpe(command[0], list(command), environment)
    except OSError as exc:
        raise UsageError(f"cannot run {command[0]!r}: {exc.strerror}",
                         hint="check the command after '--'") from None
    return ExitCode.FAILED  # pragma: no cover - exec does not return

@cli.command()
@click.option("--service", "service", nargs=2, metavar="NAME PATH",
              help="Create an Alembic folder at PATH and add it to fleet.toml as NAME.")
@click.option("--schema", metavar="TEMPLATE",
              help="Schema of the new service: 'NAME_{tenant}' (default) or a fixed name.")
@click.pass_obj
def init(invocation: Invocation, service: tuple[str, str] | None, schema: str | None) -> int:
    """Write a fleet.toml here, or add a service with its Alembic folder."""
    reporter = make_reporter()
    written = facade().init(invocation.config, service, schema)
    for path in written:
        reporter.line(f"wrote {path}")
    if service:
        reporter.note(f"next: write a revision with 'cd {service[1]} && alembic revision -m msg', "
                      "then 'fleet migrate'")
    return ExitCode.OK

@cli.group()
def db() -> None:
    """The embedded PostgreSQL (used when no database URL is configured)."""

@db.command("url")
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.pass_obj
def db_url(invocation: Invocation, database: str | None) -> int:
    """Print the embedded server's URL (starting it if needed)."""
    make_reporter().line(devloop_module().embedded_url(invocation.workspace(), database))
    return ExitCode.OK

@db.command("start")
@click.pass_obj
def db_start(invocation: Invocation) -> int:
    """Start the embedded server (data under .fleet/ next to the configuration)."""
    url = devloop_module().embedded_url(invocation.workspace())
    make_reporter().line(f"embedded PostgreSQL running: {url}")
    return ExitCode.OK

@db.command("stop")
@click.pass_obj
def db_stop(invocation: Invocation) -> int:
    """Stop the embedded server (its data is kept)."""
    stopped = devloop_module().embedded_server(invocation.workspace()).stop()
    make_reporter().line("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was "
                    "not running")
    return ExitCode.OK

@db.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--database", metavar="NAME", help="Database name (default: the first one used).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def db_psql(invocation: Invocation, database: str | None, psql_args: Sequence[str]) -> int:
    """Open psql on the embedded server; extra arguments go to psql."""
    url = devloop_module().embedded_url(invocation.workspace(), database)
    psql = devloop_module().embedded_program(invocation.workspace(), "psql")
    sys.stdout.flush()
    streams.restore_for_exec()
    os.execv(psql, [psql, url, *psql_args])
    return ExitCode.OK  # pragma: no cover - execv does not return

@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (embedded only).")
@click.option("--force", is_flag=True,
              help="Also act on a database that is not the embedded one: drop every "
              "configured schema there (needs the database name typed, or --confirm).")
@click.option("--confirm", "confirm_name", metavar="DATABASE",
              help="With --force and no terminal: the database name, as typed confirmation.")
@click.option("--include-public", is_flag=True,
              help="With --force, where a service keeps its tables in schema public: drop "
              "everything in public (not only what its migrations made), then make public "
              "again as PostgreSQL makes it.")
@click.option("--keep-public", is_flag=True,
              help="With --force: leave schema public as it is (a service keeping its tables "
              "there stays at its revision).")
@click.pass_obj
def reset(invocation: Invocation, yes: bool, force: bool, confirm_name: str | None,
          include_public: bool, keep_public: bool) -> int:
    """Delete ALL data of the embedded PostgreSQL (development only).

    Refuses any other database. With --force, drops every configured schema of every
    service and tenant (and the ledger) in the configured databases, after you type the
    database name. Schema public is shared with whatever else lives there: where a service
    keeps its tables in it, --force refuses (listing what public holds) unless
    --include-public says everything in it goes (public is then made again as in a new
    database: PostgreSQL 15+, owner pg_database_owner, USAGE for everyone) or
    --keep-public leaves it as it is.

    Exit codes: 0 deleted (or nothing to delete); 1 declined, or the typed name does not
    match; 2 a configuration with database URLs and no --force, public holding a service's
    tables without --include-public or --keep-public, or no terminal to confirm at (pass
    --yes, or --confirm DATABASE with --force).
    """
    if include_public and keep_public:
        raise UsageError("--include-public and --keep-public contradict each other",
                         hint="choose one; nothing was changed")
    if (include_public or keep_public) and not force:
        raise UsageError(f"{'--include-public' if include_public else '--keep-public'} "
                         "goes with --force", hint="nothing was changed")
    workspace = invocation.workspace()
    devloop = devloop_module()
    reporter = make_reporter()
    if workspace.config.uses_embedded and not force:
        server_dir = devloop.embedded_dir(workspace)
        confirm(f"Delete the embedded PostgreSQL and all its data in {server_dir}?", yes)
        removed = devloop.reset_embedded(workspace)
        reporter.line("embedded PostgreSQL data deleted" if removed else "nothing to delete")
        return ExitCode.OK
    if not force:
        raise UsageError(
            "fleet reset deletes only the embedded PostgreSQL; this configuration uses "
            "database URLs",
            hint="to drop every configured schema there, run 'fleet reset --force' and type "
            "the database name")
    public = "include" if include_public else "keep" if keep_public else "refuse"
    if public == "refuse":  # before asking anything: nothing will be dropped
        devloop.refuse_public(workspace)
    names = devloop.database_names(workspace)
    expected = ",".join(names)
    if confirm_name is None:
        if not sys.stdin or not sys.stdin.isatty():
            raise UsageError("--force needs the database name typed at a terminal",
                             hint=f"or pass --confirm {expected}")
        what = (" and everything in schema public"
                if public == "include" and devloop.public_users(workspace) else "")
        confirm_name = click.prompt(
            f"This drops every configured schema{what} in {expected}. Type the database "
            "name to confirm", default="", show_default=False)
    if confirm_name != expected:
        raise Aborted("the typed name does not match; nothing was changed")
    dropped = devloop.drop_all_schemas(workspace, public=public)
    for schema in dropped:
        reporter.line(f"dropped {schema}")
    if public == "keep":
        for schema in devloop.kept_public(workspace):
            reporter.line(f"kept {schema}")
    reporter.line(f"{len(dropped)} schema(s) dropped")
    return ExitCode.OK
