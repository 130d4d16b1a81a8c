"""One command's telemetry: metrics and traces behind one event sink, closed with the exit
code.

:meth:`Telemetry.start` checks everything it can before the run (the extras are installed,
the grouping is valid, the metrics file's folder exists): a mistake there is a usage error,
exit 2, and nothing runs. Once the run has begun, nothing here may change its outcome:
:meth:`Telemetry.close` never raises, and returns what went wrong (a Pushgateway that did
not answer) as warnings.

A command that executed nothing and succeeded (``--dry-run``, ``--sql``, ``tenants add
--no-migrate``) is no run: nothing is pushed, written or traced, so that it does not
replace the last real run's metrics. A command that failed before it could run (exit 2: the
configuration, a database that never answered) is reported: that is what alerts need.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic_fleet.exceptions import UsageError
from alembic_fleet.execution.events import Event, RunStarted
from alembic_fleet.model.shard import Shard
from alembic_fleet.redact import redact_url, scrub

BUDGET_EXIT = 4
"""The exit code of a run stopped early by a budget (``--deadline`` / ``FLEET_DEADLINE``);
a rerun resumes. Counted in ``fleet_run_stopped_by_budget``."""

GROUPING_ENV = "FLEET_METRICS_GROUPING"
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def require(module: str, extra: str, asked_by: str, *, package: str | None = None
            ) -> ModuleType:
    """Import an optional dependency, or fail with the extra that provides it (exit 2)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from alembic_fleet.install import requirement  # not on PyPI: how this one came

        install = (f"pip install '{package}'" if package
                   else f"pip install {requirement(extra)}")
        raise UsageError(
            f"{asked_by} needs the optional dependency {package or module.split('.')[0]!r}, "
            "which is not installed",
            hint=f"{install} (the extra '{extra}'), or leave {asked_by} out") from None


def parse_grouping(text: str | None) -> dict[str, str]:
    """``name=value,name=value``: the Pushgateway grouping labels (``job`` included)."""
    grouping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _LABEL.match(name) or not value or name.startswith("__"):
            raise UsageError(f"{GROUPING_ENV}: {item.strip()!r} is not name=value",
                             hint=f"e.g. {GROUPING_ENV}=namespace=platform,release=rel")
        grouping[name] = value
    return grouping


def traces_configured(environ: Mapping[str, str] | None = None) -> bool:
    from alembic_fleet.telemetry.traces import tracing_enabled

    return tracing_enabled(environ)


@dataclass(frozen=True)
class TelemetrySettings:
    """What one command was asked for."""

    command: str
    metrics_push: str | None = None
    metrics_file: Path | None = None
    shard: Shard | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        if self.metrics_push:  # its password is a secret from now on (see push_credentials)
            from alembic_fleet.telemetry.metrics import push_credentials

            push_credentials(self.metrics_push)

    @property
    def metrics(self) -> bool:
        return bool(self.metrics_push or self.metrics_file)

    @property
    def traces(self) -> bool:
        return traces_configured(self.environ)

    def grouping(self) -> dict[str, str]:
        grouping = parse_grouping(self.environ.get(GROUPING_ENV))
        if self.shard is not None:
            # Shards of one run push side by side, not over one another.
            grouping.setdefault("shard", str(self.shard.index))
        return grouping


class Telemetry:
    """Metrics and traces of one command (either may be off)."""

    def __init__(self, settings: TelemetrySettings, metrics: Any, tracer: Any,
                 grouping: dict[str, str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.grouping = grouping
        self.started = time.time()
        self.ran = False
        self._closed = False

    @classmethod
    def start(cls, settings: TelemetrySettings) -> Telemetry:
        """Set up what was asked for; a usage error (exit 2) when it cannot be."""
        grouping = settings.grouping() if settings.metrics_push else {}
        if settings.metrics_file is not None:
            folder = settings.metrics_file.parent
            if not folder.is_dir():
                raise UsageError(f"--metrics-file: the folder {str(folder)!r} does not exist",
                                 hint="node_exporter's --collector.textfile.directory, "
                                 "for instance")
        metrics = tracer = None
        if settings.metrics:
            from alembic_fleet.telemetry.metrics import RunMetrics

            metrics = RunMetrics(settings.command)
        if settings.traces:
            from alembic_fleet.telemetry.traces import RunTracer

            attributes: dict[str, Any] = {}
            if settings.shard is not None:
                attributes["fleet.shard"] = str(settings.shard)
            tracer = RunTracer(settings.command, settings.environ, attributes)
        return cls(settings, metrics, tracer, grouping)

    @property
    def active(self) -> bool:
        return self.metrics is not None or self.tracer is not None

    def event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.ran = True
        if self.metrics is not None:
            self.metrics.event(event)
        if self.tracer is not None:
            self.tracer.event(event)

    def close(self, code: int, error: str | None = None) -> list[str]:
        """Push, write and flush; the warnings of whatever failed (never raises)."""
        if self._closed:
            return []
        self._closed = True
        report = self.ran or code != 0
        warnings: list[str] = []
        if self.metrics is not None and report:
            self.metrics.finish(code, time.time() - self.started, budget_exit=BUDGET_EXIT)
            if self.settings.metrics_push:
                try:
                    self.metrics.push(self.settings.metrics_push, self.grouping)
                except Exception as exc:
                    warnings.append(f"metrics not pushed to "
                                    f"{redact_url(self.settings.metrics_push)}: "
                                    f"{_reason(exc)}")
            if self.settings.metrics_file is not None:
                try:
                    self.metrics.write(self.settings.metrics_file)
                except Exception as exc:
                    warnings.append(f"metrics not written to {self.settings.metrics_file}: "
                                    f"{_reason(exc)}")
        if self.tracer is not None:
            try:
                self.tracer.close(code, error=error, export=report, budget_exit=BUDGET_EXIT)
            except Exception as exc:
                warnings.append(f"traces not sent: {_reason(exc)}")
            else:
                failed = getattr(self.tracer, "export_failures", 0)
                if failed and report:
                    warnings.append(f"traces not sent: {failed} export(s) to the OTLP "
                                    "endpoint failed (see the exporter's log above)")
        return [scrub(w) for w in warnings]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib's URLError: the socket error
    return scrub(str(reason if reason is not None else exc) or type(exc).__name__)
