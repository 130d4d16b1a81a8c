"""The pure schedule: tenant priority, depends_on order, blocked dependents; and the config
keys that feed it."""

from __future__ import annotations

import graphlib
import random
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.model import schedule as schedule_module
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


# --- The scheduler itself, on bare indices -----------------------------------------------


class OldSchedule:
    """The previous algorithm, kept as the oracle: a linear scan of the pending steps, and a
    fixed point over all pending steps after every failure (cubic, but obviously right)."""

    def __init__(self, order: list[int], waits: dict[int, set[int]]) -> None:
        self.waits = waits
        self._pending = deque(i for i in order if i in waits)
        self._ok: set[int] = set()
        self._failed: set[int] = set()

    @property
    def exhausted(self) -> bool:
        return not self._pending

    def next_ready(self) -> int | None:
        for position, index in enumerate(self._pending):
            if self.waits[index] <= self._ok:
                del self._pending[position]
                return index
        return None

    def finish(self, index: int, ok: bool) -> list[int]:
        (self._ok if ok else self._failed).add(index)
        if ok:
            return []
        blocked: list[int] = []
        changed = True
        while changed:
            changed = False
            for pending in list(self._pending):
                if self.waits[pending] & (self._failed | set(blocked)):
                    self._pending.remove(pending)
                    blocked.append(pending)
                    changed = True
        return blocked


def run_all(schedule: Schedule | OldSchedule, fails: Callable[[int], bool]) -> list[tuple]:
    """Serial run: take the next ready step, finish it; the trace of what happened."""
    trace: list[tuple] = []
    while (index := schedule.next_ready()) is not None:
        trace.append((index, schedule.finish(index, not fails(index))))
    trace.append(("exhausted", schedule.exhausted))
    return trace


def test_long_chain_runs_in_dependency_order_even_against_the_preferred_order() -> None:
    n = 2000
    waits = {i: ({i - 1} if i else set()) for i in range(n)}
    schedule = Schedule(list(reversed(range(n))), waits)  # preferred order: the wrong way
    handed = []
    while (index := schedule.next_ready()) is not None:
        assert schedule.next_ready() is None  # a chain: one step at a time
        handed.append(index)
        assert schedule.finish(index, ok=True) == []
    assert handed == list(range(n)) and schedule.exhausted


def test_failure_blocks_a_chain_transitively() -> None:
    n = 2000
    waits = {i: ({i - 1} if i else set()) for i in range(n)}
    schedule = Schedule(list(range(n)), waits)
    for i in range(3):
        assert schedule.next_ready() == i
        assert schedule.finish(i, ok=True) == []
    assert schedule.next_ready() == 3
    assert not schedule.exhausted
    assert schedule.finish(3, ok=False) == list(range(4, n))
    assert schedule.next_ready() is None and schedule.exhausted


def test_diamond_waits_for_both_sides_and_is_blocked_once() -> None:
    #    0
    #   / \
    #  1   2
    #   \ /
    #    3 -> 4
    waits = {0: set(), 1: {0}, 2: {0}, 3: {1, 2}, 4: {3}}
    schedule = Schedule([0, 1, 2, 3, 4], waits)
    assert schedule.next_ready() == 0 and schedule.next_ready() is None
    assert schedule.finish(0, ok=True) == []
    assert (schedule.next_ready(), schedule.next_ready(), schedule.next_ready()) == (1, 2, None)
    assert schedule.finish(2, ok=True) == []
    assert schedule.next_ready() is None  # 3 still waits for 1
    assert schedule.finish(1, ok=True) == []
    assert schedule.next_ready() == 3

    failing = Schedule([0, 1, 2, 3, 4], waits)
    assert failing.next_ready() == 0 and failing.finish(0, ok=True) == []
    assert failing.next_ready() == 1 and failing.next_ready() == 2
    assert failing.finish(1, ok=False) == [3, 4]
    assert failing.finish(2, ok=False) == []  # 3 and 4 are blocked once, not twice
    assert failing.exhausted


def test_priority_tenants_and_service_order_are_honoured() -> None:
    tenants = [f"t{i}" for i in range(20)]
    steps = [step(service, tenant) for tenant in tenants for service in ("billing", "auth")]
    steps.append(step("ingest", None))
    order = execution_order(steps, SERVICES, tenants, priority=["t7", "t3"])
    schedule = Schedule(order, dependencies(steps, SERVICES))
    started = []
    while (index := schedule.next_ready()) is not None:  # a pool with unlimited workers
        started.append(steps[index].target.schema)
    assert started[:3] == ["ingest", "auth_t7", "auth_t3"]
    assert started[3:] == [f"auth_{t}" for t in tenants if t not in ("t7", "t3")]
    # Every auth finishes at once, in reverse; billing still starts in priority order.
    for index in reversed(order):
        if steps[index].target.service == "auth":
            schedule.finish(index, ok=True)
    started = []
    while (index := schedule.next_ready()) is not None:
        started.append(steps[index].target.tenant)
    assert started == ["t7", "t3", *(t for t in tenants if t not in ("t7", "t3"))]


def test_single_schema_service_waits_for_every_tenant_of_its_dependency() -> None:
    services = [svc("auth", "auth_{tenant}"), svc("report", "public", ("auth",))]
    steps = [step("report", None), step("auth", "a"), step("auth", "b")]
    order = execution_order(steps, services, ["a", "b"])
    assert order == [0, 1, 2]  # single-schema first in the preferred order...
    schedule = Schedule(order, dependencies(steps, services))
    assert (schedule.next_ready(), schedule.next_ready(), schedule.next_ready()) == (1, 2, None)
    assert schedule.finish(1, ok=True) == [] and schedule.next_ready() is None
    assert schedule.finish(2, ok=True) == [] and schedule.next_ready() == 0  # ...runs last


def test_steps_outside_waits_never_run_and_fail_fast_drain_works() -> None:
    # 1 is not a key of waits (not to be upgraded); 2 waits for it, so never runs either.
    schedule = Schedule([0, 1, 2, 3], {0: set(), 2: {1}, 3: set()})
    assert schedule.next_ready() == 0
    assert schedule.finish(0, ok=False) == []
    assert schedule.next_ready() == 3  # what close() drains after --fail-fast
    assert schedule.next_ready() is None
    assert not schedule.exhausted  # 2 is still there, as with the old schedule


def test_finish_refuses_a_step_that_is_not_running() -> None:
    schedule = Schedule([0, 1], {0: set(), 1: {0}})
    with pytest.raises(ValueError, match="not running"):
        schedule.finish(1, ok=True)
    assert schedule.next_ready() == 0
    schedule.finish(0, ok=True)
    with pytest.raises(ValueError, match="not running"):
        schedule.finish(0, ok=True)


def test_cycles_are_refused_with_the_cycle_named() -> None:
    with pytest.raises(ValueError, match=r"steps depend on each other in a cycle: "
                                         r"(1 -> 2 -> 3 -> 1|2 -> 3 -> 1 -> 2|3 -> 1 -> 2 -> 3)"):
        Schedule([0, 1, 2, 3], {0: set(), 1: {2}, 2: {3}, 3: {1, 0}})
    with pytest.raises(ValueError, match=r"services depend on each other in a cycle: "
                                         r"(a -> b -> a|b -> a -> b)"):
        service_order([svc("a", "a_{tenant}", ("b",)), svc("b", "b_{tenant}", ("a",))])


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[int], dict[int, set[int]], set[int], bool]:
    """A random DAG of steps, a preferred order (topological or not), failing steps."""
    n = draw(st.integers(0, 25))
    topo = draw(st.permutations(range(n)))  # edges go from earlier to later in topo
    waits: dict[int, set[int]] = {}
    for position, index in enumerate(topo):
        earlier = topo[:position]
        waits[index] = set(draw(st.lists(st.sampled_from(earlier), max_size=3))) if earlier \
            else set()
    # A few steps that do not run (not keys of waits), possibly waited for.
    for index in draw(st.lists(st.sampled_from(range(n)), max_size=2)) if n else ():
        waits.pop(index, None)
    topological = draw(st.booleans())
    order = list(topo) if topological else draw(st.permutations(range(n)))
    failing = set(draw(st.lists(st.sampled_from(range(n)), max_size=n))) if n else set()
    return order, waits, failing, topological


@settings(max_examples=400, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_schedule_agrees_with_the_old_algorithm(
    case: tuple[list[int], dict[int, set[int]], set[int], bool], rnd: random.Random,
) -> None:
    """Random DAGs, random interleavings of hand-outs and finishes (a pool of workers
    finishing in any order), random failures: same steps handed out, same steps blocked."""
    order, waits, failing, topological = case
    rank = {index: position for position, index in enumerate(order)}
    new, old = Schedule(order, waits), OldSchedule(order, waits)
    running: list[int] = []
    while True:
        assert new.exhausted == old.exhausted
        if running and (rnd.random() < 0.5 or len(running) >= 4):
            index = running.pop(rnd.randrange(len(running)))
            ok = index not in failing
            expected = old.finish(index, ok)
            got = new.finish(index, ok)
            if topological:
                assert got == expected
            assert got == sorted(expected, key=rank.__getitem__)
            continue
        index = new.next_ready()
        assert index == old.next_ready()
        if index is None:
            if not running:
                break
        else:
            running.append(index)
    # Drained: the same steps were never started, as close() will report them.
    assert new.exhausted == old.exhausted


def _lines_run(body: Callable[[], object]) -> int:
    """Python lines executed by the scheduler (this module and graphlib) while ``body``
    runs: a count of work, not a timing, so it does not depend on the machine."""
    files = (Path(schedule_module.__file__).name, Path(graphlib.__file__).name)
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> object:
        nonlocal count
        if frame.f_code.co_filename.endswith(files):
            if event == "line":
                count += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        body()
    finally:
        sys.settrace(None)
    return count


def _all_failing(make: Callable[..., Schedule | OldSchedule], tenants: int) -> int:
    """Lines run for a platform of 3 services per tenant (the last two waiting for the
    first) where every step handed out fails: one third fail, two thirds are blocked."""
    waits = {}
    for t in range(tenants):
        waits[3 * t] = set()
        waits[3 * t + 1] = waits[3 * t + 2] = {3 * t}
    independent = {i: set() for i in range(3 * tenants)}  # and as many that all fail

    def body() -> None:
        for graph in (waits, independent):
            schedule = make(list(range(3 * tenants)), graph)
            run_all(schedule, lambda _: True)

    return _lines_run(body)


def test_failing_work_is_linear() -> None:
    """4x the steps, all failing: about 4x the work (the old algorithm: over 16x)."""
    small, large = _all_failing(Schedule, 300), _all_failing(Schedule, 1200)
    assert large / small < 4.5, (small, large)
    old_small, old_large = _all_failing(OldSchedule, 30), _all_failing(OldSchedule, 120)
    assert old_large / old_small > 10, (old_small, old_large)  # the check would catch it
