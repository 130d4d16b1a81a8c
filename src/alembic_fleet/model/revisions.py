"""One service's revision graph: the only one fleet has.

Two builders feed it. The Alembic bridge reads a ``ScriptDirectory`` once
(:attr:`alembic_fleet.alembic_bridge.scripts.ServiceScripts.graph`); ``fleet check`` reads
the revision files with :mod:`ast`, without importing them
(:mod:`alembic_fleet.check.scripts_lint`). Both hand :meth:`RevisionGraph.from_revisions`
the revisions as declared, and everything else is computed here, without Alembic or a
database: heads, ancestors, pending counts, the order ``history`` shows, and the problems
that make a graph unusable.

The constructor tolerates broken input, because the lint must see every file as written:
a duplicated id keeps its first declaration (all of them stay in
:attr:`RevisionGraph.declared`), an unknown parent is ignored, a cycle does not loop.
The validation methods then return typed problems, the way Alembic's ``RevisionMap``
raises ``CycleDetected`` or ``MultipleHeads``; their ``code`` is the ``fleet check`` rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from typing import ClassVar, Literal


@dataclass(frozen=True)
class Revision:
    """One migration script as declared: its id, parents, message and file.

    ``down`` is the ``down_revision`` (the versioned parents, which decide the heads);
    ``depends_on`` names further revisions that must be applied first, by id or by branch
    label, as Alembic allows.
    """

    id: str
    down: tuple[str, ...]
    message: str = ""
    path: str = ""
    branch_labels: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class DuplicateRevision:
    """Several files declare one id (Alembic warns and keeps one of them)."""

    code: ClassVar[str] = "FC101"
    revision: str
    declarations: tuple[Revision, ...]
    """Every declaration of the id, in the order given; the graph keeps the first."""


@dataclass(frozen=True)
class MultipleHeads:
    """More than one revision is no other revision's ``down_revision``."""

    code: ClassVar[str] = "FC102"
    heads: tuple[str, ...]
    """Sorted."""


@dataclass(frozen=True)
class UnknownReference:
    """A ``down_revision`` names no revision, or a ``depends_on`` names neither a revision
    nor a branch label."""

    code: ClassVar[str] = "FC103"
    revision: Revision
    """The declaration that names it."""
    name: str
    kind: Literal["down_revision", "depends_on"]


@dataclass(frozen=True)
class RevisionCycle:
    """Revisions that descend from themselves, through ``down_revision`` or ``depends_on``.

    ``path`` follows the history downwards, from child to parent, and ends where it starts:
    ``("a1", "a3", "a2", "a1")`` means a1 revises a3, which revises a2, which revises a1.
    """

    code: ClassVar[str] = "FC104"
    path: tuple[str, ...]

    @property
    def members(self) -> tuple[str, ...]:
        """Each revision on the cycle once, in cycle order."""
        return self.path[:-1]

    def through(self, member: str) -> tuple[str, ...]:
        """The same cycle, starting and ending at ``member``."""
        start = self.members.index(member)
        members = self.members[start:] + self.members[:start]
        return (*members, member)


GraphProblem = DuplicateRevision | MultipleHeads | UnknownReference | RevisionCycle


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class RevisionGraph:
    """Revisions by id, with their heads; everything derived is computed once.

    Build it with :meth:`from_revisions`. The plain constructor takes the heads as given
    (tests use it to describe a graph in one line); ``declared`` defaults to the revisions.
    """

    revisions: Mapping[str, Revision]
    heads: tuple[str, ...]
    declared: tuple[Revision, ...] = ()
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_revisions(cls, declared: Iterable[Revision]) -> RevisionGraph:
        """The graph of ``declared``, in the order given (the order files are read).

        Heads are the ids no declaration names as its ``down_revision`` (a ``depends_on``
        does not count, as in Alembic), in the order given. Nothing is validated here:
        see :meth:`problems`.
        """
        everything = tuple(declared)
        revisions: dict[str, Revision] = {}
        for rev in everything:
            revisions.setdefault(rev.id, rev)
        named = {down for rev in everything for down in rev.down}
        heads = tuple(rid for rid in revisions if rid not in named)
        return cls(revisions, heads, everything)

    @property
    def declarations(self) -> tuple[Revision, ...]:
        """Every declaration, duplicates included."""
        return self.declared or tuple(self.revisions.values())

    def knows(self, revision: str) -> bool:
        return revision in self.revisions

    @cached_property
    def labels(self) -> Mapping[str, tuple[str, ...]]:
        """Branch label -> the ids of the revisions that carry it."""
        found: dict[str, list[str]] = {}
        for rev in self.declarations:
            for label in rev.branch_labels:
                found.setdefault(label, [])
                if rev.id not in found[label]:
                    found[label].append(rev.id)
        return {label: tuple(ids) for label, ids in found.items()}

    def _parents_of(self, rev: Revision) -> tuple[str, ...]:
        """``rev``'s known parents: its down revisions, then its dependencies (a branch
        label stands for the revisions that carry it). Unknown names are left out."""
        parents: dict[str, None] = {}
        for down in rev.down:
            if down in self.revisions:
                parents[down] = None
        for dep in rev.depends_on:
            for rid in (dep,) if dep in self.revisions else self.labels.get(dep, ()):
                parents[rid] = None
        return tuple(parents)

    @cached_property
    def _parents(self) -> Mapping[str, tuple[str, ...]]:
        return {rid: self._parents_of(rev) for rid, rev in self.revisions.items()}

    def parents(self, revision: str) -> tuple[str, ...]:
        """What must be applied right before ``revision``: down revisions and dependencies."""
        return self._parents.get(revision, ())

    @property
    def is_linear(self) -> bool:
        """One head, and no revision with more than one parent (no merge, no dependency
        besides its down revision)."""
        return len(self.heads) == 1 and all(len(p) <= 1 for p in self._parents.values())

    def ancestors(self, revisions: Iterable[str]) -> frozenset[str]:
        """``revisions`` and everything below them (unknown ids are ignored)."""
        key = frozenset(revisions)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        seen: set[str] = set()
        stack = [r for r in key if r in self.revisions]
        while stack:
            rev = stack.pop()
            if rev in seen:
                continue
            seen.add(rev)
            stack.extend(p for p in self.parents(rev) if p not in seen)
        result = frozenset(seen)
        self._cache[key] = result
        return result

    def overlapping(self, current: tuple[str, ...]) -> tuple[str, ...]:
        """The revisions of ``current`` below another of them (a version table Alembic
        refuses to upgrade)."""
        return tuple(rev for rev in current
                     if any(other != rev and rev in self.ancestors((other,))
                            for other in current))

    def pending(self, current: Iterable[str], destination: Iterable[str]) -> int:
        """How many revisions an upgrade from ``current`` to ``destination`` applies."""
        return len(self.ancestors(destination) - self.ancestors(current))

    def standing(self, current: tuple[str, ...], destination: tuple[str, ...]
                 ) -> tuple[tuple[str, ...], int, bool]:
        """What :func:`~alembic_fleet.model.status.classify` needs of ``current`` against
        ``destination``: the revisions of ``current`` the graph does not know, how many an
        upgrade applies, and whether ``current`` is past ``destination``. Computed once per
        pair: ten thousand tenants mostly stand at the same revision."""
        key = ("standing", current, destination)
        cached = self._cache.get(key)
        if cached is None:
            unknown = tuple(rev for rev in current if not self.knows(rev))
            cached = (unknown, 0, False) if unknown else (
                unknown, self.pending(current, destination), self.is_past(current, destination))
            self._cache[key] = cached
        return cached

    def is_past(self, current: Iterable[str], destination: Iterable[str]) -> bool:
        """True when ``current`` holds revisions that ``destination`` does not include."""
        return bool(self.ancestors(current) - self.ancestors(destination))

    @cached_property
    def ordered(self) -> tuple[Revision, ...]:
        """Revisions from the heads down to the base (newest first), as ``history`` shows.

        Each revision comes before its parents. Iterative (a service may have more
        revisions than Python's recursion limit) and safe on a cycle, which it cuts.
        """
        order: list[Revision] = []
        entered: set[str] = set()
        for head in self.heads:
            stack = [(head, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    order.append(self.revisions[node])
                    continue
                if node in entered or node not in self.revisions:
                    continue
                entered.add(node)
                stack.append((node, True))
                stack.extend((p, False) for p in self.parents(node) if p not in entered)
        return tuple(reversed(order))

    # ----------------------------------------------------------------------- validation

    def duplicates(self) -> tuple[DuplicateRevision, ...]:
        """Ids declared more than once (FC101), in the order first declared."""
        by_id: dict[str, list[Revision]] = {}
        for rev in self.declarations:
            by_id.setdefault(rev.id, []).append(rev)
        return tuple(DuplicateRevision(rid, tuple(same))
                     for rid, same in by_id.items() if len(same) > 1)

    def multiple_heads(self) -> MultipleHeads | None:
        """The heads when there is more than one (FC102)."""
        return MultipleHeads(tuple(sorted(self.heads))) if len(self.heads) > 1 else None

    def unknown_references(self) -> tuple[UnknownReference, ...]:
        """Down revisions and dependencies that name nothing (FC103), per declaration."""
        found = []
        for rev in self.declarations:
            found.extend(UnknownReference(rev, down, "down_revision")
                         for down in rev.down if down not in self.revisions)
            found.extend(UnknownReference(rev, dep, "depends_on") for dep in rev.depends_on
                         if dep not in self.revisions and dep not in self.labels)
        return tuple(found)

    def cycle(self) -> RevisionCycle | None:
        """A cycle (FC104), starting at its smallest id, or ``None`` when the graph sorts.

        :class:`graphlib.TopologicalSorter` reports one cycle, its members in order; like
        Alembic's ``CycleDetected``, one is enough to make the graph unusable, and a
        further cycle shows once that one is fixed. Linear in the size of the graph, and
        iterative. Every declaration's parents count, duplicates included.
        """
        edges: dict[str, set[str]] = {rid: set() for rid in self.revisions}
        for rev in self.declarations:
            edges[rev.id].update(self._parents_of(rev))
        sorter = TopologicalSorter({rid: sorted(edges[rid]) for rid in sorted(edges)})
        try:
            sorter.prepare()
        except CycleError as error:
            upward = error.args[1]  # each node is a parent of the next one
        else:
            return None
        members = tuple(reversed(upward))[:-1]  # child -> parent, down the history
        start = members.index(min(members))
        return RevisionCycle((*members[start:], *members[:start], members[start]))

    def problems(self) -> tuple[GraphProblem, ...]:
        """Everything that makes the graph unusable: FC101, FC102, FC103, FC104."""
        heads, cycle = self.multiple_heads(), self.cycle()
        return (*self.duplicates(), *((heads,) if heads else ()),
                *self.unknown_references(), *((cycle,) if cycle else ()))
