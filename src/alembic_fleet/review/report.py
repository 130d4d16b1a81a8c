"""What ``fleet plan`` reports, as plain values, and the pure decisions behind it.

Targets of a service that stand at the same revision run the same pending revisions: they
are one *starting point*. A revision runs on every target of every starting point it is
pending for, so that is its tenant count, and the copies of a table it touches are those
in those targets' schemas. The estimate of a service's duration is the median seconds per
target of its recent migrations in the ledger, times the number of waves its targets need
on the worker processes.

Pure: no database, no Alembic (the statements' analysis is :mod:`.locks`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from alembic_fleet.model.findings import Finding
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.targets import Target
from alembic_fleet.review.locks import (
    Effect,
    Lock,
    Relation,
    StatementAnalysis,
    Work,
    analyze_statements,
)


@dataclass(frozen=True)
class StartingPoint:
    """The targets of one service that stand at the same revision(s)."""

    current: tuple[str, ...]
    """Their revisions; empty: base (no version row, or no schema yet)."""
    targets: tuple[Target, ...]
    pending: tuple[str, ...]
    """The revisions they will run, oldest first."""


@dataclass(frozen=True)
class CopySize:
    """One copy of a relation, in one target's schema, from the catalog."""

    schema: str
    rows: int | None
    """``pg_class.reltuples``: an estimate kept by VACUUM and ANALYZE; None when the
    relation was never analysed."""
    bytes: int | None
    """``pg_total_relation_size``: the table with its indexes and TOAST; None: unknown
    (another session held the relation in ACCESS EXCLUSIVE mode, the plan did not wait)."""

    @property
    def key(self) -> tuple[bool, int, int]:
        """Order of size. A copy of unknown size counts as the largest: it may be, and
        the plan must not present a smaller known copy as the worst case."""
        return (self.bytes is None, self.bytes or 0, self.rows or 0)


@dataclass(frozen=True)
class PlannedEffect:
    """What a statement does to one relation, on the targets that will run it."""

    effect: Effect
    largest: CopySize | None = None
    """The largest copy among the schemas of the targets that run the statement."""
    copies: int = 0
    """How many of those schemas hold the relation today."""


@dataclass(frozen=True)
class PlannedStatement:
    analysis: StatementAnalysis
    effects: tuple[PlannedEffect, ...] = ()


@dataclass(frozen=True)
class PlannedRevision:
    """One pending revision of a service."""

    revision: str
    message: str
    path: str
    targets: int
    """How many targets will run it."""
    statements: tuple[PlannedStatement, ...] = ()
    unrendered: str | None = None
    """Why its ``upgrade()`` could not be rendered to the end offline (it reads the
    database); the statements are those emitted before that point."""
    findings: tuple[Finding, ...] = ()
    """``fleet check``'s unsafe-operation findings (FC5xx) for it."""


@dataclass(frozen=True)
class Estimate:
    """How long a service's targets should take, from the ledger."""

    median: float | None
    """Median seconds per target of the service's recent migrated targets; None: no history."""
    samples: int
    targets: int
    jobs: int

    @property
    def waves(self) -> int:
        return math.ceil(self.targets / max(1, self.jobs)) if self.targets else 0

    @property
    def seconds(self) -> float | None:
        """The median times the waves of ``jobs`` worker processes the targets need."""
        return None if self.median is None else self.median * self.waves


@dataclass(frozen=True)
class TableLock:
    """The strongest lock a service's pending revisions take on one relation: each target
    holds it from that statement until its transaction commits."""

    relation: Relation
    lock: Lock
    work: Work | None
    revision: str
    """The first pending revision that takes it in that mode."""
    largest: CopySize | None


@dataclass(frozen=True)
class ServicePlan:
    """One service's pending work."""

    service: str
    starting_points: tuple[StartingPoint, ...]
    revisions: tuple[PlannedRevision, ...]
    estimate: Estimate

    @property
    def targets(self) -> int:
        return sum(len(p.targets) for p in self.starting_points)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for r in self.revisions for f in r.findings)

    @property
    def unrendered(self) -> tuple[str, ...]:
        return tuple(r.revision for r in self.revisions if r.unrendered)

    @property
    def strongest(self) -> Lock | None:
        locks = [t.lock for t in self.tables]
        return max(locks) if locks else None

    @property
    def tables(self) -> tuple[TableLock, ...]:
        """The strongest lock on each existing relation, strongest first."""
        found: dict[Relation, TableLock] = {}
        for revision in self.revisions:
            for statement in revision.statements:
                for planned in statement.effects:
                    effect = planned.effect
                    if effect.lock is None or effect.created:
                        continue
                    key = replace(effect.relation, kind="")
                    before = found.get(key)
                    works = [w for w in (before.work if before else None, effect.work) if w]
                    work = max(works, key=lambda w: w.weight) if works else None
                    if before is None or effect.lock > before.lock:
                        found[key] = TableLock(effect.relation, effect.lock, work,
                                               revision.revision, planned.largest)
                    else:
                        found[key] = replace(before, work=work)
        return tuple(sorted(found.values(), key=lambda t: (-t.lock, t.relation.display)))

    def work(self, kind: Work | str) -> int:
        """How many statement effects do ``kind`` of work on an existing relation."""
        return sum(1 for r in self.revisions for s in r.statements for e in s.effects
                   if e.effect.work == kind and not e.effect.created)


@dataclass(frozen=True)
class PlanReport:
    """Everything ``fleet plan`` prints."""

    services: tuple[ServicePlan, ...]
    jobs: int
    at_head: int = 0
    ahead: int = 0
    """Targets past the scripts' head (or on a revision the scripts do not know)."""
    unreachable: Mapping[str, str] = field(default_factory=dict)
    """Database (as displayed) -> why it could not be read; its targets are not planned."""
    unreachable_targets: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def targets(self) -> int:
        return sum(s.targets for s in self.services)

    @property
    def estimate_seconds(self) -> float | None:
        """All services' targets on one pool of ``jobs`` worker processes: their total
        work divided by the jobs, at least the slowest single target. Services without
        history are not counted (None when none has any)."""
        known = [s.estimate for s in self.services if s.estimate.median is not None]
        if not known:
            return None
        work = sum((e.median or 0.0) * e.targets for e in known)
        return max(work / max(1, self.jobs), max(e.median or 0.0 for e in known))

    @property
    def estimate_partial(self) -> bool:
        """Some service with pending work has no history: the total leaves it out."""
        return any(s.estimate.median is None for s in self.services)


# --- the decisions -------------------------------------------------------------------------


def pending_revisions(graph: RevisionGraph, current: Iterable[str],
                      wanted: Iterable[str]) -> tuple[str, ...]:
    """The revisions an upgrade from ``current`` to ``wanted`` applies, oldest first."""
    todo = graph.ancestors(wanted) - graph.ancestors(current)
    return tuple(r.id for r in reversed(graph.ordered) if r.id in todo)


def starting_points(graph: RevisionGraph, pairs: Sequence[tuple[Target, tuple[str, ...]]],
                    wanted: Iterable[str]) -> tuple[StartingPoint, ...]:
    """``(target, current revisions)`` of one service grouped by where they stand, in
    the order first seen; each with the revisions it will run."""
    wanted = tuple(wanted)
    groups: dict[tuple[str, ...], list[Target]] = {}
    for target, current in pairs:
        groups.setdefault(tuple(sorted(current)), []).append(target)
    return tuple(StartingPoint(current, tuple(targets), pending_revisions(graph, current, wanted))
                 for current, targets in groups.items())


def revision_order(graph: RevisionGraph, points: Sequence[StartingPoint]
                   ) -> tuple[str, ...]:
    """Every revision pending for some starting point, oldest first."""
    pending = {r for point in points for r in point.pending}
    return tuple(r.id for r in reversed(graph.ordered) if r.id in pending)


def analyze_revisions(statements: Mapping[str, Sequence[str]],
                      points: Sequence[StartingPoint]
                      ) -> dict[str, list[StatementAnalysis]]:
    """Each revision's statements analysed in the order each starting point runs them.

    A relation created by an earlier pending revision is new (empty) only for the targets
    that run that revision too: an effect is marked ``created`` when it is new for every
    starting point that runs its revision.
    """
    result: dict[str, list[StatementAnalysis]] = {}
    for point in points:
        sequence = [(revision, text) for revision in point.pending
                    for text in statements.get(revision, ())]
        analysed = analyze_statements([text for _, text in sequence])
        mine: dict[str, list[StatementAnalysis]] = {}
        for item in analysed:
            mine.setdefault(sequence[item.index][0], []).append(item)
        for revision in point.pending:
            items = mine.get(revision, [])
            if revision not in result:
                result[revision] = items
                continue
            result[revision] = [_both_new(a, b) for a, b in
                                zip(result[revision], items, strict=True)]
    return result


def _both_new(first: StatementAnalysis, second: StatementAnalysis) -> StatementAnalysis:
    """``first`` with ``created`` kept only where ``second`` agrees."""
    new = {e.relation for e in second.effects if e.created}
    return replace(first, effects=tuple(
        replace(e, created=e.created and e.relation in new) for e in first.effects))


def copy_key(target: Target, relation: Relation) -> tuple[str, str, str]:
    """Where the catalog holds ``relation`` as ``target`` sees it: (database key, schema,
    name); an unqualified name is in the target's own schema."""
    return (target.database.key, relation.schema or target.schema, relation.name)


def largest_copy(relation: Relation, targets: Iterable[Target],
                 sizes: Mapping[tuple[str, str, str], CopySize]
                 ) -> tuple[CopySize | None, int]:
    """The largest copy of ``relation`` among ``targets``' schemas, and how many exist."""
    keys = {copy_key(t, relation) for t in targets}
    copies = [sizes[k] for k in keys if k in sizes]
    return (max(copies, key=lambda c: c.key) if copies else None), len(copies)


def estimate(samples: Sequence[float], targets: int, jobs: int) -> Estimate:
    """The median of ``samples`` (seconds per target), for ``targets`` on ``jobs``
    worker processes (no more than there are targets)."""
    jobs = max(1, min(jobs, targets)) if targets else max(1, jobs)
    median = statistics.median(samples) if samples else None
    return Estimate(median, len(samples), targets, jobs)


def plan_statements(analysis: Sequence[StatementAnalysis], targets: Sequence[Target],
                    sizes: Mapping[tuple[str, str, str], CopySize]
                    ) -> tuple[PlannedStatement, ...]:
    """The statements of one revision, each effect with the largest copy of its relation
    among the ``targets`` that run it."""
    planned = []
    for item in analysis:
        effects = []
        for effect in item.effects:
            largest, copies = largest_copy(effect.relation, targets, sizes)
            effects.append(PlannedEffect(effect, largest, copies))
        planned.append(PlannedStatement(item, tuple(effects)))
    return tuple(planned)
