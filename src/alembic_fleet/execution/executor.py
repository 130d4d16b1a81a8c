"""Executors decide where targets run; they never print.

:class:`SerialExecutor` runs targets one after another in this process;
:class:`alembic_fleet.execution.pool.PoolExecutor` runs them in worker processes. Both follow
the same :class:`~alembic_fleet.model.schedule.Schedule` and report through events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from alembic_fleet.execution.events import EventSink, RunStarted, TargetFinished, TargetStarted
from alembic_fleet.model.schedule import Schedule
from alembic_fleet.model.status import Outcome, Step, TargetResult

Work = Callable[[Step], TargetResult]

FAIL_FAST_NOTE = "not started: an earlier target failed (--fail-fast)"
DEPENDENCY_NOTE = "not started: a service it depends on failed for this tenant"
INTERRUPTED_NOTE = "not started: the run was interrupted"
INTERRUPTED_ERROR = "interrupted: its transaction was rolled back"


class RunInterrupted(Exception):
    """Ctrl-C (SIGINT) during a run; carries every target's result so far."""

    def __init__(self, results: list[TargetResult]) -> None:
        super().__init__("interrupted")
        self.results = results


class Executor(Protocol):
    """Runs a plan's steps and reports each result through ``on_event``."""

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]: ...


def skipped(step: Step, reason: str = "") -> TargetResult:
    """The result of a step that was not executed."""
    current = step.status.current
    return TargetResult(step.target, Outcome.SKIPPED, current, current, 0.0,
                        note=reason or step.reason)


class RunProgress:
    """Every step's result by index, filled in as targets finish; shared by the executors."""

    def __init__(self, steps: Sequence[Step], on_event: EventSink, fail_fast: bool) -> None:
        self.steps = steps
        self.on_event = on_event
        self.fail_fast = fail_fast
        self.results: list[TargetResult | None] = [None] * len(steps)
        self.stopped = False

    def start(self) -> None:
        self.on_event(RunStarted(len(self.steps), sum(1 for s in self.steps if s.upgrade)))
        for index, step in enumerate(self.steps):
            if not step.upgrade:
                self.record(index, skipped(step))

    def record(self, index: int, result: TargetResult) -> None:
        self.results[index] = result
        self.on_event(TargetFinished(result))

    def finish(self, schedule: Schedule, index: int, result: TargetResult) -> None:
        """Record a executed target; skip what can no longer run."""
        self.record(index, result)
        failed = result.outcome is Outcome.FAILED
        for blocked in schedule.finish(index, not failed):
            self.record(blocked, skipped(self.steps[blocked], DEPENDENCY_NOTE))
        if failed and self.fail_fast:
            self.stopped = True

    def close(self, schedule: Schedule, note: str = FAIL_FAST_NOTE) -> list[TargetResult]:
        """Every step not run (``--fail-fast``) is reported skipped; results in plan order."""
        while (index := schedule.next_ready()) is not None:
            self.record(index, skipped(self.steps[index], note))
        for index, result in enumerate(self.results):
            if result is None:
                self.record(index, skipped(self.steps[index], note))
        return [r for r in self.results if r is not None]

    def interrupted(self, schedule: Schedule, in_flight: list[int]) -> RunInterrupted:
        """Targets cut off by Ctrl-C fail (rolled back); the rest are reported not started."""
        for index in in_flight:
            if self.results[index] is None:
                step = self.steps[index]
                self.record(index, TargetResult(
                    step.target, Outcome.FAILED, step.status.current, step.status.current,
                    error=INTERRUPTED_ERROR, hint="run 'fleet migrate' again to finish"))
        return RunInterrupted(self.close(schedule, INTERRUPTED_NOTE))


class SerialExecutor:
    """Runs targets in schedule order in the current process."""

    def __init__(self, work: Work, *, fail_fast: bool = False) -> None:
        self.work = work
        self.fail_fast = fail_fast

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]:
        book = RunProgress(steps, on_event, self.fail_fast)
        book.start()
        index = None
        try:
            while not book.stopped and (index := schedule.next_ready()) is not None:
                on_event(TargetStarted(steps[index].target))
                book.finish(schedule, index, self.work(steps[index]))
                index = None
        except KeyboardInterrupt:
            raise book.interrupted(schedule, [index] if index is not None else []) from None
        return book.close(schedule)
