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
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from alembic_fleet import interpreters
from alembic_fleet.exceptions import FleetError
from alembic_fleet.execution.events import EventSink, TargetStarted
from alembic_fleet.execution.executor import RunProgress, Work
from alembic_fleet.model.budget import Budget
from alembic_fleet.model.schedule import Schedule
from alembic_fleet.model.status import Outcome, Step, TargetResult
from alembic_fleet.model.targets import Service
from alembic_fleet.stopping import hold_signals


def _context() -> Any:
    """fork where available: workers inherit the loaded scripts and start in milliseconds."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin"
                                       else "spawn")


def _worker_main(conn: Connection, make_work: Callable[[], Work], parent: int) -> None:
    """A forked worker (see :func:`worker_loop`)."""
    worker_loop(conn, make_work, parent)


def worker_loop(conn: Connection, make_work: Callable[[], Work], parent: int) -> None:
    """A worker: build the work once, then run targets until told to stop.

    Forked workers and workers in a service's own interpreter
    (:mod:`alembic_fleet.remote`) both run this loop.

    It says ``started`` before it touches a target, so that the parent knows whether a
    worker that died had begun (its target may have changed) or not (it simply runs
    elsewhere). It dies with its parent. It ignores SIGINT and SIGTERM, which a terminal or
    a pod's stop sends to the whole process group: stopping is the parent's decision (see
    :meth:`PoolExecutor._interrupt`), never an exception raised in the middle of a driver
    call, where the driver's own cancellation handling may swallow it and let the target
    commit after all.
    """
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    work = make_work()
    try:
        while True:
            message = conn.recv()
            if message is None:
                break
            index, step, tries = message
            conn.send(("started", index, None))
            conn.send(("done", index, work(step, tries)))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        close = getattr(work, "close", None)
        if close:
            close()


def _die_with_parent(parent: int) -> None:
    """Make the kernel kill this worker when the parent dies (Linux), else watch for it.

    A worker outliving a SIGKILLed parent would hold its server session (and maybe a
    transaction and its locks) for as long as its current target takes, unseen by anyone.
    SIGKILL is enough: the server rolls back a transaction whose client vanished.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the call
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="fleet-parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1


Lane = tuple[tuple[str, ...], Path] | None
"""Which workers may run a step: None for fleet's own (forked) workers, else the service
interpreter's command and folder (see :mod:`alembic_fleet.interpreters`)."""


@dataclass
class _Worker:
    process: Any
    conn: Connection
    lane: Lane = None
    index: int | None = None
    """The step handed to this worker, if any."""
    started: bool = False
    """Whether the worker said it started that step."""


class PoolExecutor:
    """Runs steps on ``jobs`` worker processes, following the schedule."""

    def __init__(self, make_work: Callable[[], Work], *, jobs: int, fail_fast: bool = False,
                 settle: Callable[[Step], TargetResult | None] | None = None,
                 record_failed: Callable[[TargetResult], None] | None = None,
                 own_python: Mapping[str, Service] | None = None,
                 budget: Budget | None = None, canary: frozenset[int] = frozenset()) -> None:
        self.make_work = make_work
        self.budget = budget
        self.canary = canary
        self.book: RunProgress | None = None
        self.jobs = max(1, jobs)
        self.fail_fast = fail_fast
        self.settle = settle
        """Finds out what happened to the target of a worker that died (None: unknown)."""
        self.record_failed = record_failed
        """Writes the ledger's failed row of such a target when it was rolled back: the
        worker that would have written it is dead (None: no ledger)."""
        self.own_python = dict(own_python or {})
        """Services whose targets run in workers of their own interpreter, by name."""
        self._deaths = 0
        self._max_deaths = 10 + 2 * self.jobs
        """Workers that keep dying (a broken environment) are not replaced forever."""
        self._context = _context()
        self._held: deque[int] = deque()
        """Steps taken from the schedule that wait for a worker of their lane."""
        self._passed_over = 0
        """How many later steps went before the oldest held one."""
        self._ahead = self.jobs + 8
        """How many steps the look-ahead holds, and how often its oldest may be passed over
        before an idle worker switches lanes for it."""
        self._broken: dict[Lane, str] = {}
        """Lanes whose interpreter could not start a worker, with the reason."""
        self._lifeline: interpreters.Lifeline | None = None

    def run(self, steps: Sequence[Step], schedule: Schedule, on_event: EventSink
            ) -> list[TargetResult]:
        book = self.book = RunProgress(steps, on_event, self.fail_fast, self.budget,
                                       self.canary)
        book.start()
        workers: list[_Worker] = []
        try:
            if not self.own_python:  # one lane: start every worker now, as the first
                runnable = sum(1 for s in steps if s.upgrade)  # targets are being sent
                for _ in range(min(self.jobs, runnable)):
                    workers.append(self._spawn(None, steps[0]))
            while True:
                self._fill(workers, steps, schedule, book)
                busy = [w for w in workers if w.index is not None]
                pause = book.later_in()  # targets that came back after a lock timeout
                if not busy:
                    if pause is None:
                        break
                    time.sleep(pause)
                    continue
                # A target due again waits for a worker like any other (0: none is free).
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                             pause or None)
                for worker in busy:
                    if self._receive(worker, ready, schedule, book):
                        continue
                    if worker.process.sentinel in ready or not worker.process.is_alive():
                        self._replace(worker, workers, steps, schedule, book)
        except KeyboardInterrupt as cause:
            hold_signals()
            raise self._interrupt(workers, book, schedule, cause) from None
        finally:
            self._shutdown(workers)
            if self._lifeline is not None:
                self._lifeline.close()
        while self._held:
            book.give_back(self._held.popleft())
        return book.close(schedule)

    def _receive(self, worker: _Worker, ready: list[Any], schedule: Schedule,
                 book: RunProgress) -> bool:
        """Read what the worker sent; True when it sent something."""
        if not (worker.conn in ready or worker.conn.poll()):
            return False
        got = False
        try:
            while worker.conn.poll():
                kind, index, result = worker.conn.recv()
                got = True
                if kind == "started":
                    worker.started = True
                else:
                    worker.index, worker.started = None, False
                    book.finish(schedule, index, result)
        except (EOFError, OSError):
            return got  # died mid-send: handled as a dead worker by the caller
        return got

    def _interrupt(self, workers: list[_Worker], book: RunProgress, schedule: Schedule,
                   cause: BaseException) -> Exception:
        """Ctrl-C or SIGTERM: stop at once. Busy workers are killed (the server rolls back
        their open transaction when their connection goes); what they had finished is kept;
        a target whose COMMIT may have got through is settled from the database, like the
        target of any worker that died."""
        busy = [w for w in workers if w.index is not None]
        for worker in busy:
            with contextlib.suppress(OSError):
                worker.process.kill()
        for worker in busy:
            worker.process.join(5)
            with contextlib.suppress(EOFError, OSError):
                while worker.conn.poll():
                    kind, index, result = worker.conn.recv()
                    if kind == "started":
                        worker.started = True
                    elif index == worker.index:
                        book.finish(schedule, index, result)
                        worker.index = None
        in_flight = []
        for worker in busy:
            if worker.index is None or not worker.started:
                continue
            settled = self._settled(book.steps[worker.index])
            if settled is not None:
                book.finish(schedule, worker.index, settled)
            else:
                in_flight.append(worker.index)
        return book.interrupted(schedule, in_flight, cause)

    def _lane(self, step: Step) -> Lane:
        service = self.own_python.get(step.target.service)
        return None if service is None or service.python is None else (service.python,
                                                                      service.path)

    def _spawn(self, lane: Lane, step: Step) -> _Worker:
        """A new worker for ``lane``: forked from this process, or started in the service's
        interpreter (which may fail: FleetError)."""
        if lane is not None:
            if self._lifeline is None:
                self._lifeline = interpreters.Lifeline()
            service = self.own_python[step.target.service]
            process, conn = interpreters.start_worker(service, self.make_work, self._lifeline)
            return _Worker(process, conn, lane)
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main,
                                        args=(child, self.make_work, os.getpid()),
                                        name="fleet-worker", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _fill(self, workers: list[_Worker], steps: Sequence[Step], schedule: Schedule,
              book: RunProgress) -> None:
        """Hand ready steps to idle workers of their lane, in schedule order as far as the
        lanes allow (see :data:`Lane`).

        Steps are taken from the schedule into a short look-ahead (``_held``). A held step
        goes to an idle worker of its lane; failing that, to a new worker while there are
        fewer than ``jobs``; failing that, a later step that fits an idle worker goes first.
        An idle worker is swapped for one of another lane only when nothing else fits, or
        when the oldest held step has been passed over ``_ahead`` times: a lane switch costs
        a process start, but no lane may starve."""
        while True:
            if book.stopped:
                while self._held:
                    book.give_back(self._held.popleft())
                return
            idle = [w for w in workers if w.index is None]
            if not idle and len(workers) >= self.jobs:
                return
            placed = self._place_held(idle, workers, steps, schedule, book)
            if placed:
                continue
            if self._held and (len(workers) < self.jobs or (self._passed_over >= self._ahead
                                                             and idle)):
                if len(workers) >= self.jobs:
                    self._retire(idle[0], workers)
                self._start_for(self._held.popleft(), workers, steps, schedule, book)
                continue
            if len(self._held) < self._ahead:
                index = book.next_step(schedule)
                if index is not None:
                    self._held.append(index)
                    continue
            if self._held and idle:  # nothing else fits: switch a worker's lane
                self._retire(idle[0], workers)
                self._start_for(self._held.popleft(), workers, steps, schedule, book)
                continue
            return

    def _place_held(self, idle: list[_Worker], workers: list[_Worker], steps: Sequence[Step],
                    schedule: Schedule, book: RunProgress) -> bool:
        """Send the first held step that an idle worker's lane can run; True when sent."""
        for position, index in enumerate(self._held):
            lane = self._lane(steps[index])
            if lane in self._broken:
                del self._held[position]
                self._fail(index, steps[index], self._broken[lane], schedule, book)
                return True
            worker = next((w for w in idle if w.lane == lane), None)
            if worker is not None:
                del self._held[position]
                self._passed_over = self._passed_over + 1 if position else 0
                self._send(worker, index, workers, steps, schedule, book)
                return True
        return False

    def _start_for(self, index: int, workers: list[_Worker], steps: Sequence[Step],
                   schedule: Schedule, book: RunProgress) -> None:
        """Start a worker in the step's lane and send it the step (or fail the step when
        the lane's interpreter cannot start one)."""
        step = steps[index]
        lane = self._lane(step)
        self._passed_over = 0
        if lane in self._broken:
            self._fail(index, step, self._broken[lane], schedule, book)
            return
        if self._deaths > self._max_deaths:  # workers keep dying: stop replacing them
            book.give_back(index)
            book.stopped = True
            return
        try:
            worker = self._spawn(lane, step)
        except FleetError as exc:
            self._broken[lane] = exc.message
            self._fail(index, step, exc.message, schedule, book, exc.hint)
            return
        workers.append(worker)
        self._send(worker, index, workers, steps, schedule, book)

    def _send(self, worker: _Worker, index: int, workers: list[_Worker],
              steps: Sequence[Step], schedule: Schedule, book: RunProgress) -> None:
        worker.index, worker.started = index, False
        book.on_event(TargetStarted(steps[index].target))
        try:
            worker.conn.send((index, steps[index], book.tries(index)))
        except OSError:  # the worker died while idle: the step runs on another one
            worker.index = None
            self._held.appendleft(index)
            self._replace(worker, workers, steps, schedule, book)

    @staticmethod
    def _fail(index: int, step: Step, error: str, schedule: Schedule, book: RunProgress,
              hint: str | None = None) -> None:
        current = step.status.current
        book.finish(schedule, index, TargetResult(
            step.target, Outcome.FAILED, current, current, error=error,
            hint=hint or "not tried: no worker could be started in the service's "
            "interpreter; fix it and run 'fleet migrate' again"))

    @staticmethod
    def _retire(worker: _Worker, workers: list[_Worker]) -> None:
        """Stop an idle worker to make room for one of another lane."""
        workers.remove(worker)
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send(None)
        worker.process.join(10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def _replace(self, worker: _Worker, workers: list[_Worker], steps: Sequence[Step],
                 schedule: Schedule, book: RunProgress) -> None:
        """A worker died: settle its target (a replacement starts when a step needs one)."""
        workers.remove(worker)
        worker.process.join(5)
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if worker.index is not None and not worker.started:
            book.give_back(worker.index)  # never started: nothing happened to it
        elif worker.index is not None:
            step = steps[worker.index]
            result = self._settled(step)
            if result is None:
                result = TargetResult(
                    step.target, Outcome.FAILED, step.status.current, step.status.current,
                    error=f"the worker process migrating this target died ({how}); its "
                    "transaction was rolled back by the server",
                    hint="run 'fleet migrate' again: only failed and pending targets run",
                )
                if self.record_failed is not None:
                    with contextlib.suppress(Exception):  # the ledger never breaks a run
                        self.record_failed(result)
            book.finish(schedule, worker.index, result)
        worker.index = None
        with contextlib.suppress(OSError):
            worker.conn.close()
        self._deaths += 1  # a replacement starts when a step needs it (see _worker_for)

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
