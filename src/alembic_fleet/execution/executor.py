"""Executors decide where targets run; they never print.

:class:`SerialExecutor` runs targets one after another in this process;
:class:`alembic_fleet.execution.pool.PoolExecutor` runs them in worker processes. Both follow
the same :class:`~alembic_fleet.model.schedule.Schedule` and report through events.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from alembic_fleet.exceptions import Terminated
from alembic_fleet.execution.events import (
    EventSink,
    RunStarted,
    RunStopped,
    TargetDeferred,
    TargetFinished,
    TargetStarted,
)
from alembic_fleet.model.budget import Budget
from alembic_fleet.model.outcome import RunEnd
from alembic_fleet.model.schedule import Schedule
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    gave_up,
    overlap_error,
    overlap_hint,
)
from alembic_fleet.stopping import hold_signals
from alembic_fleet.wording import counted

Work = Callable[[Step, int], TargetResult]
"""Migrates a step's target; the int is how many attempts were made before."""

FAIL_FAST_NOTE = "not started: an earlier target failed (--fail-fast)"
DEPENDENCY_NOTE = "not started: a service it depends on failed for this tenant"
INTERRUPTED_NOTE = "not started: the run was interrupted"
INTERRUPTED_ERROR = "interrupted: its transaction was rolled back"


class RunInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM during a run; carries every target's result so far."""

    def __init__(self, results: list[TargetResult], *, terminated: bool = False) -> None:
        super().__init__("terminated" if terminated else "interrupted")
        self.results = results
        self.terminated = terminated


class Executor(Protocol):
    """Runs a plan's steps and reports each result through ``on_event``."""

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]: ...


def skipped(step: Step, reason: str = "") -> TargetResult:
    """The result of a step that was not executed: failed when its version table is one
    Alembic refuses (no run may pass over it in silence)."""
    current = step.status.current
    if step.status.overlapping and not reason:
        return TargetResult(step.target, Outcome.FAILED, current, current, 0.0,
                            error=overlap_error(step.status), hint=overlap_hint(step.status))
    return TargetResult(step.target, Outcome.SKIPPED, current, current, 0.0,
                        note=reason or step.reason)


class RunProgress:
    """Every step's result by index, filled in as targets finish; shared by the executors."""

    def __init__(self, steps: Sequence[Step], on_event: EventSink, fail_fast: bool,
                 budget: Budget | None = None, canary: frozenset[int] = frozenset()) -> None:
        self.steps = steps
        self.on_event = on_event
        self.fail_fast = fail_fast
        self.results: list[TargetResult | None] = [None] * len(steps)
        self.stopped = False
        self.stopped_by: RunEnd | None = None
        """Set when a budget or the canary wave stopped the run (see :meth:`stop`)."""
        self.stop_detail: str | None = None
        self.down: dict[str, str] = {}
        """Databases found unreachable during the run (key -> reason): their remaining
        targets fail at once instead of each waiting through its retries."""
        self.budget = budget or Budget()
        self._given_back: deque[int] = deque()
        self._canary = canary
        self._canary_left = {i for i in canary if steps[i].upgrade}
        """Canary targets not finished yet: the other targets wait for them."""
        self._parked: deque[int] = deque()
        """Targets that waited for the canary wave, in the order they came."""
        self._failed = 0
        self._runnable = sum(1 for s in steps if s.upgrade)
        self._later: list[tuple[float, int]] = []
        """Targets that came back after a lock timeout: (not before, index), a heap; they
        start again once the schedule has nothing else ready."""
        self._tries: dict[int, int] = {}
        self._last: dict[int, TargetResult] = {}
        self._carried: dict[int, tuple[tuple[str, ...], float]] = {}
        """Retry reasons and lock waits of the attempts before a target came back."""

    def start(self) -> None:
        self.on_event(RunStarted(len(self.steps), sum(1 for s in self.steps if s.upgrade)))
        for index, step in enumerate(self.steps):
            if not step.upgrade:
                self.record(index, skipped(step))

    def record(self, index: int, result: TargetResult) -> None:
        """Keep a target's result and report it.

        The run keeps every result until its report: at 30,000 targets a result that came
        from a worker held its own copy of the target and fifteen revision timings, 150 MB
        in all. So a result shares its step's target, and its timings, which only the
        event's listeners use (metrics, traces, event lines), are dropped once they had
        them: 14 MB."""
        step = self.steps[index]
        if result.target is not step.target and result.target == step.target:
            result.target = step.target
        self.results[index] = result
        self.on_event(TargetFinished(result))
        result.revisions = ()

    def next_step(self, schedule: Schedule) -> int | None:
        """The next step to start: one given back first, then the schedule's next ready
        step; steps on a database known to be down fail at once, with its reason."""
        while not self.stopped:
            index = self._given_back.popleft() if self._given_back else schedule.next_ready()
            if index is None and self._later and self._later[0][0] <= time.monotonic():
                index = heapq.heappop(self._later)[1]
            if index is None:
                return None
            if self._canary_left and index not in self._canary:
                self._parked.append(index)  # starts once the canary wave succeeded
                continue
            step = self.steps[index]
            if not self.budget.time_for(step.target.service, time.monotonic()):
                self._given_back.appendleft(index)
                self.stop(RunEnd.DEADLINE, "stopped at its deadline: the time left was "
                          f"shorter than the next target's expected "
                          f"{self.budget.expected_seconds(step.target.service):.1f}s")
                return None
            reason = self.down.get(step.target.database.key)
            if reason is None:
                return index
            current = step.status.current
            self.finish(schedule, index, TargetResult(
                step.target, Outcome.FAILED, current, current, error=reason,
                hint="not tried: its database was found unreachable earlier in this run; "
                "run 'fleet migrate' again once it is back", database_down=True))
        return None

    def stop(self, end: RunEnd, detail: str) -> None:
        """Start no more targets; those not started are reported pending."""
        if self.stopped_by is None:
            self.stopped, self.stopped_by, self.stop_detail = True, end, detail
            self.on_event(RunStopped(end.value.removeprefix("stopped_"), detail))

    def has_work(self, schedule: Schedule) -> bool:
        """Whether any step is still waiting to start."""
        return bool(self._given_back or self._parked or self._later) or not schedule.exhausted

    def tries(self, index: int) -> int:
        """Attempts already made at a step (it came back after lock timeouts)."""
        return self._tries.get(index, 0)

    def later_in(self) -> float | None:
        """Seconds until a target that came back may start again (None: none waits)."""
        if not self._later or self.stopped:
            return None
        return max(0.0, self._later[0][0] - time.monotonic())

    def give_back(self, index: int) -> None:
        """A step handed to a worker that never started it: it runs again later."""
        self._given_back.append(index)

    def finish(self, schedule: Schedule, index: int, result: TargetResult) -> None:
        """Record an executed target; skip what can no longer run. A target that hit a
        lock timeout with retries left (``retry_after``) goes to the back of the queue."""
        if result.retry_after is not None:
            self._tries[index] = result.attempts
            self._last[index] = result
            previous = self._carried.get(index, ((), 0.0))
            self._carried[index] = (previous[0] + result.retried,
                                    previous[1] + result.lock_wait)
            heapq.heappush(self._later, (time.monotonic() + result.retry_after, index))
            self.on_event(TargetDeferred(result))
            return
        if index in self._carried:  # the attempts before it came back count too
            retried, lock_wait = self._carried.pop(index)
            result.retried, result.lock_wait = retried + result.retried, (
                lock_wait + result.lock_wait)
        if result.database_down and result.error:  # why, not how often this one tried
            self.down.setdefault(result.target.database.key,
                                 result.error.removesuffix(gave_up(result.attempts)))
        self.record(index, result)
        failed = result.outcome is Outcome.FAILED
        for blocked in schedule.finish(index, not failed):
            self.record(blocked, skipped(self.steps[blocked], DEPENDENCY_NOTE))
        if result.outcome is Outcome.MIGRATED:
            self.budget.observe(result.target.service, result.seconds)
        if failed:
            self._failed += 1
            if index in self._canary:
                self.stop(RunEnd.CANARY, f"stopped: {result.target.label} of the canary "
                          "wave failed")
            elif self.budget.failures_exceeded(self._failed, self._runnable):
                self.stop(RunEnd.MAX_FAILURES,
                          f"stopped: {counted(self._failed, 'target')} failed, more than "
                          f"the {self.budget.failure_limit(self._runnable)} allowed "
                          "(--max-failures)")
        if failed and self.fail_fast:
            self.stopped = True
        if index in self._canary_left:
            self._canary_left.discard(index)
            if not self._canary_left and not self.stopped:
                self._given_back.extend(self._parked)  # the canary wave succeeded
                self._parked.clear()

    def close(self, schedule: Schedule, note: str = FAIL_FAST_NOTE) -> list[TargetResult]:
        """Every step not run is reported: pending when a budget or the canary stopped the
        run (a rerun resumes), else skipped (``--fail-fast``); results in plan order."""
        if self._parked and self.stopped_by is None and note != INTERRUPTED_NOTE:
            # The canary wave could not finish (it waits for a target outside it): stop.
            self.stop(RunEnd.CANARY, "stopped: the canary wave could not finish, a target "
                      "in it waits for targets outside it (a service's depends_on)")
        def unstarted(index: int) -> TargetResult:
            if self.stopped_by is None or note == INTERRUPTED_NOTE:
                return skipped(self.steps[index], note)
            current = self.steps[index].status.current
            return TargetResult(self.steps[index].target, Outcome.PENDING, current, current,
                                note=f"not started: the run {self.stop_detail}; "
                                "run 'fleet migrate' again to resume")
        for index in [*self._given_back, *self._parked]:
            self.record(index, unstarted(index))
        self._given_back.clear()
        self._parked.clear()
        while self._later:  # came back after a lock timeout and never got another go
            index = heapq.heappop(self._later)[1]
            self.record(index, unstarted(index) if self.stopped_by else skipped(
                self.steps[index], f"{note} (it was waiting to try again after: "
                f"{self._last[index].error})"))
        while (index := schedule.next_ready()) is not None:
            self.record(index, unstarted(index))
        for index, result in enumerate(self.results):
            if result is None:
                self.record(index, unstarted(index))
        return [r for r in self.results if r is not None]

    def interrupted(self, schedule: Schedule, in_flight: list[int], cause: BaseException
                    ) -> RunInterrupted:
        """Targets cut off by Ctrl-C or SIGTERM fail (rolled back); the rest are reported
        not started."""
        for index in in_flight:
            if self.results[index] is None:
                step = self.steps[index]
                self.record(index, TargetResult(
                    step.target, Outcome.FAILED, step.status.current, step.status.current,
                    error=INTERRUPTED_ERROR, hint="run 'fleet migrate' again to finish"))
        return RunInterrupted(self.close(schedule, INTERRUPTED_NOTE),
                              terminated=isinstance(cause, Terminated))


class SerialExecutor:
    """Runs targets in schedule order in the current process."""

    def __init__(self, work: Work, *, fail_fast: bool = False, budget: Budget | None = None,
                 canary: frozenset[int] = frozenset()) -> None:
        self.work = work
        self.fail_fast = fail_fast
        self.budget = budget
        self.canary = canary
        self.book: RunProgress | None = None

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]:
        book = self.book = RunProgress(steps, on_event, self.fail_fast, self.budget,
                                       self.canary)
        book.start()
        index = None
        try:
            while True:
                index = book.next_step(schedule)
                if index is None:
                    pause = book.later_in()
                    if pause is None:
                        break
                    time.sleep(pause)  # only targets that came back are left: wait for them
                    continue
                on_event(TargetStarted(steps[index].target))
                book.finish(schedule, index, self.work(steps[index], book.tries(index)))
                index = None
        except KeyboardInterrupt as cause:
            hold_signals()
            raise book.interrupted(schedule, [index] if index is not None else [],
                                   cause) from None
        return book.close(schedule)
