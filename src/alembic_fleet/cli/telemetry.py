"""``--progress``, ``--metrics-push`` and ``--metrics-file``: the run's event sinks.

:func:`telemetry_options` adds the options to a command that runs migrations and wraps it:
before the command's body it sets up the metrics and traces asked for (a missing extra is
a usage error, exit 2, before anything runs); the body gets a :class:`RunTelemetry` as its
``telemetry`` argument and passes ``telemetry.sink(reporter.event)`` where it passed the
reporter's progress; after the body, whatever it returned or raised, the telemetry is
closed with the command's exit code (metrics pushed or written, traces flushed, the last
JSON line). The reporter's own progress, JSON lines, metrics and traces are all sinks of
the same events.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from alembic_fleet.exceptions import FleetError
from alembic_fleet.execution.events import Event, EventSink
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.shard import Shard, parse_shard
from alembic_fleet.reporting.event_lines import EventLines, warn
from alembic_fleet.telemetry import BUDGET_EXIT, Telemetry, TelemetrySettings

PROGRESS_CHOICES = ("auto", "json", "none")


class RunTelemetry:
    """One command's sinks besides the reporter's, and how they end."""

    def __init__(self, progress: str, telemetry: Telemetry) -> None:
        self.progress = progress
        self.telemetry = telemetry
        self.lines = EventLines() if progress == "json" else None

    def sink(self, reporter_progress: EventSink) -> EventSink:
        """The run's event sink: the reporter's progress (``auto``) or JSON lines
        (``json``) or nothing (``none``), plus metrics and traces."""
        sinks: list[EventSink] = []
        if self.lines is not None:
            sinks.append(self.lines.event)
        elif self.progress == "auto":
            sinks.append(reporter_progress)
        if self.telemetry.active:
            sinks.append(self.telemetry.event)
        if len(sinks) == 1:
            return sinks[0]

        def every(event: Event) -> None:
            for sink in sinks:
                sink(event)

        return every

    def close(self, code: int, error: str | None = None) -> None:
        warnings = self.telemetry.close(code, error)
        for warning in warnings:
            if self.lines is not None:
                self.lines.warning(warning)
            else:
                warn(warning)
        if self.lines is not None:
            self.lines.finished(code, budget_exit=BUDGET_EXIT, error=error)


def _shard(text: str | None) -> Shard | None:
    """The shard for the Pushgateway's grouping; a bad --shard is the command's error."""
    if not text:
        return None
    try:
        return parse_shard(text, os.environ)
    except FleetError:
        return None


def _error(exc: BaseException) -> tuple[int, str | None]:
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code, None
    if isinstance(exc, click.ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, click.exceptions.Abort):
        return 130, "interrupted"
    code = int(exit_code(exc))
    if isinstance(exc, FleetError):
        return code, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return code, "terminated" if code == 143 else "interrupted"
    return code, f"internal error: {type(exc).__name__}"


def telemetry_options(command: Callable[..., int]) -> Callable[..., int]:
    """Add ``--progress``, ``--metrics-push`` and ``--metrics-file`` to ``command``, which
    receives ``telemetry`` (a :class:`RunTelemetry`)."""

    @functools.wraps(command)
    def wrapper(*args: Any, progress: str, metrics_push: str | None,
                metrics_file: str | None, **kwargs: Any) -> int:
        settings = TelemetrySettings(
            command=_command_name(),
            metrics_push=metrics_push or None,
            metrics_file=Path(metrics_file) if metrics_file else None,
            shard=_shard(kwargs.get("shard")))
        run = RunTelemetry(progress, Telemetry.start(settings))
        try:
            code = command(*args, telemetry=run, **kwargs)
        except BaseException as exc:
            run.close(*_error(exc))
            raise
        run.close(int(code) if isinstance(code, int) else 0)
        return code

    options = [
        click.option("--progress", type=click.Choice(PROGRESS_CHOICES), default="auto",
                     show_default=True,
                     help="Progress: 'auto' (a bar on stderr at a terminal, a line per "
                     "target on stdout when piped), 'json' (one JSON object per event on "
                     "stderr, for programs) or 'none'."),
        click.option("--metrics-push", metavar="URL", envvar="FLEET_METRICS_PUSH",
                     help="Push the run's Prometheus metrics to this Pushgateway (also "
                     "FLEET_METRICS_PUSH; grouping labels: FLEET_METRICS_GROUPING). Needs "
                     "alembic-fleet[metrics]."),
        click.option("--metrics-file", metavar="PATH",
                     type=click.Path(dir_okay=False, writable=True),
                     help="Write the run's metrics in the text-file collector format "
                     "(node_exporter). Needs alembic-fleet[metrics]."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _command_name() -> str:
    """``fleet migrate``, ``fleet tenants add``: the command path, without its arguments."""
    context = click.get_current_context(silent=True)
    return context.command_path if context is not None else "fleet"
