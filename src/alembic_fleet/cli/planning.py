"""``fleet plan``: what the pending migrations will do, for a reviewer."""

from __future__ import annotations

from collections.abc import Sequence

import click

from alembic_fleet.cli.app import Invocation, cli, facade, json_option, make_reporter, tenant_option
from alembic_fleet.exit_codes import ExitCode


@cli.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@tenant_option
@click.option("--format", "output_format", type=click.Choice(["text", "markdown", "json"]),
              default="text", show_default=True,
              help="'markdown' for a pull-request comment; 'json' for one object.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes the estimate assumes (default: 'jobs' in the config, "
              "else one per CPU, as fleet migrate).")
@json_option
@click.pass_obj
def plan(invocation: Invocation, services: Sequence[str], tenants: Sequence[str],
         output_format: str, jobs: int | None, as_json: bool) -> int:
    """Show what 'fleet migrate' would run, statement by statement, for review.

    Per service: the targets behind, grouped by the revision they stand at; each pending
    revision rendered offline (as --sql does), and for every statement the table-level lock
    it takes and on which relation (from PostgreSQL's own parser), whether it rewrites or
    scans the table, how many targets run it, the largest copy of that relation among them
    (rows and size from the catalog), fleet check's unsafe-operation findings, and an
    estimate of the duration from the ledger. Nothing is executed.

    Exit codes: 0 planned (also when nothing is pending); 1 some database could not be read
    (the plan leaves its targets out); 2 usage, configuration, or no database reachable.
    """
    report = facade().plan(invocation.workspace(), services, tenants, jobs=jobs)
    make_reporter(json_mode=as_json).review_plan(
        report, output_format="json" if as_json else output_format)
    return ExitCode.FAILED if report.unreachable else ExitCode.OK
