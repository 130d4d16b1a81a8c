"""``fleet check`` and ``fleet revision``: the CI gate and new revision files."""

from __future__ import annotations

from collections.abc import Sequence

import click

from alembic_fleet.cli.app import Invocation, cli, facade, json_option, make_reporter, tenant_option
from alembic_fleet.exceptions import UsageError
from alembic_fleet.exit_codes import exit_code


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--database", "database", is_flag=True,
              help="Also check the configured databases: checksums of applied revisions and "
              "every tenant schema against the migrations.")
@tenant_option
@click.option("--since", metavar="REF",
              help="Lint one by one only the revisions added since git REF (e.g. "
              "origin/main). Default: those new or changed on this git branch (since the "
              "merge-base with its upstream, origin/HEAD, main or master); with --database, "
              "those not applied yet.")
@click.option("--all", "all_revisions", is_flag=True,
              help="Lint every revision one by one, however old (the graph and the scratch "
              "round trip always cover the whole history).")
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
          since: str | None, all_revisions: bool, scratch_url: str | None, no_scratch: bool,
          output_format: str, as_json: bool) -> int:
    """Check the migration scripts (and, with --database, the schemas) for problems.

    Finds: duplicate revision ids, several heads, unknown down_revision, cycles, names
    that break the configured patterns, a missing downgrade(), revisions importing the
    application, models that differ from the migrations, downgrades that do not undo
    their upgrade, unsafe operations in new revisions, and with --database revisions
    edited after they were applied and tenant schemas changed by hand.

    The rules about one revision's own code (names, downgrade(), imports, unsafe SQL) look
    at the revisions new on this git branch by default; --all for every one.

    Accept a finding in the revision file with '# fleet: allow RULE: reason'.

    Exit codes: 0 no problems; 3 problems found; 2 bad input.
    """
    from alembic_fleet.check.gate import CheckOptions

    if all_revisions and since:
        raise UsageError("--all and --since cannot be used together",
                         hint="--since REF lints the revisions added since REF, --all every one")
    reporter = make_reporter(json_mode=as_json or output_format == "json")
    options = CheckOptions(scratch=not no_scratch, scratch_url=scratch_url, database=database,
                           since=since, all_revisions=all_revisions)
    report = facade().check(invocation.workspace(), services, tenants, options=options)
    reporter.check(report, output_format="json" if as_json else output_format)
    return exit_code(report)

@cli.command()
@click.argument("service")
@click.option("--message", "-m", required=True, metavar="MSG", help="The revision's message.")
@click.option("--autogenerate", is_flag=True,
              help="Compare the models with a scratch schema at head and write the "
              "operations (no shared database needed).")
@click.option("--scratch-url", metavar="URL", envvar="FLEET_SCRATCH_DATABASE_URL",
              help="Scratch database for --autogenerate (default: the embedded "
              "PostgreSQL). Env: FLEET_SCRATCH_DATABASE_URL.")
@json_option
@click.pass_obj
def revision(invocation: Invocation, service: str, message: str, autogenerate: bool,
             scratch_url: str | None, as_json: bool) -> int:
    """Create a revision file for SERVICE, then check it at once.

    With --autogenerate the models are compared with a throwaway schema upgraded to head on
    the scratch database, so nothing schema-qualified leaks into the file.

    Exit codes: 0 created, no problems; 3 created, with problems to look at; 2 bad input.
    """
    files, report = facade().revision(invocation.workspace(), service, message,
                                      autogenerate=autogenerate, scratch_url=scratch_url)
    make_reporter(json_mode=as_json).revision([str(f) for f in files], report)
    return exit_code(report)
