"""What a run did: every target's result and how the run ended. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alembic_fleet.model.status import Outcome, TargetResult, TargetStatus


class RunEnd(StrEnum):
    """How a run ended (the ledger's ``outcome`` of a run uses the same words)."""

    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    """Ctrl-C: the targets in flight were rolled back."""
    TERMINATED = "terminated"
    """SIGTERM (Kubernetes stopping the pod): handled like Ctrl-C."""


@dataclass(frozen=True)
class RunOutcome:
    """Every target's result in plan order, where each stood before, and what to tell."""

    results: tuple[TargetResult, ...]
    before: tuple[TargetStatus, ...]
    warnings: tuple[str, ...] = ()
    run_id: str | None = None
    end: RunEnd = RunEnd.COMPLETED

    @property
    def failed(self) -> bool:
        return any(r.outcome is Outcome.FAILED for r in self.results)
