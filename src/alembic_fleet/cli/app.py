"""The ``fleet`` command group, its global options, and what every command shares.

The commands live in the modules of this package by subject; each one parses its options,
calls the façade (:mod:`alembic_fleet.commands`, :mod:`alembic_fleet.tenants`,
:mod:`alembic_fleet.devloop`), hands the result to :mod:`alembic_fleet.reporting` and
returns :func:`alembic_fleet.exit_codes.exit_code` of it. This package is the only code
that imports Click.
"""

from __future__ import annotations

import os
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from alembic_fleet import __version__
from alembic_fleet.config.table_reader import MAX_SECONDS
from alembic_fleet.exceptions import Aborted, UsageError
from alembic_fleet.model.shard import Shard, parse_shard
from alembic_fleet.reporting import streams

if TYPE_CHECKING:
    from alembic_fleet.reporting.console import Reporter
    from alembic_fleet.workspace import Workspace

STARTED = time.monotonic()
"""When this process started running fleet: a deadline counts from here."""

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON object instead of text.")

tenant_option = click.option("--tenant", "-t", "tenants", multiple=True, metavar="T",
                             help="Only this tenant (repeatable).")

shard_option = click.option(
    "--shard", "shard", metavar="I/K|auto",
    help="Only this process's share of the targets: shard I of K by a stable hash of the "
    "tenant; 'auto' reads JOB_COMPLETION_INDEX and JOB_COMPLETION_COUNT (Indexed Job).")

def facade() -> ModuleType:
    """The façade (:mod:`alembic_fleet.commands`), imported when a command runs: it brings
    SQLAlchemy and most of fleet, which ``--help``, ``--version`` and shell completion do
    not need (see :func:`alembic_fleet.cli.main`, which loads it beforehand for a real
    command)."""
    from alembic_fleet import commands

    return commands

def make_reporter(**options: Any) -> Reporter:
    """A :class:`~alembic_fleet.reporting.console.Reporter` (Rich is imported on first use,
    as the façade is)."""
    from alembic_fleet.reporting.console import Reporter

    return Reporter(**options)

def tenants_module() -> ModuleType:
    """The tenants module, imported only by the tenant commands (it loads tomlkit and the
    pg_dump helpers, which ``migrate`` and ``status`` do not need)."""
    from alembic_fleet import tenants

    return tenants

def devloop_module() -> ModuleType:
    """The dev-loop and embedded-server module, imported only by its commands."""
    from alembic_fleet import devloop

    return devloop

def shard_from(text: str | None) -> Shard | None:
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
            from alembic_fleet.workspace import Workspace

            self._workspace = root.with_resource(Workspace.open(self.config))
        return self._workspace

class FleetCommand(click.Command):
    """A command whose run sends every other writer's stdout to stderr (revisions print;
    see :mod:`alembic_fleet.reporting.streams`); its help still goes to stdout."""

    def invoke(self, ctx: click.Context) -> object:
        with streams.diverted():
            return super().invoke(ctx)


class FleetGroup(click.Group):
    """Commands and sub-groups made with ``@group.command()`` are :class:`FleetCommand`."""

    command_class = FleetCommand
    group_class = type


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    if directory:  # -C DIR: run as if started in DIR
        if not os.path.isdir(directory):
            raise UsageError(f"-C {directory}: no such directory")
        os.chdir(directory)
    ctx.obj = Invocation(config)

class Seconds(click.ParamType):
    """A number of seconds from 0 to a week: NaN, infinities and huge values are usage
    errors (exit 2), not internal errors later. ``positive``: 0 is refused too (for
    ``--lock-timeout``, where PostgreSQL reads 0 as no limit)."""

    name = "seconds"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not 0 <= number <= MAX_SECONDS:
            self.fail(f"{value!r} is not between 0 and {MAX_SECONDS} seconds", param, ctx)
        if self.positive and number == 0:
            self.fail("0 would mean no limit to PostgreSQL (DDL waiting behind the "
                      "application's locks as long as they are held): give more than 0, "
                      "e.g. 0.5", param, ctx)
        return number


seconds = Seconds()
positive_seconds = Seconds(positive=True)

def command_line() -> str:
    """The command as typed (the ledger keeps it masked and cut: RunInfo.current)."""
    return " ".join(["fleet", *sys.argv[1:]])

skip_migrations_option = click.option(
    "--skip-migrations", is_flag=True, envvar="SKIP_MIGRATIONS",
    help="Do not migrate (also SKIP_MIGRATIONS=true).")

wait_option = click.option("--wait-for-db", "wait_for_db", type=seconds, default=30,
                           show_default=True, metavar="S",
                           help="How long to wait for a configured (non-embedded) database.")

def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; refuse to guess when nobody can answer."""
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError("confirmation needed, but standard input is not a terminal",
                         hint="pass --yes to confirm")
    if not click.confirm(question, default=False):
        raise Aborted("declined; nothing was changed")
