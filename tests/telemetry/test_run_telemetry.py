"""Metrics, traces and JSON-lines progress of real runs, asserted on what arrived.

One run of the example platform exercises every signal at once: tenant ``default`` of
``auth`` has its ``users`` table locked by the test (its revision times out on the lock,
is retried once and fails), ``toshiba``'s advisory lock is held by the test for a second
(a lock wait), every other target migrates. The Pushgateway is Debian's, the OTLP receiver
decodes the exporter's protobuf (see ``conftest.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alembic_fleet.execution.locking import lock_key
from tests.conftest import DatabaseFactory, Dropper, Project, copy_example, script
from tests.telemetry.conftest import OtlpReceiver, Pushgateway, Span

pytestmark = pytest.mark.slow

SECRET = "s3cretpw"
FAILING = "a15f8c0e3d96"  # auth's last revision: ALTER TABLE users (ADD COLUMN ...)
AUTH_REVISIONS = 6
WORKFLOW_REVISIONS = 6
INGESTION_REVISIONS = 5


def with_password(url: str) -> str:
    """The test server's URL with a password in it (the server trusts the user anyway)."""
    with_secret, count = re.subn(r"://([^:@/]+)@", rf"://\1:{SECRET}@", url, count=1)
    assert count == 1, f"no user in {url}"
    return with_secret


def environment(project: Project, extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URI", "DATABASE_URL", "INGESTION_DATABASE_URL", "TENANTS",
                         "FLEET_CONFIG") and not k.startswith(("OTEL_", "FLEET_METRICS"))}
    base["PATH"] = os.pathsep.join([str(Path(script("fleet")).parent), base.get("PATH", "")])
    return {**base, **project.env, **extra}


def fleet(project: Project, *args: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("fleet"), *args], cwd=project.root,
                          env=environment(project, env or {}), capture_output=True, text=True,
                          timeout=300)


class Held:
    """Locks the test holds while fleet runs: a table lock (never released during the run)
    and a target's advisory lock, released a second after fleet finished the target
    before it (fleet then waits for it: a lock wait of about a second)."""

    def __init__(self, url: str) -> None:
        self.table = psycopg.connect(url)
        self.table.execute("LOCK TABLE auth_default.users IN ACCESS EXCLUSIVE MODE")
        self.advisory = psycopg.connect(url, autocommit=True)
        self.advisory.execute("SELECT pg_advisory_lock(%s)", (lock_key("auth", "auth_toshiba"),))
        self.released_at: float | None = None

    def release_advisory(self) -> None:
        self.advisory.execute("SELECT pg_advisory_unlock(%s)",
                              (lock_key("auth", "auth_toshiba"),))
        self.released_at = time.monotonic()

    def close(self) -> None:
        self.table.rollback()
        self.table.close()
        self.advisory.close()


def run_with_locks(project: Project, held: Held, args: list[str], env: dict[str, str]
                   ) -> tuple[int, str, list[dict[str, Any]]]:
    """Run fleet, following its JSON lines on stderr; release the advisory lock one second
    after auth_default's first attempt ended (it hits its lock timeout and comes back after
    the others; with --jobs 1 auth_toshiba's lock is tried right after)."""
    process = subprocess.Popen([script("fleet"), *args], cwd=project.root,
                               env=environment(project, env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, Any]] = []
    timer: list[threading.Timer] = []

    def follow() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            lines.append(event)
            if (event.get("event") in ("target_deferred", "target_finished")
                    and event["schema"] == "auth_default" and not timer):
                timer.append(threading.Timer(1.0, held.release_advisory))
                timer[0].start()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()  # stderr is the reader's alone
        process.wait(300)
    finally:
        reader.join(10)
        for t in timer:
            t.join(5)
    return process.returncode, stdout, lines


@pytest.fixture(scope="module")
def locked_run(server_url: str, dropper: Dropper, pushgateway: Pushgateway,
               otlp_receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, Any]]:
    """The run, once per module (the tests below each look at one side of it)."""
    tmp_path = tmp_path_factory.mktemp("locked-run")
    databases = DatabaseFactory(server_url, [])
    try:
        yield _locked_run(databases, pushgateway, otlp_receiver, tmp_path)
    finally:
        dropper.drop(databases.created)


def _locked_run(databases: DatabaseFactory, pushgateway: Pushgateway,
                otlp_receiver: OtlpReceiver, tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "elevaite"
    copy_example(root)
    db_url, ingestion = databases.create(), databases.create("fleet_ing")
    example = Project(root, {"DATABASE_URI": with_password(db_url),
                             "INGESTION_DATABASE_URL": with_password(ingestion)},
                      db_url, ingestion)
    # auth one revision short of head everywhere: its last revision alters a table.
    first = fleet(example, "migrate", "auth", "--to", "a14d2f6b8c35")
    assert first.returncode == 0, first.stderr
    held = Held(example.db_url)
    metrics_file = tmp_path / "fleet.prom"
    try:
        code, stdout, lines = run_with_locks(
            example, held,
            ["migrate", "--jobs", "1", "--lock-timeout", "0.3", "--retries", "1",
             "--lock-wait", "60", "--json", "--progress", "json",
             "--metrics-file", str(metrics_file)],
            {"FLEET_METRICS_PUSH": pushgateway.url,
             "FLEET_METRICS_GROUPING": "namespace=test,release=r1",
             "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
             "OTEL_SERVICE_NAME": "platform-migrations",
             "OTEL_BSP_SCHEDULE_DELAY": "100"})
    finally:
        held.close()
    return {"code": code, "report": json.loads(stdout), "lines": lines,
            "metrics_file": metrics_file, "pushgateway": pushgateway,
            "receiver": otlp_receiver,
            "database": psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]}


# --- what the run did ------------------------------------------------------------------------


def test_the_run_failed_one_target_after_a_retry(locked_run: dict[str, Any]) -> None:
    assert locked_run["code"] == 1
    report = locked_run["report"]
    by_schema = {t["schema"]: t for t in report["targets"]}
    assert by_schema["auth_default"]["outcome"] == "failed"
    assert "55P03" in by_schema["auth_default"]["error"]
    assert by_schema["auth_default"]["attempts"] == 2
    assert report["summary"]["migrated"] == 6


# --- Prometheus, through a real Pushgateway --------------------------------------------------


def test_metrics_arrive_at_the_pushgateway(locked_run: dict[str, Any]) -> None:
    gateway: Pushgateway = locked_run["pushgateway"]
    group = {"job": "alembic-fleet", "namespace": "test", "release": "r1"}
    assert [{k: v for k, v in g.items() if v} for g in gateway.groups()] == [group]

    def value(name: str, **labels: str) -> float:
        return gateway.value(name, **group, **labels)

    # Targets by outcome, per service.
    assert value("fleet_run_targets", service="auth", outcome="failed") == 1
    assert value("fleet_run_targets", service="auth", outcome="migrated") == 2
    assert value("fleet_run_targets", service="workflow", outcome="migrated") == 3
    assert value("fleet_run_targets", service="ingestion", outcome="migrated") == 1
    assert value("fleet_run_targets_to_migrate") == 7
    # The run.
    assert value("fleet_run_exit_code") == 1
    assert value("fleet_run_success") == 0
    assert value("fleet_run_stopped_by_budget") == 0
    assert value("fleet_run_duration_seconds") > 1.0
    assert value("fleet_run_finished_timestamp_seconds") > time.time() - 3600
    # The duration histogram: every target that ran, by outcome.
    assert value("fleet_target_duration_seconds_count", service="auth", outcome="failed") == 1
    assert value("fleet_target_duration_seconds_count", service="workflow",
                 outcome="migrated") == 3
    assert value("fleet_target_duration_seconds_bucket", service="workflow",
                 outcome="migrated", le="+Inf") == 3
    # Per-revision durations: each revision once per tenant that applied it.
    assert value("fleet_revision_duration_seconds_count", service="auth",
                 revision=FAILING) == 2
    revisions = gateway.samples("fleet_revision_duration_seconds_count", **group,
                                service="workflow")
    assert len(revisions) == WORKFLOW_REVISIONS
    assert {v for _, v in revisions} == {3}
    assert len(gateway.samples("fleet_revision_duration_seconds_count", **group,
                               service="ingestion")) == INGESTION_REVISIONS
    # The retry, by reason, and the lock wait (the test held toshiba's lock for a second
    # after fleet had started waiting for it).
    assert value("fleet_run_retries", service="auth", reason="lock timeout") == 1
    assert value("fleet_lock_wait_seconds_count", service="auth") == 3
    assert value("fleet_lock_wait_seconds_sum", service="auth") >= 0.5
    assert value("fleet_lock_wait_seconds_sum", service="workflow") < 0.5


def test_metrics_have_no_tenant_label_and_no_password(locked_run: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = locked_run["pushgateway"].metrics_text()
    assert SECRET not in text
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("fleet_"):
            for sample in family.samples:
                names |= set(sample.labels)
    assert names <= {"job", "instance", "namespace", "release", "service", "outcome",
                     "revision", "reason", "le", "command", "version"}, names
    for tenant in ("default", "toshiba", "iopex"):
        assert f'"{tenant}"' not in text and f"_{tenant}" not in text


def test_the_metrics_file_holds_the_same_run(locked_run: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = locked_run["metrics_file"].read_text()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("fleet_run_exit_code", ())] == 1
    assert values[("fleet_run_targets", (("outcome", "migrated"), ("service", "workflow")))] == 3
    assert not any(name.endswith("_created") for name, _ in values)
    assert SECRET not in text


# --- OpenTelemetry, through an OTLP/HTTP receiver --------------------------------------------


def spans_of(locked_run: dict[str, Any]) -> list[Span]:
    receiver: OtlpReceiver = locked_run["receiver"]
    assert set(receiver.paths) == {"/v1/traces"}
    return receiver.spans()


def test_a_span_per_run_target_and_revision(locked_run: dict[str, Any]) -> None:
    spans = spans_of(locked_run)
    (run,) = [s for s in spans if s.name == "fleet migrate"]
    assert run.parent_id == ""
    assert run.resource["service.name"] == "platform-migrations"
    assert run.attributes["fleet.exit_code"] == 1
    assert run.attributes["fleet.targets"] == 7
    assert run.attributes["fleet.targets.failed"] == 1
    assert run.attributes["fleet.targets.migrated"] == 6
    assert run.status_code == 2  # ERROR
    assert {s.trace_id for s in spans} == {run.trace_id}

    deferred = [s for s in spans if s.name.startswith("migrate ")
                and s.attributes.get("fleet.outcome") == "deferred"]
    assert [s.attributes["fleet.schema"] for s in deferred] == ["auth_default"]
    targets = {s.attributes["fleet.schema"]: s for s in spans if s.name.startswith("migrate ")
               and s not in deferred}
    assert sorted(targets) == sorted(["auth_default", "auth_toshiba", "auth_iopex",
                                      "workflow_default", "workflow_toshiba",
                                      "workflow_iopex", "public"])
    for span in targets.values():
        assert span.parent_id == run.span_id
        assert run.start <= span.start <= span.end <= run.end
    failed = targets["auth_default"]
    assert failed.name == "migrate auth"
    assert failed.attributes["fleet.tenant"] == "default"
    assert failed.attributes["fleet.outcome"] == "failed"
    assert failed.attributes["fleet.attempts"] == 2
    assert failed.attributes["fleet.retry_reasons"] == ["lock timeout"]
    assert failed.status_code == 2 and "55P03" in failed.status_message
    waited = targets["auth_toshiba"]
    assert waited.attributes["fleet.lock_wait_seconds"] >= 0.5
    assert waited.attributes["fleet.outcome"] == "migrated"
    assert waited.attributes["fleet.from"] == "a14d2f6b8c35"
    assert waited.attributes["fleet.to"] == FAILING
    assert waited.attributes["db.system"] == "postgresql"
    assert waited.attributes["db.namespace"] == locked_run["database"]
    assert waited.attributes["server.address"]

    revisions = [s for s in spans if s.name.startswith("revision ")]
    by_parent: dict[str, list[Span]] = {}
    for span in revisions:
        by_parent.setdefault(span.parent_id, []).append(span)
    assert [s.name for s in by_parent[waited.span_id]] == [f"revision {FAILING}"]
    assert failed.span_id not in by_parent  # rolled back: no revision stands
    workflow = sorted(by_parent[targets["workflow_default"].span_id], key=lambda s: s.start)
    assert len(workflow) == WORKFLOW_REVISIONS
    tolerance = 50_000_000  # ns: the worker's and the parent's clock readings
    parent = targets["workflow_default"]
    for earlier, later in itertools.pairwise(workflow):
        assert earlier.end <= later.start + tolerance
    for span in workflow:
        assert parent.start - tolerance <= span.start <= span.end <= parent.end + tolerance
        assert span.attributes["fleet.revision"] == span.name.removeprefix("revision ")


def test_no_password_in_any_span(locked_run: dict[str, Any]) -> None:
    receiver: OtlpReceiver = locked_run["receiver"]
    assert SECRET.encode() not in receiver.raw()
    for span in spans_of(locked_run):
        for value in span.attributes.values():
            assert "postgresql://" not in str(value)


# --- --progress json -------------------------------------------------------------------------


def test_progress_json_lines(locked_run: dict[str, Any]) -> None:
    lines = locked_run["lines"]
    kinds = [line["event"] for line in lines]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    # auth_default hit its lock timeout, went to the back of the queue and started again.
    assert kinds.count("target_started") == 8 and kinds.count("target_finished") == 7
    assert [line["schema"] for line in lines if line["event"] == "target_deferred"] == [
        "auth_default"]
    assert lines[0]["targets"] == 7 and lines[0]["to_migrate"] == 7
    finished = {line["schema"]: line for line in lines if line["event"] == "target_finished"}
    assert finished["auth_default"]["outcome"] == "failed"
    assert finished["auth_default"]["retries"] == ["lock timeout"]
    assert finished["auth_toshiba"]["lock_wait_seconds"] >= 0.5
    assert [r["revision"] for r in finished["auth_toshiba"]["revisions"]] == [FAILING]
    assert len(finished["workflow_iopex"]["revisions"]) == WORKFLOW_REVISIONS
    last = lines[-1]
    assert last["exit_code"] == 1 and last["failed"] == 1 and last["migrated"] == 6
    assert last["stopped_by_budget"] is False
    assert all(SECRET not in json.dumps(line) for line in lines)
    assert all(isinstance(line["time"], float) for line in lines)
