"""In which order targets run: pure decisions shared by every executor.

Targets run tenant by tenant (``priority`` tenants first, then the configured order), and
within a tenant in ``depends_on`` order. A target starts only when the targets it depends on
(same tenant, or the single target of a single-schema service) have been migrated; when one
of them fails, its dependents are not started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from alembic_fleet.model.status import Step
from alembic_fleet.model.targets import Service


def service_order(services: Iterable[Service]) -> list[str]:
    """Service names, dependencies first, otherwise in configuration order (stable)."""
    by_name = {s.name: s for s in services}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for dependency in by_name[name].depends_on:
            visit(dependency)
        ordered.append(name)

    for name in by_name:
        visit(name)
    return ordered


def execution_order(
    steps: Sequence[Step], services: Iterable[Service], tenants: Sequence[str],
    priority: Sequence[str] = (),
) -> list[int]:
    """Indices of ``steps`` in the order they should start."""
    tenant_rank = {t: i for i, t in enumerate((*priority, *(t for t in tenants
                                                            if t not in priority)))}
    service_rank = {name: i for i, name in enumerate(service_order(services))}

    def key(index: int) -> tuple[int, int, int]:
        target = steps[index].target
        rank = -1 if target.tenant is None else tenant_rank.get(target.tenant, len(tenant_rank))
        return (rank, service_rank.get(target.service, len(service_rank)), index)

    return sorted(range(len(steps)), key=key)


def dependencies(steps: Sequence[Step], services: Iterable[Service]) -> dict[int, set[int]]:
    """For each step that runs, the steps (that run) it must wait for."""
    by_name = {s.name: s for s in services}
    running = [i for i, s in enumerate(steps) if s.upgrade]
    by_key: dict[tuple[str, str | None], int] = {}
    by_service: dict[str, list[int]] = {}
    for i in running:
        target = steps[i].target
        by_key[(target.service, target.tenant)] = i
        by_service.setdefault(target.service, []).append(i)
    result: dict[int, set[int]] = {}
    for i in running:
        target = steps[i].target
        waits: set[int] = set()
        for dependency in by_name[target.service].depends_on:
            if by_name[dependency].per_tenant and target.tenant is not None:
                if (dependency, target.tenant) in by_key:
                    waits.add(by_key[(dependency, target.tenant)])
            elif by_name[dependency].per_tenant:
                waits.update(by_service.get(dependency, ()))
            elif (dependency, None) in by_key:
                waits.add(by_key[(dependency, None)])
        result[i] = waits
    return result


@dataclass
class Schedule:
    """Hands out runnable steps in order and tracks what finished.

    ``next_ready()`` returns the next step whose dependencies all succeeded; ``finish()``
    records an outcome and returns the steps that can no longer run because a dependency
    failed (each is reported as not started).
    """

    order: list[int]
    waits: dict[int, set[int]]
    _pending: deque[int] = field(init=False)
    _ok: set[int] = field(default_factory=set, init=False)
    _failed: set[int] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._pending = deque(i for i in self.order if i in self.waits)

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
