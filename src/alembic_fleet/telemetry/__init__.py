"""Run telemetry: Prometheus metrics and OpenTelemetry traces of a migration run.

Both consume the run's events (:mod:`alembic_fleet.execution.events`), the same stream the
progress bar is drawn from, and the command's exit code at the end; neither changes what the
run does or its exit code (a Pushgateway or collector that is down is a warning). The
libraries are optional extras, imported only when asked for: ``alembic-fleet[metrics]``
(``prometheus-client``) and ``alembic-fleet[otel]`` (the OpenTelemetry SDK and its OTLP/HTTP
exporter); asking without them is a usage error naming the extra.

* :mod:`.metrics`: :class:`~.metrics.RunMetrics`, one registry per run, pushed to a
  Pushgateway or written for node_exporter's text-file collector;
* :mod:`.traces`: :class:`~.traces.RunTracer`, a span per run, target and revision, when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
* :mod:`.session`: :class:`~.session.Telemetry`, both behind one event sink.

This package writes nothing to stdout or stderr: what it has to say comes back as warnings
for :mod:`alembic_fleet.reporting` to print.
"""

from __future__ import annotations

from alembic_fleet.telemetry.session import (
    BUDGET_EXIT,
    Telemetry,
    TelemetrySettings,
    parse_grouping,
    traces_configured,
)

__all__ = ["BUDGET_EXIT", "Telemetry", "TelemetrySettings", "parse_grouping",
           "traces_configured"]
