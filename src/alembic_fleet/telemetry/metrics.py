"""Prometheus metrics of one run, pushed to a Pushgateway or written as a text file.

A run is a batch job: it is over before any Prometheus could scrape it, so its metrics go
to a Pushgateway (``--metrics-push URL``, ``FLEET_METRICS_PUSH``) or to a file for
node_exporter's text-file collector (``--metrics-file PATH``). Each run builds its own
registry and a push *replaces* the run's group (``job`` plus ``FLEET_METRICS_GROUPING`` and
the shard), so every value describes the **last run** of that group: that is why the counts
are gauges, not counters (a counter pushed by a run that starts from zero would look like
a reset to Prometheus).

Labels are kept few: ``service``, ``outcome``, ``revision`` and a retry ``reason`` (a
handful of fixed words). Never the tenant or the schema: a platform has thousands of
tenants, and every tenant label would be a time series of its own, for ever, in
Prometheus. The tenants that failed are in the run's JSON report and in its trace. Never a
URL either: nothing here can carry a password.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from alembic_fleet.execution.events import Event, RunStarted, RunStopped, TargetFinished
from alembic_fleet.model.status import Outcome
from alembic_fleet.redact import register_secret, register_url_secrets

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
           1800.0, 3600.0, float("inf"))
"""Seconds: from a replayed revision (milliseconds) to an index build on a large table."""

LOCK_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, float("inf"))

JOB = "alembic-fleet"
"""The Pushgateway ``job`` of every push (``FLEET_METRICS_GROUPING=job=...`` overrides)."""

PUSH_TIMEOUT = 10.0
"""Seconds a push may take: an unreachable Pushgateway must not hold up a deploy."""


def _client() -> Any:
    from alembic_fleet.telemetry.session import require

    return require("prometheus_client", "metrics", "--metrics-push / --metrics-file")


class RunMetrics:
    """The metrics of one run, fed with its events, then pushed or written."""

    def __init__(self, command: str) -> None:
        prom = _client()
        # No `_created` samples: a run's registry is new every time, so they say nothing
        # but "when this run pushed", for every series.
        prom.disable_created_metrics()
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.targets = prom.Gauge(
            "fleet_run_targets", "Targets of the last run by outcome (migrated, skipped, "
            "failed).", ["service", "outcome"], registry=r)
        self.target_seconds = prom.Histogram(
            "fleet_target_duration_seconds", "Seconds each target of the last run took "
            "(lock, migration, retries), targets that ran only.", ["service", "outcome"],
            buckets=BUCKETS, registry=r)
        self.revision_seconds = prom.Histogram(
            "fleet_revision_duration_seconds", "Seconds each revision applied in the last "
            "run took, over its tenants.", ["service", "revision"], buckets=BUCKETS,
            registry=r)
        self.lock_wait = prom.Histogram(
            "fleet_lock_wait_seconds", "Seconds targets of the last run waited for their "
            "advisory lock (another runner held it).", ["service"], buckets=LOCK_BUCKETS,
            registry=r)
        self.retries = prom.Gauge(
            "fleet_run_retries", "Attempts of the last run retried after a transient failure "
            "(lock timeout, connection lost, ...), by reason.", ["service", "reason"],
            registry=r)
        self.to_migrate = prom.Gauge(
            "fleet_run_targets_to_migrate", "Targets the last run found behind.", registry=r)
        self.duration = prom.Gauge(
            "fleet_run_duration_seconds", "Seconds the last run took, planning included.",
            registry=r)
        self.exit_code = prom.Gauge(
            "fleet_run_exit_code", "Exit code of the last run (0 ok, 1 a target failed, 2 "
            "usage or database unreachable, 4 stopped by a budget, 130/143 interrupted).",
            registry=r)
        self.success = prom.Gauge(
            "fleet_run_success", "1 when the last run exited 0.", registry=r)
        self.stopped_by_budget = prom.Gauge(
            "fleet_run_stopped_by_budget", "1 when the last run stopped starting targets early "
            "(--deadline, --max-failures, a failed --canary wave); a rerun resumes.",
            registry=r)
        self._stopped = False
        self.finished = prom.Gauge(
            "fleet_run_finished_timestamp_seconds", "When the last run ended (Unix time).",
            registry=r)
        self.info = prom.Info("fleet_run", "The last run: command and fleet's version.",
                              registry=r)
        from alembic_fleet import __version__

        self.info.info({"command": command, "version": __version__})

    def event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.to_migrate.set(event.to_migrate)
        elif isinstance(event, RunStopped):
            self._stopped = True
        elif isinstance(event, TargetFinished):
            result = event.result
            service, outcome = result.target.service, result.outcome.value
            self.targets.labels(service, outcome).inc()
            ran = result.attempts > 0 or result.outcome is Outcome.MIGRATED
            if ran:
                self.target_seconds.labels(service, outcome).observe(result.seconds)
                self.lock_wait.labels(service).observe(result.lock_wait)
            for reason in result.retried:
                self.retries.labels(service, reason).inc()
            for timing in result.revisions:
                self.revision_seconds.labels(service, timing.revision).observe(timing.seconds)

    def finish(self, code: int, seconds: float, *, budget_exit: int) -> None:
        self.exit_code.set(code)
        self.success.set(1 if code == 0 else 0)
        self.stopped_by_budget.set(1 if self._stopped or code == budget_exit else 0)
        self.duration.set(seconds)
        self.finished.set(time.time())

    def push(self, url: str, grouping: dict[str, str]) -> None:
        """Replace the run's group on the Pushgateway (HTTP PUT); a user and password in
        the URL (``https://user:password@host``) are sent as basic authentication."""
        key = dict(grouping)
        job = key.pop("job", JOB)
        gateway, handler = _authenticated(url, self._prom)
        self._prom.push_to_gateway(gateway, job=job, registry=self.registry, grouping_key=key,
                                   timeout=PUSH_TIMEOUT, handler=handler)

    def write(self, path: Path) -> None:
        """Write the text-file collector's format, atomically (a temporary file renamed)."""
        self._prom.write_to_textfile(str(path), self.registry)

    def text(self) -> str:
        return self._prom.generate_latest(self.registry).decode()


def push_credentials(url: str) -> tuple[str, str] | None:
    """The user and password of a Pushgateway URL (``http://u:p@host`` or ``u:p@host:port``),
    the password registered as a secret at once: the command line that holds it is recorded
    in the ledger before anything is pushed."""
    register_url_secrets(url)  # and its ?token=, ?password=, ... whole
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return None
    password = unquote(parts.password or "")
    register_secret(password)
    return unquote(parts.username), password


def _authenticated(url: str, prom: Any) -> tuple[str, Any]:
    """The URL without its user information, and the handler that sends it."""
    credentials = push_credentials(url)
    if credentials is None:
        return url, prom.exposition.default_handler
    user, password = credentials
    parts = urlsplit(url if "://" in url else f"http://{url}")
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Any:
        return prom.exposition.basic_auth_handler(url, method, timeout, headers, data,
                                                  user, password)

    return urlunsplit(parts._replace(netloc=netloc)), handler
