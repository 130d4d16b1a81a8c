"""The telemetry options without a database: extras, settings, what a run reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from alembic_fleet.cli import main
from alembic_fleet.execution.events import RunStarted, TargetFinished, TargetStarted
from alembic_fleet.exit_codes import ExitCode
from alembic_fleet.model.shard import Shard
from alembic_fleet.model.status import Outcome, RevisionTiming, TargetResult
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.telemetry import BUDGET_EXIT, Telemetry, TelemetrySettings, parse_grouping
from alembic_fleet.telemetry.traces import database_attributes, tracing_enabled

pytest.importorskip("prometheus_client", reason="pip install 'alembic-fleet[metrics]'")

URL = "postgresql://fleet:hunter2pw@db.internal:5433/platform"
TARGET = Target("auth", "toshiba", "auth_toshiba", Database(URL))


def fleet(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    for name in ("FLEET_METRICS_PUSH", "FLEET_METRICS_GROUPING", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no fleet.toml: the telemetry is set up before it is read
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args", [["--metrics-push", "http://127.0.0.1:9"],
                                  ["--metrics-file", "fleet.prom"]])
def test_metrics_without_the_extra_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        args: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    code, err = fleet(monkeypatch, capsys, tmp_path, "migrate", *args)
    assert code == ExitCode.USAGE
    assert "'prometheus_client', which is not installed" in err
    # alembic-fleet is not on PyPI: the hint installs this one again, with the extra.
    from alembic_fleet.install import requirement

    assert f"pip install {requirement('metrics')}" in err and "[metrics]" in err


def test_metrics_push_from_the_environment_needs_the_extra_too(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    code, err = fleet(monkeypatch, capsys, tmp_path, "migrate",
                      env={"FLEET_METRICS_PUSH": "http://127.0.0.1:9"})
    assert code == ExitCode.USAGE and "[metrics]" in err


def test_traces_without_the_extra_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    code, err = fleet(monkeypatch, capsys, tmp_path, "tenants", "add", "acme",
                      env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert code == ExitCode.USAGE
    assert "OTEL_EXPORTER_OTLP_ENDPOINT needs" in err and "[otel]" in err
    # OTEL_SDK_DISABLED turns the SDK (and the demand for it) off: the command goes on to
    # its own error (no configuration here).
    code, err = fleet(monkeypatch, capsys, tmp_path, "migrate",
                      env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                           "OTEL_SDK_DISABLED": "true"})
    assert "[otel]" not in err


def test_bad_grouping_and_metrics_folder_are_usage_errors(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    code, err = fleet(monkeypatch, capsys, tmp_path, "migrate", "--metrics-push",
                      "http://127.0.0.1:9", env={"FLEET_METRICS_GROUPING": "namespace"})
    assert code == ExitCode.USAGE and "FLEET_METRICS_GROUPING: 'namespace' is not name=value" in err
    code, err = fleet(monkeypatch, capsys, tmp_path, "migrate", "--metrics-file",
                      str(tmp_path / "missing" / "fleet.prom"))
    assert code == ExitCode.USAGE and "does not exist" in err


def test_grouping() -> None:
    assert parse_grouping("namespace=platform, release=rel,") == {
        "namespace": "platform", "release": "rel"}
    assert parse_grouping(None) == {}
    for bad in ("a", "=b", "1x=b", "__name__=x", "a="):
        with pytest.raises(Exception, match="is not name=value"):
            parse_grouping(bad)
    settings = TelemetrySettings("fleet migrate", metrics_push="http://x", shard=Shard(1, 4),
                                 environ={"FLEET_METRICS_GROUPING": "job=migrations"})
    assert settings.grouping() == {"job": "migrations", "shard": "1"}


def test_tracing_follows_the_standard_variables() -> None:
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                "OTEL_SDK_DISABLED": "true"})
    assert not tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                "OTEL_TRACES_EXPORTER": "none"})


def test_span_database_attributes_never_hold_credentials() -> None:
    attributes = database_attributes(Database(URL))
    assert attributes == {"db.namespace": "platform", "server.address": "db.internal",
                          "server.port": 5433}
    socket = database_attributes(Database("postgresql://u:pw123@/db?host=/run/pg"))
    assert socket == {"db.namespace": "db", "server.address": "/run/pg"}
    assert database_attributes(Database(None, "ingestion")) == {
        "db.namespace": "ingestion", "server.address": "embedded"}


def run_events(telemetry: Telemetry) -> None:
    telemetry.event(RunStarted(2, 1))
    telemetry.event(TargetFinished(TargetResult(
        Target("auth", "default", "auth_default", Database(URL)), Outcome.SKIPPED, ("a",),
        ("a",))))
    telemetry.event(TargetStarted(TARGET))
    telemetry.event(TargetFinished(TargetResult(
        TARGET, Outcome.MIGRATED, ("a",), ("b",), 2.0, attempts=2, lock_wait=0.25,
        retried=("connection lost",), revisions=(RevisionTiming("b", 1.0, 1.5),))))


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(path.read_text()) for s in f.samples}


def test_a_run_stopped_by_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "fleet.prom"
    telemetry = Telemetry.start(TelemetrySettings("fleet migrate", metrics_file=path,
                                                  environ={}))
    run_events(telemetry)
    assert telemetry.close(BUDGET_EXIT) == []
    values = metrics_of(path)
    assert values[("fleet_run_stopped_by_budget", ())] == 1
    assert values[("fleet_run_exit_code", ())] == 4
    assert values[("fleet_run_success", ())] == 0
    assert values[("fleet_run_targets", (("outcome", "migrated"), ("service", "auth")))] == 1
    assert values[("fleet_run_targets", (("outcome", "skipped"), ("service", "auth")))] == 1
    # Only the target that ran is in the duration histogram.
    assert values[("fleet_target_duration_seconds_count",
                   (("outcome", "migrated"), ("service", "auth")))] == 1
    assert ("fleet_target_duration_seconds_count",
            (("outcome", "skipped"), ("service", "auth"))) not in values
    assert values[("fleet_revision_duration_seconds_sum",
                   (("revision", "b"), ("service", "auth")))] == 1.5
    assert values[("fleet_run_retries", (("reason", "connection lost"), ("service", "auth")))] == 1
    assert values[("fleet_lock_wait_seconds_sum", (("service", "auth"),))] == 0.25
    assert "hunter2pw" not in path.read_text()


def test_a_command_that_ran_nothing_reports_nothing(tmp_path: Path) -> None:
    """--dry-run, --sql, tenants add --no-migrate: no run, so the last real run's metrics
    stay; a command that failed before its run is reported (exit 2 is what alerts need)."""
    path = tmp_path / "fleet.prom"
    telemetry = Telemetry.start(TelemetrySettings("fleet migrate", metrics_file=path,
                                                  environ={}))
    assert telemetry.close(0) == []
    assert not path.exists()
    telemetry = Telemetry.start(TelemetrySettings("fleet migrate", metrics_file=path,
                                                  environ={}))
    assert telemetry.close(2, "cannot connect") == []
    assert metrics_of(path)[("fleet_run_exit_code", ())] == 2


def test_a_pushgateway_that_does_not_answer_is_a_warning(tmp_path: Path) -> None:
    telemetry = Telemetry.start(TelemetrySettings(
        "fleet migrate", metrics_push="http://pusher:pw-secret@127.0.0.1:9", environ={}))
    run_events(telemetry)
    (warning,) = telemetry.close(0)
    assert warning.startswith("metrics not pushed to http://pusher:***@127.0.0.1:9: ")
    assert "pw-secret" not in warning
