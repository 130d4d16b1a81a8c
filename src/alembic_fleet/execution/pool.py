"""Run targets in a pool of worker processes.

Alembic's ``context`` and ``op`` are process-global, so parallel migrations need processes,
not threads. Each worker builds its work object once (scripts loaded once, one connection per
database for its whole life) and asks for the next target when it is idle, so one slow
tenant never holds up a batch. Every worker has its own pipe: a worker killed at any moment
cannot wedge a shared queue, and its death is reported as the failure of the target it held;
a replacement worker takes over the rest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from alembic_fleet.execution.events import EventSink, TargetStarted
from alembic_fleet.execution.executor import RunProgress, Work
from alembic_fleet.model.schedule import Schedule
from alembic_fleet.model.status import Outcome, Step, TargetResult


def _context() -> Any:
    """fork where available: workers inherit the loaded scripts and start in milliseconds."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin"
                                       else "spawn")


def _worker_main(conn: Connection, make_work: Callable[[], Work]) -> None:
    """A worker: build the work once, then run targets until told to stop."""
    work = make_work()
    try:
        while True:
            message = conn.recv()
            if message is None:
                break
            index, step = message
            conn.send((index, work(step)))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        close = getattr(work, "close", None)
        if close:
            close()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    index: int | None = None


class PoolExecutor:
    """Runs steps on ``jobs`` worker processes, following the schedule."""

    def __init__(self, make_work: Callable[[], Work], *, jobs: int, fail_fast: bool = False,
                 settle: Callable[[Step], TargetResult | None] | None = None) -> None:
        self.make_work = make_work
        self.jobs = max(1, jobs)
        self.fail_fast = fail_fast
        self.settle = settle
        """Finds out what happened to the target of a worker that died (None: unknown)."""
        self._context = _context()

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]:
        book = RunProgress(steps, on_event, self.fail_fast)
        book.start()
        runnable = sum(1 for s in steps if s.upgrade)
        workers: list[_Worker] = []
        try:
            for _ in range(min(self.jobs, runnable)):
                workers.append(self._spawn())
            while True:
                for worker in workers:
                    if worker.index is None:
                        self._dispatch(worker, steps, schedule, book)
                if not any(w.index is not None for w in workers):
                    break
                busy = [w for w in workers if w.index is not None]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.conn in ready or worker.conn.poll():
                        try:
                            index, result = worker.conn.recv()
                        except (EOFError, OSError):
                            pass  # died mid-send: handled as a dead worker below
                        else:
                            worker.index = None
                            book.finish(schedule, index, result)
                            continue
                    if worker.process.sentinel in ready or not worker.process.is_alive():
                        replacement = self._bury(worker, steps, schedule, book)
                        workers.remove(worker)
                        if replacement is not None:
                            workers.append(replacement)
        except KeyboardInterrupt:
            raise self._interrupt(workers, book, schedule) from None
        finally:
            self._shutdown(workers)
        return book.close(schedule)

    def _interrupt(self, workers: list[_Worker], book: RunProgress, schedule: Schedule
                   ) -> Exception:
        """Ctrl-C: make busy workers roll back and stop; keep what they finished."""
        busy = [w for w in workers if w.index is not None]
        for worker in busy:
            with contextlib.suppress(OSError):
                os.kill(worker.process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        for worker in busy:
            worker.process.join(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(EOFError, OSError):
                while worker.conn.poll():
                    index, result = worker.conn.recv()
                    if index == worker.index:
                        book.finish(schedule, index, result)
                        worker.index = None
            if worker.process.is_alive():
                worker.process.kill()
        return book.interrupted(schedule, [w.index for w in busy if w.index is not None])

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.make_work),
                                        name="fleet-worker", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _dispatch(self, worker: _Worker, steps: Sequence[Step], schedule: Schedule,
                  book: RunProgress) -> None:
        if book.stopped:
            return
        index = schedule.next_ready()
        if index is None:
            return
        worker.index = index
        book.on_event(TargetStarted(steps[index].target))
        worker.conn.send((index, steps[index]))

    def _bury(self, worker: _Worker, steps: Sequence[Step], schedule: Schedule,
              book: RunProgress) -> _Worker | None:
        """A worker died: fail the target it held, and start a replacement if work remains."""
        worker.process.join(5)
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if worker.index is not None:
            index, worker.index = worker.index, None
            step = steps[index]
            result = self._settled(step) or TargetResult(
                step.target, Outcome.FAILED, step.status.current, step.status.current,
                error=f"the worker process migrating this target died ({how}); its "
                "transaction was rolled back by the server",
                hint="run 'fleet migrate' again: only failed and pending targets run",
            )
            book.finish(schedule, index, result)
        worker.conn.close()
        if book.stopped or schedule.exhausted:
            return None
        return self._spawn()

    def _settled(self, step: Step) -> TargetResult | None:
        """What the database says happened to a dead worker's target, when it knows."""
        if self.settle is None:
            return None
        try:
            return self.settle(step)
        except Exception:  # the database may be what killed the worker: stay with unknown
            return None

    @staticmethod
    def _shutdown(workers: list[_Worker]) -> None:
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in workers:
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
