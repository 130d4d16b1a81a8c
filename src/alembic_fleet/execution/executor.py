"""Executors decide in which order and where targets run; they never print.

:class:`SerialExecutor` runs targets one after another in this process. A parallel executor
(a pool of worker processes) implements the same :class:`Executor` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from alembic_fleet.execution.events import EventSink, RunStarted, TargetFinished, TargetStarted
from alembic_fleet.model.status import Outcome, Step, TargetResult

Work = Callable[[Step], TargetResult]


class Executor(Protocol):
    """Runs a plan's steps and reports each result through ``on_event``."""

    def run(self, steps: Sequence[Step], on_event: EventSink) -> list[TargetResult]: ...


def skipped(step: Step, reason: str = "") -> TargetResult:
    """The result of a step that was not executed."""
    current = step.status.current
    return TargetResult(step.target, Outcome.SKIPPED, current, current, 0.0,
                        note=reason or step.reason)


class SerialExecutor:
    """Runs targets in plan order in the current process."""

    def __init__(self, work: Work, *, fail_fast: bool = False) -> None:
        self.work = work
        self.fail_fast = fail_fast

    def run(self, steps: Sequence[Step], on_event: EventSink) -> list[TargetResult]:
        on_event(RunStarted(len(steps), sum(1 for s in steps if s.upgrade)))
        results: list[TargetResult] = []
        stop = False
        for step in steps:
            if not step.upgrade:
                result = skipped(step)
            elif stop:
                result = skipped(step, "not started: an earlier target failed (--fail-fast)")
            else:
                on_event(TargetStarted(step.target))
                result = self.work(step)
                stop = self.fail_fast and result.outcome is Outcome.FAILED
            results.append(result)
            on_event(TargetFinished(result))
        return results
