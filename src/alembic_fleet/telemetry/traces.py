"""OpenTelemetry traces of one run: a span per run, per target that ran, per revision.

On when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set, unless ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``; the official SDK
reads every other standard variable itself (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*``, ...). The exporter is OTLP over HTTP/protobuf (``[otel]``), or gRPC when
``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and ``opentelemetry-exporter-otlp-proto-grpc`` is
installed. A ``TRACEPARENT`` in the environment (a CI pipeline's trace) becomes the run's
parent.

* the run: ``fleet migrate`` (the command), from the command's start (planning included)
  to its end; attributes: counts, exit code, shard; status ERROR unless it exited 0 or 4;
* a target: ``migrate SERVICE``, from the moment it was handed to a worker to its result;
  attributes: service, tenant, schema, the database's host and name (never a URL, user or
  password), outcome, revisions from and to, attempts, retry reasons, advisory lock wait,
  how it ran; status ERROR with the (password-scrubbed) error when it failed;
* a revision: ``revision ID``, child of its target, timed by the worker (see
  :class:`~alembic_fleet.model.status.RevisionTiming`).

Targets that did not run (already at head, not started) get no span: the run's attributes
count them. Span names stay low-cardinality; tenants are attributes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from alembic_fleet.execution.events import (
    Event,
    RunStarted,
    RunStopped,
    TargetDeferred,
    TargetFinished,
    TargetStarted,
)
from alembic_fleet.model.status import Outcome, TargetResult
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.redact import scrub

DEFAULT_SERVICE_NAME = "alembic-fleet"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _protocol(environ: Mapping[str, str]) -> str:
    return (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()


def _exporter(environ: Mapping[str, str]) -> Any:
    from alembic_fleet.telemetry.session import require

    if _protocol(environ) == "grpc":
        module = require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "otel",
                         "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
                         package="opentelemetry-exporter-otlp-proto-grpc")
        return module.OTLPSpanExporter()
    module = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", "otel",
                     "OTEL_EXPORTER_OTLP_ENDPOINT")
    return module.OTLPSpanExporter()


def _counting(exporter: Any) -> Any:
    """The exporter, counting the batches it failed to deliver (for one warning at the
    end, besides the SDK's own log lines)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Counting(SpanExporter):
        failures = 0

        def export(self, spans: Any) -> SpanExportResult:
            result = exporter.export(spans)
            if result is not SpanExportResult.SUCCESS:
                Counting.failures += 1
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(exporter.force_flush(timeout_millis))

    return Counting()


def database_attributes(database: Database) -> dict[str, Any]:
    """Where a target lives, as OpenTelemetry's database conventions name it: the server's
    host and port and the database's name. Never the URL (user, password, options)."""
    if database.url is None:
        return {"db.namespace": database.embedded_name or "", "server.address": "embedded"}
    try:
        from sqlalchemy.engine import make_url

        url = make_url(database.url)
    except Exception:  # an unusual URL: say nothing rather than risk its password
        return {}
    attributes: dict[str, Any] = {}
    if url.database:
        attributes["db.namespace"] = url.database
    host = url.host or url.query.get("host")
    if isinstance(host, str) and host:
        attributes["server.address"] = host
    if url.port:
        attributes["server.port"] = url.port
    return attributes


def target_attributes(target: Target) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system": "postgresql", "fleet.service": target.service,
                                  "fleet.schema": target.schema,
                                  **database_attributes(target.database)}
    if target.tenant:
        attributes["fleet.tenant"] = target.tenant
    return attributes


class RunTracer:
    """Spans of one run, exported in batches and flushed by :meth:`close`."""

    def __init__(self, command: str, environ: Mapping[str, str], attributes: Mapping[str, Any]
                 ) -> None:
        from alembic_fleet.telemetry.session import require

        require("opentelemetry.sdk.trace", "otel", "OTEL_EXPORTER_OTLP_ENDPOINT")
        self._stopped = False
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from alembic_fleet import __version__

        self._trace = trace
        resource = Resource.create({"service.version": __version__})
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._exporter = _counting(_exporter(environ))
        self.provider.add_span_processor(BatchSpanProcessor(self._exporter))
        self.tracer = self.provider.get_tracer("alembic_fleet", __version__)
        carrier = {k.lower(): v for k, v in environ.items() if k in ("TRACEPARENT",
                                                                       "TRACESTATE")}
        parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
        self.run = self.tracer.start_span(command, context=parent,
                                          attributes={"fleet.command": command, **attributes})
        self._run_context = trace.set_span_in_context(self.run)
        self._targets: dict[Target, Any] = {}
        self._counts = {outcome: 0 for outcome in Outcome}

    @property
    def export_failures(self) -> int:
        return int(self._exporter.failures)

    def event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run.set_attribute("fleet.targets", event.total)
            self.run.set_attribute("fleet.targets.to_migrate", event.to_migrate)
        elif isinstance(event, TargetStarted):
            target = event.target
            self._targets[target] = self.tracer.start_span(
                f"migrate {target.service}", context=self._run_context,
                attributes=target_attributes(target))
        elif isinstance(event, RunStopped):
            self._stopped = True
            self.run.set_attributes({"fleet.stopped.reason": event.reason,
                                     "fleet.stopped.detail": event.detail})
        elif isinstance(event, TargetDeferred):  # this attempt ends; another span follows
            span = self._targets.pop(event.result.target, None)
            if span is not None:
                span.set_attributes({"fleet.outcome": "deferred",
                                     "fleet.attempts": event.result.attempts})
                span.end()
        elif isinstance(event, TargetFinished):
            self._counts[event.result.outcome] += 1
            span = self._targets.pop(event.result.target, None)
            if span is not None:
                self._finish_target(span, event.result)

    def _finish_target(self, span: Any, result: TargetResult) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes({
            "fleet.outcome": result.outcome.value,
            "fleet.from": ",".join(result.from_revs),
            "fleet.to": ",".join(result.to_revs),
            "fleet.attempts": result.attempts,
            "fleet.lock_wait_seconds": round(result.lock_wait, 6),
        })
        if result.retried:
            span.set_attribute("fleet.retry_reasons", list(result.retried))
        if result.via:
            span.set_attribute("fleet.via", result.via)
        if result.note:
            span.set_attribute("fleet.note", scrub(result.note))
        context = self._trace.set_span_in_context(span)
        for timing in result.revisions:
            child = self.tracer.start_span(
                f"revision {timing.revision}", context=context, start_time=_ns(timing.started),
                attributes={"fleet.service": result.target.service,
                            "fleet.revision": timing.revision})
            child.end(end_time=_ns(timing.started + timing.seconds))
        if result.outcome is Outcome.FAILED:
            span.set_status(Status(StatusCode.ERROR, scrub(result.error or "failed")))
            if result.hint:
                span.set_attribute("fleet.hint", scrub(result.hint))
        span.end()

    def close(self, code: int, *, error: str | None, export: bool, budget_exit: int) -> None:
        """End the run's span (unless nothing ran and nothing failed: a dry run is no run)
        and flush every span."""
        from opentelemetry.trace import Status, StatusCode

        now = time.time()
        for span in self._targets.values():  # handed out, never reported back
            span.set_attribute("fleet.outcome", "unknown")
            span.end(end_time=_ns(now))
        self._targets.clear()
        if export:
            self.run.set_attributes({f"fleet.targets.{o.value}": n
                                     for o, n in self._counts.items()})
            self.run.set_attribute("fleet.exit_code", code)
            self.run.set_attribute("fleet.stopped_by_budget",
                                   self._stopped or code == budget_exit)
            if code not in (0, budget_exit):
                self.run.set_status(Status(StatusCode.ERROR, scrub(
                    error or f"{self._counts[Outcome.FAILED]} target(s) failed")))
            self.run.end()
        self.provider.shutdown()


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
