"""A migrate plan: what each selected target needs, in which order, towards which revision.

Pure data, made by :mod:`alembic_fleet.planning` from an inventory and handed to
:func:`alembic_fleet.execution.execute`; ``--dry-run`` prints it as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alembic_fleet.model.status import Step, TargetStatus
from alembic_fleet.model.targets import Target


@dataclass(frozen=True)
class Plan:
    """Every selected target's step, the order they start in, and what they wait for.

    ``order`` lists step indices in the order they should start (tenant priority, then
    service dependencies); ``waits`` maps each step that runs to the steps it must wait for;
    ``destinations`` gives, per service, the revisions its targets are brought to;
    ``unreachable`` maps a database key to why it could not be read (its steps do not run);
    ``mirrored`` holds the targets whose revisions came from a trustworthy version mirror.
    """

    steps: tuple[Step, ...]
    order: tuple[int, ...] = ()
    waits: Mapping[int, frozenset[int]] = field(default_factory=dict)
    destinations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unreachable: Mapping[str, str] = field(default_factory=dict)
    mirrored: frozenset[Target] = frozenset()

    @property
    def statuses(self) -> tuple[TargetStatus, ...]:
        """Where every target stood when the plan was made."""
        return tuple(s.status for s in self.steps)

    @property
    def runnable(self) -> int:
        """How many targets the plan migrates."""
        return sum(1 for s in self.steps if s.upgrade)

    def alembic_destination(self, service: str) -> str:
        """The destination in Alembic's terms: the one head, or ``heads``."""
        wanted = self.destinations[service]
        return wanted[0] if len(wanted) == 1 else "heads"
