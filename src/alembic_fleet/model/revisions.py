"""A pure view of one service's revision graph.

The Alembic bridge builds a :class:`RevisionGraph` from a ``ScriptDirectory`` once; status,
plans and pending counts are then computed here without Alembic or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Revision:
    """One migration script: its id, parents, message and file."""

    id: str
    down: tuple[str, ...]
    message: str = ""
    path: str = ""
    branch_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class RevisionGraph:
    """Revisions by id, with their heads; everything derived is computed once."""

    revisions: Mapping[str, Revision]
    heads: tuple[str, ...]
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def knows(self, revision: str) -> bool:
        return revision in self.revisions

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
            stack.extend(d for d in self.revisions[rev].down
                         if d not in seen and d in self.revisions)
        result = frozenset(seen)
        self._cache[key] = result
        return result

    def pending(self, current: Iterable[str], destination: Iterable[str]) -> int:
        """How many revisions an upgrade from ``current`` to ``destination`` applies."""
        return len(self.ancestors(destination) - self.ancestors(current))

    def is_past(self, current: Iterable[str], destination: Iterable[str]) -> bool:
        """True when ``current`` holds revisions that ``destination`` does not include."""
        return bool(self.ancestors(current) - self.ancestors(destination))

    @cached_property
    def ordered(self) -> tuple[Revision, ...]:
        """Revisions from the heads down to the base (newest first), as ``history`` shows."""
        order: list[Revision] = []
        seen: set[str] = set()

        def visit(rev_id: str) -> None:
            # Iterative post-order: a revision comes after everything above it.
            stack = [(rev_id, False)]
            while stack:
                node, done = stack.pop()
                if node in seen or node not in self.revisions:
                    continue
                if done:
                    seen.add(node)
                    order.append(self.revisions[node])
                    continue
                stack.append((node, True))
                stack.extend((d, False) for d in self.revisions[node].down)

        for head in self.heads:
            visit(head)
        return tuple(reversed(order))
