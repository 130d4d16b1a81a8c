"""The pure schedule: tenant priority, depends_on order, blocked dependents; and the config
keys that feed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.model.schedule import Schedule, dependencies, execution_order, service_order
from alembic_fleet.model.status import Step, TargetState, TargetStatus
from alembic_fleet.model.targets import Database, Service, Target

DB = Database(url="postgresql://u@h/db")


def svc(name: str, schema: str, depends_on: tuple[str, ...] = ()) -> Service:
    return Service(name, Path("/x") / name, schema, DB, depends_on=depends_on)


def step(service: str, tenant: str | None, upgrade: bool = True) -> Step:
    schema = f"{service}_{tenant}" if tenant else service
    target = Target(service, tenant, schema, DB)
    state = TargetState.MISSING if upgrade else TargetState.AT_HEAD
    return Step(TargetStatus(target, (), ("h",), 1 if upgrade else 0, state), upgrade)


SERVICES = [svc("billing", "billing_{tenant}", ("auth",)), svc("auth", "auth_{tenant}"),
            svc("ingest", "public")]


def test_service_order_puts_dependencies_first_and_is_stable() -> None:
    assert service_order(SERVICES) == ["auth", "billing", "ingest"]


def test_execution_order_single_schema_first_then_priority_tenants() -> None:
    steps = [step("billing", "a"), step("billing", "b"), step("auth", "a"), step("auth", "b"),
             step("ingest", None)]
    order = execution_order(steps, SERVICES, ["a", "b"], priority=["b"])
    labels = [steps[i].target.schema for i in order]
    assert labels == ["ingest", "auth_b", "billing_b", "auth_a", "billing_a"]


def test_dependencies_are_per_tenant_and_only_among_running_steps() -> None:
    steps = [step("billing", "a"), step("auth", "a"), step("billing", "b"),
             step("auth", "b", upgrade=False)]
    waits = dependencies(steps, SERVICES)
    assert waits == {0: {1}, 1: set(), 2: set()}


def test_schedule_blocks_dependents_of_a_failure() -> None:
    steps = [step("auth", "a"), step("billing", "a"), step("auth", "b"), step("billing", "b")]
    schedule = Schedule(execution_order(steps, SERVICES, ["a", "b"]), dependencies(steps, SERVICES))
    first = schedule.next_ready()
    assert first == 0
    # billing_a waits for auth_a, so the next ready step is auth_b.
    assert schedule.next_ready() == 2
    assert schedule.next_ready() is None
    assert schedule.finish(0, ok=False) == [1]
    assert schedule.finish(2, ok=True) == []
    assert schedule.next_ready() == 3
    assert schedule.next_ready() is None and schedule.exhausted


def _write(tmp_path: Path, body: str) -> Path:
    for name in ("a", "b"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "alembic.ini").write_text("[alembic]\nscript_location = m\n")
    path = tmp_path / "fleet.toml"
    path.write_text('database = "postgresql://u@h/db"\ntenants = ["x", "y"]\n' + body)
    return path


def test_config_reads_jobs_priority_and_depends_on(tmp_path: Path) -> None:
    path = _write(tmp_path, 'jobs = 3\npriority = ["y", "nope"]\n'
                  '[services.a]\npath = "a"\nschema = "a_{tenant}"\ndepends_on = ["b"]\n'
                  '[services.b]\npath = "b"\nschema = "b_{tenant}"\n')
    config = parse_config(path, {})
    assert config.jobs == 3
    assert config.priority == ("y",)
    assert config.services["a"].depends_on == ("b",)


@pytest.mark.parametrize(("body", "key"), [
    ('jobs = 0\n[services.a]\npath = "a"\n', "jobs"),
    ('jobs = "2"\n[services.a]\npath = "a"\n', "jobs"),
    ('priority = "x"\n[services.a]\npath = "a"\n', "priority"),
    ('[services.a]\npath = "a"\ndepends_on = ["zzz"]\n', "services.a.depends_on"),
    ('[services.a]\npath = "a"\ndepends_on = "b"\n', "services.a.depends_on"),
    ('[services.a]\npath = "a"\ndepends_on = ["b"]\n[services.b]\npath = "b"\n'
     'depends_on = ["a"]\n', "depends_on"),
])
def test_config_rejects_bad_scheduling_keys(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_write(tmp_path, body), {})
    assert key in str(info.value) and str(tmp_path / "fleet.toml") in str(info.value)
