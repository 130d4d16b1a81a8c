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
    DEADLINE = "stopped_deadline"
    """``--deadline``: no time left for the next target; the rest is pending."""
    MAX_FAILURES = "stopped_max_failures"
    """``--max-failures``: more targets failed than allowed; the rest is pending."""
    CANARY = "stopped_canary"
    """``--canary``: a target of the canary wave failed; the rest is pending."""


STOPPED_BY_BUDGET = (RunEnd.DEADLINE, RunEnd.MAX_FAILURES, RunEnd.CANARY)
"""Ends after which a rerun resumes: the targets not started are reported ``pending``."""


@dataclass(frozen=True)
class RunOutcome:
    """Every target's result in plan order, where each stood before, and what to tell."""

    results: tuple[TargetResult, ...]
    before: tuple[TargetStatus, ...]
    warnings: tuple[str, ...] = ()
    run_id: str | None = None
    end: RunEnd = RunEnd.COMPLETED
    stop_detail: str | None = None
    """Why a run stopped early (with a budget end), in words."""

    @property
    def failed(self) -> bool:
        return any(r.outcome is Outcome.FAILED for r in self.results)
