"""In which order targets run: pure decisions shared by every executor.

Targets run tenant by tenant (``priority`` tenants first, then the configured order), and
within a tenant in ``depends_on`` order. A target starts only when the targets it depends on
(same tenant, or the single target of a single-schema service) have been migrated; when one
of them fails, its dependents (transitively) are not started.

How :class:`Schedule` is built, and why. The standard library's
:class:`graphlib.TopologicalSorter` tracks readiness: a step is added with the steps it
waits for, ``done()`` is called when a step succeeds, and ``get_ready()`` gives the steps
that just became runnable, each edge being looked at once. It cannot express the two other
things a schedule needs, so two small structures sit beside it:

* the preferred order. ``get_ready()`` gives steps in the order they became ready, not in
  the ``order`` the run asks for (priority tenants first, then service dependency order).
  Ready steps are pushed on a heap keyed by their position in ``order``, so
  ``next_ready()`` is one heap pop (O(log n)) and returns exactly the step the old linear
  scan of the pending list returned: the first ready one in ``order``.
* failure. The sorter has no notion of it: a failed step is simply never marked done, so
  nothing downstream of it can become ready, and its transitive dependents are found by a
  walk over a reverse-dependency map (step -> steps waiting for it). A step is blocked at
  most once and its out-edges are walked at most once, so all failures of a run together
  cost O(steps + edges) plus sorting each ``finish()`` result, never a rescan of the pending
  steps.

A cycle among the steps is refused when the schedule is built (:class:`ValueError` naming
it, from graphlib's :class:`~graphlib.CycleError`); ``service_order`` refuses a cycle among
services the same way (the configuration loader already refuses ``depends_on`` cycles, so
neither happens in a run). As before, a step that is not a key of ``waits`` never runs, and
neither does a step that waits for one (it is never handed out, and ``exhausted`` stays
false until it is blocked by a failure).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

from alembic_fleet.model.status import Step
from alembic_fleet.model.targets import Service


def _cycle_error(what: str, error: CycleError) -> ValueError:
    """A readable ValueError for graphlib's cycle, written in "depends on" direction."""
    cycle = list(reversed(error.args[1])) if len(error.args) > 1 else []
    return ValueError(f"{what} depend on each other in a cycle: "
                      + " -> ".join(str(node) for node in cycle))


def service_order(services: Iterable[Service]) -> list[str]:
    """Service names, dependencies first, otherwise in configuration order (stable).

    Dependencies on services not given are ignored. Raises :class:`ValueError` on a cycle.
    """
    by_name = {s.name: s for s in services}
    try:
        TopologicalSorter({name: [d for d in s.depends_on if d in by_name]
                           for name, s in by_name.items()}).prepare()
    except CycleError as error:
        raise _cycle_error("services", error) from None
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


class _Never:
    """The sorter's stand-in for a step outside the schedule: it is never marked done."""

    def __repr__(self) -> str:
        return "<a step outside the schedule>"


_NEVER = _Never()
_PENDING, _RUNNING, _SUCCEEDED, _FAILED, _BLOCKED = range(5)


@dataclass
class Schedule:
    """Hands out runnable steps in order and tracks what finished.

    ``order`` lists step indices in the preferred start order; ``waits`` maps every step
    that runs to the steps it waits for. ``next_ready()`` returns the first step in
    ``order`` whose dependencies all succeeded (``None`` when none is ready now);
    ``finish()`` records the outcome of a step it handed out and returns the steps that can
    no longer run because it failed (transitively), in ``order``; each is then reported
    as not started. ``exhausted`` is true once every step was handed out or blocked.
    """

    order: list[int]
    waits: dict[int, set[int]]
    _rank: dict[int, int] = field(init=False, repr=False)
    _by_rank: list[int] = field(init=False, repr=False)
    _sorter: TopologicalSorter[Hashable] = field(init=False, repr=False)
    _dependents: dict[int, list[int]] = field(init=False, repr=False)
    _state: dict[int, int] = field(init=False, repr=False)
    _ready: list[int] = field(default_factory=list, init=False, repr=False)
    _left: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rank = {}
        for index in self.order:
            if index in self.waits and index not in self._rank:
                self._rank[index] = len(self._rank)
        self._by_rank = list(self._rank)
        self._state = dict.fromkeys(self._rank, _PENDING)
        self._left = len(self._rank)
        self._sorter = TopologicalSorter()
        self._dependents = {}
        for index in self._rank:
            waits = self.waits[index]
            for dependency in waits:
                self._dependents.setdefault(dependency, []).append(index)
            if all(d in self._rank for d in waits):
                self._sorter.add(index, *waits)
            else:  # waits for a step that never runs: never ready
                self._sorter.add(index, *(d for d in waits if d in self._rank), _NEVER)
        try:
            self._sorter.prepare()
        except CycleError as error:
            raise _cycle_error("steps", error) from None
        self._collect()

    def _collect(self) -> None:
        """Move the steps the sorter just released onto the heap of ready steps."""
        for index in self._sorter.get_ready():
            if index is not _NEVER:
                heapq.heappush(self._ready, self._rank[index])  # type: ignore[index]

    @property
    def exhausted(self) -> bool:
        """True once every step was handed out or blocked."""
        return self._left == 0

    def next_ready(self) -> int | None:
        """The first step in ``order`` that can start now, marked running; else None."""
        while self._ready:
            index = self._by_rank[heapq.heappop(self._ready)]
            if self._state[index] == _PENDING:
                self._state[index] = _RUNNING
                self._left -= 1
                return index
        return None

    def finish(self, index: int, ok: bool) -> list[int]:
        """Record the outcome of a step handed out by ``next_ready()``.

        Returns the steps blocked by this failure (its pending dependents, transitively),
        in ``order``; an empty list on success.
        """
        if self._state.get(index) != _RUNNING:
            raise ValueError(f"step {index} is not running: finish() takes a step handed "
                             "out by next_ready(), once")
        if ok:
            self._state[index] = _SUCCEEDED
            self._sorter.done(index)
            self._collect()
            return []
        self._state[index] = _FAILED
        blocked: list[int] = []
        stack = [index]
        while stack:
            for dependent in self._dependents.get(stack.pop(), ()):
                if self._state[dependent] == _PENDING:
                    self._state[dependent] = _BLOCKED
                    blocked.append(dependent)
                    stack.append(dependent)
        self._left -= len(blocked)
        blocked.sort(key=self._rank.__getitem__)
        return blocked
