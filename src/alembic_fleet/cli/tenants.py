"""``fleet tenants list/add/remove``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from alembic_fleet.cli.app import (
    Invocation,
    cli,
    json_option,
    make_reporter,
    tenants_module,
)
from alembic_fleet.cli.telemetry import RunTelemetry, telemetry_options
from alembic_fleet.exceptions import Aborted, UsageError
from alembic_fleet.exit_codes import ExitCode, exit_code


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
    rows = tenants_module().list_tenants(invocation.workspace())
    make_reporter(json_mode=as_json).tenants(rows)
    return ExitCode.OK

@tenants.command("add")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--no-migrate", is_flag=True, help="Only record the tenants.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes for the migration.")
@json_option
@click.pass_obj
@telemetry_options
def tenants_add(invocation: Invocation, names: Sequence[str], no_migrate: bool, jobs: int | None,
                as_json: bool, telemetry: RunTelemetry) -> int:
    """Record tenants where the configured tenant source lives, then create and migrate
    their schemas for every per-tenant service. Adding an existing tenant changes nothing.

    Exit codes: 0 added; 1 a migration failed; 2 invalid name or configuration, or no
    database reachable.
    """
    reporter = make_reporter(json_mode=as_json)
    result = tenants_module().add_tenants(invocation.workspace(), names, migrate=not no_migrate,
                                    jobs=jobs, on_event=telemetry.sink(reporter.event))
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

    Exit codes: 0 removed (also when there was nothing to remove); 1 declined or pg_dump
    failed (nothing dropped); 2 bad input, a schema of that name that is not the tenant's,
    or no terminal to type the name at and no --yes.
    """
    workspace = invocation.workspace()
    tenants = tenants_module()
    present = tenants.existing_schemas(workspace, tenants.tenant_targets(workspace, name))
    if not yes and (present or name in workspace.config.tenants):  # else: nothing to drop
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
    make_reporter(json_mode=as_json).tenants_removed(name, result)
    return ExitCode.OK
