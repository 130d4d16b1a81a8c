"""The Helm charts: deploy/helm/alembic-fleet and the example platform's umbrella chart.

Rendered with Helm's own engine (``helm-python-sdk`` bundles Helm's Go SDK: no ``helm``
binary, no cluster) and every rendered manifest validated against the Kubernetes OpenAPI
schemas of one Kubernetes version (``kubernetes-validate``, strict: unknown fields fail).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate"
)
yaml = pytest.importorskip("yaml", reason="pip install PyYAML")

from click.testing import CliRunner  # noqa: E402

from alembic_fleet.cli import cli as fleet_cli  # noqa: E402
from alembic_fleet.model.identifiers import TENANT_PATTERN  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "alembic-fleet"
UMBRELLA = REPO / "examples" / "elevaite" / "helm" / "elevaite"
EXAMPLE_CONFIG = REPO / "examples" / "elevaite" / "fleet.toml"

KUBE_VERSION = "1.30.0"
HELM_DEFAULT_TIMEOUT = 300  # seconds: `helm install/upgrade --timeout` defaults to 5m
RELEASE = "rel"
NAMESPACE = "platform"
DB = {"database": {"existingSecret": "platform-db"}}
HOOK_PHASES = "pre-install,pre-upgrade"
BUDGET_EXIT = 4  # `fleet migrate`: stopped early by a budget (FLEET_DEADLINE); a rerun resumes


def budget_exit_rule(action: str) -> dict[str, Any]:
    return {"action": action, "onExitCodes": {
        "containerName": "migrate", "operator": "In", "values": [BUDGET_EXIT]}}


BUDGET_EXIT_FAILS_JOB = budget_exit_rule("FailJob")


@pytest.fixture(scope="module", autouse=True)
def _helm_library_loads() -> None:
    try:
        helm.helm_sdk_version()
    except (OSError, helm.HelmError) as exc:  # the bundled libhelm_c does not load here
        pytest.skip(f"helm-python-sdk's native library does not load: {exc}")


# --- helpers -------------------------------------------------------------------------------


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge values dictionaries, later layers winning."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def render(chart: Path, values: dict[str, Any] | None = None, *,
           release: str = RELEASE, upgrade: bool = False) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt left out), each validated against the
    Kubernetes schemas."""
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=release, namespace=NAMESPACE,
                                 is_install=not upgrade, is_upgrade=upgrade)
    docs = [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    for doc in docs:
        validate(doc)
    return docs


def validate(doc: dict[str, Any]) -> None:
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name} is not valid Kubernetes {KUBE_VERSION}: {path}: {exc.message}")


def notes(chart: Path, values: dict[str, Any]) -> str:
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(job: dict[str, Any], name: str = "migrate") -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    every = pod["containers"] + pod.get("initContainers", [])
    return next(c for c in every if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: name -> value, or the valueFrom object."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def render_error(chart: Path, values: dict[str, Any]) -> str:
    with helm.Chart.load(chart) as loaded, pytest.raises(helm.HelmError) as caught:
        loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


def fleet_help(*args: str) -> str:
    result = CliRunner().invoke(fleet_cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


# --- the library chart -----------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["type"] == "application"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"


def test_defaults_demand_a_database_secret() -> None:
    """Without a URL fleet would look for its embedded PostgreSQL: refuse to render."""
    message = render_error(CHART, {})
    assert "database.existingSecret" in message
    assert "database.uri" in message


def test_default_job() -> None:
    docs = render(CHART, DB)
    assert kinds(docs) == ["Job"]  # no Secret (existing one), no ServiceAccount
    job = only(docs, "Job")
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == "rel-alembic-fleet"
    assert meta["namespace"] == NAMESPACE
    assert meta["annotations"] == {
        "helm.sh/hook": HOOK_PHASES,
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    assert meta["labels"] == {
        "app.kubernetes.io/name": "alembic-fleet",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/component": "migrations",
        "app.kubernetes.io/part-of": RELEASE,
        "helm.sh/chart": "alembic-fleet-0.1.0",
    }
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] == 240
    assert spec["podFailurePolicy"] == {"rules": [BUDGET_EXIT_FAILS_JOB]}
    for absent in ("completionMode", "completions", "parallelism", "ttlSecondsAfterFinished"):
        assert absent not in spec

    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]

    wait, migrate = container(job, "wait-for-database"), container(job)
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-database"]
    assert [c["name"] for c in pod["containers"]] == ["migrate"]
    assert wait["command"] == migrate["command"] == ["fleet"]
    assert wait["args"] == ["wait", "--timeout", "60"]
    assert migrate["args"] == [
        "migrate", "--jobs", "2", "--lock-timeout", "5", "--retries", "3", "--json",
    ]
    database = {
        "DATABASE_URI": {"secretKeyRef": {"name": "platform-db", "key": "DATABASE_URI"}}}
    # No TENANTS: the tenants of fleet's configured source. The deadline: 240 s of the
    # Job's, less the wait (60) and the margin (30), for `fleet migrate` only.
    assert env(wait) == database
    assert env(migrate) == {**database, "FLEET_DEADLINE": "150"}
    for c in (wait, migrate):
        assert c["image"] == "alembic-fleet:0.1.0"
        assert c["imagePullPolicy"] == "IfNotPresent"
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        }
        assert c["resources"] == {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_upgrade_renders_the_same_hook_job() -> None:
    install, upgrade = render(CHART, DB), render(CHART, DB, upgrade=True)
    assert install == upgrade


@pytest.mark.parametrize("parallelism", [None, 2])
def test_sharded_job_is_indexed(parallelism: int | None) -> None:
    values = merge(DB, {"migrations": {"shards": 3, "parallelism": parallelism}})
    job = only(render(CHART, values), "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 3
    assert spec["parallelism"] == (parallelism or 3)
    assert "backoffLimitPerIndex" not in spec

    args = container(job)["args"]
    assert " --shard auto " in " " + " ".join(args) + " "
    assert args.index("--shard") + 1 == args.index("auto")
    assert env(container(job))["JOB_COMPLETION_COUNT"] == "3"
    # Only `fleet migrate` shards; `fleet wait` checks every database.
    assert "--shard" not in container(job, "wait-for-database")["args"]
    assert "JOB_COMPLETION_COUNT" not in env(container(job, "wait-for-database"))


def test_sharded_job_backoff_per_index() -> None:
    values = merge(DB, {"migrations": {"shards": 4}, "job": {"backoffLimitPerIndex": 1}})
    spec = only(render(CHART, values), "Job")["spec"]
    assert spec["backoffLimitPerIndex"] == 1
    # ...and only an Indexed Job may carry it.
    values = merge(DB, {"job": {"backoffLimitPerIndex": 1}})
    assert "backoffLimitPerIndex" not in only(render(CHART, values), "Job")["spec"]


def test_one_shard_is_a_plain_job() -> None:
    job = only(render(CHART, merge(DB, {"migrations": {"shards": 1}})), "Job")
    assert "completionMode" not in job["spec"]
    assert "--shard" not in container(job)["args"]
    assert "JOB_COMPLETION_COUNT" not in env(container(job))


def test_tenants_services_and_knobs() -> None:
    values = merge(DB, {
        "image": {"repository": "registry.example.com/fleet", "tag": "1.2.3",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "database": {"secretKey": "PG_URL", "extraEnvFromSecret": [
            {"name": "INGESTION_DATABASE_URL", "secretName": "ingestion-db",
             "secretKey": "url", "optional": True},
        ]},
        "extraEnv": [{"name": "FLEET_REPLAY", "value": "0"}],
        "migrations": {
            "tenantSource": "list", "tenants": ["default", "toshiba", "iopex"],
            "services": ["auth", "workflow"],
            "jobs": 8, "lockTimeout": 2.5, "retries": 0, "lockWait": 30,
            "statementTimeout": 0, "waitTimeout": 120, "configPath": "/app/fleet.toml",
            "extraArgs": ["--fail-fast"],
        },
        "job": {"backoffLimit": 0, "activeDeadlineSeconds": 1500,
                "ttlSecondsAfterFinished": 3600, "annotations": {"team": "platform"},
                "labels": {"tier": "db"}, "podAnnotations": {"sidecar.istio.io/inject": "false"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "jobs",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "pool", "operator": "In", "values": ["batch"]}]}]}}},
    })
    job = only(render(CHART, values), "Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 1500
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert job["metadata"]["annotations"]["team"] == "platform"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == HOOK_PHASES
    assert job["metadata"]["labels"]["tier"] == "db"
    assert spec["template"]["metadata"]["labels"]["tier"] == "db"
    assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]

    migrate = container(job)
    assert migrate["image"] == "registry.example.com/fleet:1.2.3"
    assert migrate["imagePullPolicy"] == "Always"
    assert migrate["args"] == [
        "migrate", "auth", "workflow", "--jobs", "8", "--lock-timeout", "2.5",
        "--retries", "0", "--lock-wait", "30", "--statement-timeout", "0",
        "--fail-fast", "--json",
    ]
    assert container(job, "wait-for-database")["args"] == ["wait", "--timeout", "120"]
    both = {
        "PG_URL": {"secretKeyRef": {"name": "platform-db", "key": "PG_URL"}},
        "INGESTION_DATABASE_URL": {"secretKeyRef": {
            "name": "ingestion-db", "key": "url", "optional": True}},
        "TENANTS": "default toshiba iopex",
        "FLEET_CONFIG": "/app/fleet.toml",
        "FLEET_REPLAY": "0",
    }
    assert env(container(job, "wait-for-database")) == both
    assert env(migrate) == {**both, "FLEET_DEADLINE": str(1500 - 120 - 30)}


def test_created_secret_is_an_earlier_hook() -> None:
    uri = "postgresql://fleet:s3cret@postgres:5432/platform"
    docs = render(CHART, {"database": {"uri": uri}})
    assert kinds(docs) == ["Job", "Secret"]
    secret, job = only(docs, "Secret"), only(docs, "Job")
    assert secret["metadata"]["name"] == "rel-alembic-fleet-database"
    assert secret["metadata"]["annotations"] == {
        "helm.sh/hook": HOOK_PHASES,
        "helm.sh/hook-weight": "-10",
        "helm.sh/hook-delete-policy": "before-hook-creation",
    }
    # Helm runs hooks of a phase in ascending weight: the Secret exists before the Job.
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert secret["stringData"] == {"DATABASE_URI": uri}
    assert env(container(job))["DATABASE_URI"] == {
        "secretKeyRef": {"name": "rel-alembic-fleet-database", "key": "DATABASE_URI"}}


def test_existing_secret_is_referenced_not_created() -> None:
    docs = render(CHART, {"database": {"existingSecret": "shared-db", "secretKey": "url"}})
    assert kinds(docs) == ["Job"]
    job = only(docs, "Job")
    for name in ("migrate", "wait-for-database"):
        assert env(container(job, name))["url"] == {
            "secretKeyRef": {"name": "shared-db", "key": "url"}}


def test_existing_secret_and_uri_together_are_refused() -> None:
    message = render_error(CHART, {"database": {"existingSecret": "x",
                                                 "uri": "postgresql://h/db"}})
    assert "only one of" in message


def test_created_service_account_is_an_earlier_hook() -> None:
    values = merge(DB, {"serviceAccount": {
        "create": True, "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}}})
    docs = render(CHART, values)
    assert kinds(docs) == ["Job", "ServiceAccount"]
    account, job = only(docs, "ServiceAccount"), only(docs, "Job")
    assert account["metadata"]["name"] == "rel-alembic-fleet"
    assert account["metadata"]["annotations"]["helm.sh/hook"] == HOOK_PHASES
    assert account["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert account["automountServiceAccountToken"] is False
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "rel-alembic-fleet"


def test_existing_service_account_is_used() -> None:
    docs = render(CHART, merge(DB, {"serviceAccount": {"name": "migrator"}}))
    assert kinds(docs) == ["Job"]
    assert only(docs, "Job")["spec"]["template"]["spec"]["serviceAccountName"] == "migrator"


def test_long_release_names_keep_names_valid() -> None:
    release = "a-very-long-release-name-for-a-platform-that-likes-long-names"[:53]
    job = only(render(CHART, DB, release=release), "Job")
    assert len(job["metadata"]["name"]) <= 52
    assert not job["metadata"]["name"].endswith("-")


def test_notes_name_the_job() -> None:
    text = notes(CHART, DB)
    assert "rel-alembic-fleet" in text
    assert "kubectl -n platform logs job/rel-alembic-fleet -c migrate" in text


# --- one tenant list ---------------------------------------------------------------------------


def test_tenants_default_to_the_configured_source() -> None:
    """By default the Job migrates the tenants of fleet's configured source (fleet.toml's
    list or file, or its registry query): no TENANTS to override it in either container."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["migrations"]["tenantSource"] == "config"
    assert defaults["migrations"]["tenants"] == []
    job = only(render(CHART, DB), "Job")
    for name in ("migrate", "wait-for-database"):
        assert "TENANTS" not in env(container(job, name))
    assert "Tenants: those of the tenant source" in notes(CHART, DB)


def test_tenant_list_is_an_opt_in() -> None:
    values = merge(DB, {"migrations": {"tenantSource": "list", "tenants": ["toshiba"]}})
    job = only(render(CHART, values), "Job")
    for name in ("migrate", "wait-for-database"):
        assert env(container(job, name))["TENANTS"] == "toshiba"
    assert "Tenants: only toshiba (migrations.tenantSource: list)" in notes(CHART, values)


def test_a_list_without_opting_in_is_refused_not_ignored() -> None:
    """A values file written for the earlier chart (a bare list) must not silently start
    migrating every configured tenant, nor keep a second list silently."""
    message = render_error(CHART, merge(DB, {"migrations": {"tenants": ["default"]}}))
    assert "migrations.tenants is set but migrations.tenantSource is \"config\"" in message
    assert "tenantSource \"list\"" in message


def test_opting_in_without_a_list_is_refused() -> None:
    message = render_error(CHART, merge(DB, {"migrations": {"tenantSource": "list"}}))
    assert "migrations.tenants is empty" in message


# --- the deadline ----------------------------------------------------------------------------


def deadline_of(job: dict[str, Any]) -> str | None:
    assert "FLEET_DEADLINE" not in env(container(job, "wait-for-database"))
    return env(container(job)).get("FLEET_DEADLINE")


def budget_rules(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["spec"]["podFailurePolicy"]["rules"]


@pytest.mark.parametrize(("job_deadline", "wait", "margin", "expected"), [
    (240, 60, None, 150),     # the defaults: 240 - 60 - 30
    (1700, 60, None, 1610),
    (1700, 2.5, 0, 1697),     # a fractional wait counts as the next whole second
    (600, 0, 100, 500),
])
def test_deadline_follows_the_jobs(job_deadline: int, wait: float, margin: int | None,
                                   expected: int) -> None:
    values = merge(DB, {"job": {"activeDeadlineSeconds": job_deadline},
                        "migrations": {"waitTimeout": wait}})
    if margin is not None:
        values["migrations"]["deadlineMargin"] = margin
    job = only(render(CHART, values), "Job")
    assert job["spec"]["activeDeadlineSeconds"] == job_deadline
    assert deadline_of(job) == str(expected)
    # fleet's deadline ends before the Job's, with the wait and the margin to spare.
    assert expected + wait + (30 if margin is None else margin) <= job_deadline
    # No time is left for another pod of this Job: exit 4 fails it at once.
    assert budget_rules(job) == [BUDGET_EXIT_FAILS_JOB]


@pytest.mark.parametrize(("shards", "parallelism", "expected"), [
    (4, None, 900 - 90),          # every shard at once: one round
    (4, 4, 900 - 90),
    (4, 2, 900 // 2 - 90),        # two rounds of pods share the Job's deadline
    (5, 2, 900 // 3 - 90),
])
def test_deadline_of_a_sharded_job(shards: int, parallelism: int | None, expected: int) -> None:
    values = merge(DB, {"job": {"activeDeadlineSeconds": 900},
                        "migrations": {"shards": shards, "parallelism": parallelism}})
    job = only(render(CHART, values), "Job")
    assert deadline_of(job) == str(expected)
    assert budget_rules(job) == [BUDGET_EXIT_FAILS_JOB]


def test_sharded_budget_exit_fails_only_its_index() -> None:
    values = merge(DB, {"migrations": {"shards": 3}, "job": {"backoffLimitPerIndex": 1}})
    assert budget_rules(only(render(CHART, values), "Job")) == [budget_exit_rule("FailIndex")]


def test_explicit_deadline_per_pod_retries_and_resumes() -> None:
    """A deadline well inside the Job's leaves room for more pods: exit 4 starts a new pod
    (not counted in backoffLimit), which resumes where the last one stopped."""
    values = merge(DB, {"job": {"activeDeadlineSeconds": 3600}, "migrations": {"deadline": 600}})
    job = only(render(CHART, values), "Job")
    assert deadline_of(job) == "600"
    assert budget_rules(job) == [budget_exit_rule("Ignore")]
    assert job["spec"]["backoffLimit"] == 3


def test_no_deadline() -> None:
    job = only(render(CHART, merge(DB, {"migrations": {"deadline": None}})), "Job")
    assert deadline_of(job) is None
    assert job["spec"]["activeDeadlineSeconds"] == 240
    job = only(render(CHART, merge(DB, {"job": {"activeDeadlineSeconds": None}})), "Job")
    assert deadline_of(job) is None
    assert "activeDeadlineSeconds" not in job["spec"]


def test_a_deadline_that_leaves_no_time_is_refused() -> None:
    message = render_error(CHART, merge(DB, {"job": {"activeDeadlineSeconds": 90}}))
    assert "job.activeDeadlineSeconds (90) leaves `fleet migrate` no time" in message
    message = render_error(CHART, merge(DB, {"migrations": {"deadline": 240}}))
    assert "migrations.deadline (240) must stay below job.activeDeadlineSeconds (240)" in message


def test_deadline_notes() -> None:
    assert "starts no target after 150 s (FLEET_DEADLINE)" in notes(CHART, DB)


# --- telemetry -------------------------------------------------------------------------------


def test_no_telemetry_by_default() -> None:
    job = only(render(CHART, DB), "Job")
    for name in ("migrate", "wait-for-database"):
        assert not {k for k in env(container(job, name))
                    if k.startswith(("FLEET_METRICS", "OTEL_"))}


def test_telemetry_environment() -> None:
    values = merge(DB, {"telemetry": {"metricsPush": "http://pushgateway.monitoring:9091",
                                      "otlpEndpoint": "http://collector.monitoring:4318"}})
    job = only(render(CHART, values), "Job")
    migrate = env(container(job))
    assert migrate["FLEET_METRICS_PUSH"] == "http://pushgateway.monitoring:9091"
    # Releases and namespaces sharing a Pushgateway do not overwrite each other's group.
    assert migrate["FLEET_METRICS_GROUPING"] == f"namespace={NAMESPACE},release={RELEASE}"
    assert migrate["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.monitoring:4318"
    assert migrate["OTEL_SERVICE_NAME"] == "rel-alembic-fleet"
    assert not {k for k in env(container(job, "wait-for-database"))
                if k.startswith(("FLEET_METRICS", "OTEL_"))}
    values["telemetry"]["serviceName"] = "platform-migrations"
    job = only(render(CHART, values), "Job")
    assert env(container(job))["OTEL_SERVICE_NAME"] == "platform-migrations"


# --- values.schema.json ----------------------------------------------------------------------


def test_schema_tenant_pattern_is_fleets() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    items = schema["properties"]["migrations"]["properties"]["tenants"]["items"]
    assert items["pattern"] == f"^{TENANT_PATTERN.pattern}$"


@pytest.mark.parametrize(("values", "complaint"), [
    ({"migrations": {"shards": 0}}, "/migrations/shards"),
    ({"migrations": {"shards": 1.5}}, "/migrations/shards"),
    ({"migrations": {"tenants": ["Toshiba"]}}, "/migrations/tenants/0"),
    ({"migrations": {"tenantSource": "registry"}}, "/migrations/tenantSource"),
    ({"migrations": {"deadline": "soon"}}, "/migrations/deadline"),
    ({"migrations": {"deadline": 0}}, "/migrations/deadline"),
    ({"migrations": {"deadlineMargin": -1}}, "/migrations/deadlineMargin"),
    ({"telemetry": {"metricsPush": "pushgateway:9091"}}, "/telemetry/metricsPush"),
    ({"telemetry": {"otlp": "http://c:4318"}}, "otlp"),
    ({"migrations": {"tenants": ["ok", "1st"]}}, "/migrations/tenants/1"),
    ({"migrations": {"tenants": ["a-b"]}}, "/migrations/tenants/0"),
    ({"migrations": {"tenants": ["x; rm -rf /"]}}, "/migrations/tenants/0"),
    ({"migrations": {"tenants": ["a", "a"]}}, "/migrations/tenants"),
    ({"migrations": {"services": ["--sql"]}}, "/migrations/services/0"),
    ({"migrations": {"jobs": 0}}, "/migrations/jobs"),
    ({"migrations": {"parallelism": 0}}, "/migrations/parallelism"),
    ({"migrations": {"tenant": ["a"]}}, "tenant"),  # a typo is an error
    ({"job": {"activeDeadlineSeconds": 0}}, "/job/activeDeadlineSeconds"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"database": {"uri": "mysql://h/db", "existingSecret": ""}}, "/database/uri"),
])
def test_schema_rejects(values: dict[str, Any], complaint: str) -> None:
    message = render_error(CHART, merge(DB, values))
    assert "schema" in message
    assert complaint in message


@pytest.mark.parametrize("tenants", [["default", "toshiba", "iopex"], ["acme_eu", "t1", "x"]])
def test_schema_accepts_fleet_tenant_names(tenants: list[str]) -> None:
    for tenant in tenants:
        assert TENANT_PATTERN.fullmatch(tenant)
    values = merge(DB, {"migrations": {"tenantSource": "list", "tenants": tenants}})
    job = only(render(CHART, values), "Job")
    assert env(container(job))["TENANTS"] == " ".join(tenants)


# --- lint ------------------------------------------------------------------------------------


def lint_problems(report: dict[str, Any]) -> list[Any]:
    """Errors and warnings (severity 2 and up); info such as "icon is recommended" is not."""
    return report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]


def test_lint_chart() -> None:
    for values in (DB, merge(DB, {"migrations": {"shards": 3, "tenantSource": "list",
                                                 "tenants": ["a", "b"]}}),
                   {"database": {"uri": "postgresql://h/db"}, "serviceAccount": {"create": True}}):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}")
        assert report["total_charts_linted"] == 1
        assert lint_problems(report) == []


# --- the example platform's umbrella chart ----------------------------------------------------


@pytest.fixture(scope="module")
def umbrella(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The umbrella chart with its dependency resolved, as `helm dependency update` does it:
    in a copy of both charts at the same relative places (the repository stays clean)."""
    root = tmp_path_factory.mktemp("charts")
    shutil.copytree(CHART, root / CHART.relative_to(REPO))
    chart = root / UMBRELLA.relative_to(REPO)
    shutil.copytree(UMBRELLA, chart, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    assert [d["status"] for d in helm.dependency_list(chart)] == ["missing"]
    helm.dependency_update(chart)
    assert [(d["name"], d["status"]) for d in helm.dependency_list(chart)] == [
        ("alembic-fleet", "ok")]
    return chart


def test_umbrella_depends_on_the_chart() -> None:
    meta = yaml.safe_load((UMBRELLA / "Chart.yaml").read_text())
    (dep,) = meta["dependencies"]
    assert dep["name"] == "alembic-fleet"
    assert dep["version"] == yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert dep["alias"] == "fleet"
    assert (UMBRELLA / dep["repository"].removeprefix("file://")).resolve() == CHART
    # charts/ is made by `helm dependency update`, never committed.
    assert "charts/" in (UMBRELLA / ".gitignore").read_text().split()


def test_umbrella_tenants_are_the_platforms() -> None:
    """One tenant list: fleet.toml's, which `fleet tenants add` records to. The platform's
    values name none (a second list would leave an added tenant unmigrated)."""
    values = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    assert values["fleet"]["migrations"]["tenantSource"] == "config"
    assert "tenants" not in values["fleet"]["migrations"]
    config = tomllib.loads(EXAMPLE_CONFIG.read_text())
    assert config["tenants"] == ["default", "toshiba", "iopex"]


def test_umbrella_renders(umbrella: Path) -> None:
    docs = render(umbrella, release="elevaite")
    assert kinds(docs) == ["Deployment", "Job"]
    job = only(docs, "Job")
    assert job["metadata"]["name"] == "elevaite-fleet"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == HOOK_PHASES
    assert "completionMode" not in job["spec"]
    migrate = container(job)
    assert migrate["image"] == "registry.example.com/elevaite/migrations:0.1.0"
    assert migrate["args"] == [
        "migrate", "--jobs", "2", "--lock-timeout", "5", "--retries", "3", "--json"]
    assert env(migrate) == {
        "DATABASE_URI": {"secretKeyRef": {"name": "elevaite-database", "key": "DATABASE_URI"}},
        "INGESTION_DATABASE_URL": {"secretKeyRef": {
            "name": "elevaite-ingestion-database", "key": "DATABASE_URI", "optional": True}},
        "FLEET_DEADLINE": "150",
    }
    assert "TENANTS" not in env(container(job, "wait-for-database"))
    # The platform's own workload is an ordinary resource: Helm applies it after the hooks.
    deployment = only(docs, "Deployment")
    assert "helm.sh/hook" not in deployment["metadata"].get("annotations", {})


def test_umbrella_sharded(umbrella: Path) -> None:
    job = only(render(umbrella, {"fleet": {"migrations": {"shards": 3}}},
                      release="elevaite"), "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 3
    assert env(container(job))["JOB_COMPLETION_COUNT"] == "3"
    assert "TENANTS" not in env(container(job))


def test_umbrella_checks_the_dependency_schema(umbrella: Path) -> None:
    message = render_error(umbrella, {"fleet": {"migrations": {"tenants": ["Default"]}}})
    assert "/migrations/tenants/0" in message
    message = render_error(umbrella, {"fleet": {"migrations": {"shards": 0}}})
    assert "/migrations/shards" in message


def test_lint_umbrella(umbrella: Path) -> None:
    report = helm.lint(umbrella, strict=True, namespace="elevaite", with_subcharts=True,
                       kube_version=f"v{KUBE_VERSION}")
    assert lint_problems(report) == []


# --- the chart, its docs and the fleet CLI agree ---------------------------------------------


def test_deadline_stays_below_helm_timeout() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["job"]["activeDeadlineSeconds"] < HELM_DEFAULT_TIMEOUT
    umbrella = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    assert umbrella["fleet"]["job"]["activeDeadlineSeconds"] < HELM_DEFAULT_TIMEOUT
    phrase = "must stay below Helm's --timeout (default 5m = 300 s) so that the Job fails"
    readme = " ".join((CHART / "README.md").read_text().split())
    assert phrase in readme
    values_text = " ".join(
        line.lstrip("# ") for line in (CHART / "values.yaml").read_text().splitlines())
    assert " ".join(phrase.split()) in " ".join(values_text.split())


def test_chart_flags_exist_in_fleet() -> None:
    job = only(render(CHART, merge(DB, {"migrations": {"lockWait": 1, "statementTimeout": 1}})),
               "Job")
    migrate_help, wait_help = fleet_help("migrate"), fleet_help("wait")
    for flag in (a for a in container(job)["args"] if a.startswith("--")):
        assert flag in migrate_help, f"fleet migrate has no {flag}"
    for flag in (a for a in container(job, "wait-for-database")["args"] if a.startswith("--")):
        assert flag in wait_help, f"fleet wait has no {flag}"


def test_shard_flag_exists_in_fleet() -> None:
    assert "--shard" in fleet_help("migrate")


def test_chart_telemetry_variables_are_fleets() -> None:
    """The variables the chart sets are the ones fleet reads."""
    from alembic_fleet.telemetry.session import GROUPING_ENV

    values = merge(DB, {"telemetry": {"metricsPush": "http://pg:9091"}})
    names = set(env(container(only(render(CHART, values), "Job"))))
    assert {"FLEET_METRICS_PUSH", GROUPING_ENV} <= names
    help_text = " ".join(fleet_help("migrate").split())
    assert "FLEET_METRICS_PUSH" in help_text and GROUPING_ENV in help_text
