"""Telemetry at the edges of a run: a failure before it, a dry run, receivers that are
down, ``tenants add``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.telemetry.conftest import OtlpReceiver, Pushgateway
from tests.telemetry.test_run_telemetry import fleet

pytestmark = pytest.mark.slow

UNREACHABLE = "postgresql://fleet:pw-unreachable@127.0.0.1:1/nodb"


def test_a_failure_before_the_run_is_pushed_a_dry_run_is_not(
        example: Project, pushgateway: Pushgateway, otlp_receiver: OtlpReceiver) -> None:
    failing = {"FLEET_METRICS_PUSH": pushgateway.url,
               "FLEET_METRICS_GROUPING": "release=unreachable",
               "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}
    result = fleet(example, "migrate", "--json", "--progress", "json",
                   env={**failing, "DATABASE_URI": UNREACHABLE,
                        "INGESTION_DATABASE_URL": UNREACHABLE})
    assert result.returncode == 2, result.stderr
    group = {"job": "alembic-fleet", "release": "unreachable"}
    assert pushgateway.value("fleet_run_exit_code", **group) == 2
    assert pushgateway.value("fleet_run_success", **group) == 0
    assert "pw-unreachable" not in pushgateway.metrics_text()
    (last,) = [json.loads(line) for line in result.stderr.splitlines()
               if line.startswith('{"event":"run_finished"')]
    assert last["exit_code"] == 2 and "fleet:***@127.0.0.1:1" in last["error"]
    assert "pw-unreachable" not in result.stderr + result.stdout
    (run,) = [s for s in otlp_receiver.spans() if s.name == "fleet migrate"]
    assert run.attributes["fleet.exit_code"] == 2 and run.status_code == 2
    assert "pw-unreachable" not in run.status_message
    assert b"pw-unreachable" not in otlp_receiver.raw()

    dry = fleet(example, "migrate", "--dry-run",
                env={**failing, "FLEET_METRICS_GROUPING": "release=dry"})
    assert dry.returncode == 0, dry.stderr
    assert not pushgateway.samples("fleet_run_exit_code", release="dry")
    assert len([s for s in otlp_receiver.spans() if s.name == "fleet migrate"]) == 1


def test_receivers_that_are_down_do_not_change_the_outcome(example: Project) -> None:
    result = fleet(example, "migrate", "--json", "--metrics-push", "http://127.0.0.1:9",
                   env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                        "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["migrated"] == 7
    assert re.search(r"^warning: metrics not pushed to http://127\.0\.0\.1:9: ",
                     result.stderr, re.MULTILINE)
    assert "warning: traces not sent" in result.stderr


def test_tenants_add_reports_its_migration(example: Project, tmp_path: Path,
                                           pushgateway: Pushgateway) -> None:
    assert fleet(example, "migrate").returncode == 0
    metrics = tmp_path / "tenants.prom"
    result = fleet(example, "tenants", "add", "acme", "--progress", "json",
                   "--metrics-file", str(metrics), "--metrics-push", pushgateway.url,
                   env={"FLEET_METRICS_GROUPING": "release=tenants"})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    finished = {line["schema"] for line in lines if line["event"] == "target_finished"
                and line["outcome"] == "migrated"}
    assert finished == {"auth_acme", "workflow_acme"}
    assert lines[-1]["event"] == "run_finished" and lines[-1]["exit_code"] == 0
    assert 'fleet_run_targets{outcome="migrated",service="auth"} 1.0' in metrics.read_text()
    assert pushgateway.value("fleet_run_info", release="tenants",
                             command="fleet tenants add", version="0.1.0") == 1
