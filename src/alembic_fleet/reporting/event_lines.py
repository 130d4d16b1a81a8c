"""``--progress json``: one JSON object per line on stderr for each event of a run.

For programs that follow a run as it goes (a deploy tool, a log pipeline), while stdout
keeps the final report (``--json``: one object). Each line is a compact object with an
``event`` and a ``time`` (Unix seconds):

* ``run_started``: ``targets``, ``to_migrate``;
* ``target_started``: ``service``, ``tenant``, ``schema``, ``database`` (password masked);
* ``target_finished``: the same, and ``outcome``, ``from``, ``to``, ``seconds``,
  ``attempts``, ``retries`` (reasons), ``lock_wait_seconds``, ``revisions`` (``revision``,
  ``seconds``), ``via``, ``error``, ``hint``, ``note``;
* ``run_stopped``: ``reason`` (``deadline``, ``max_failures``, ``canary``) and ``detail``:
  no new target starts; those in flight finish, the rest is pending;
* ``target_deferred``: the target, and ``error``, ``attempts``, ``retry_after`` (seconds):
  it hit a lock timeout and starts again after the others (a ``target_started`` follows);
* ``warning``: ``message`` (e.g. a Pushgateway that did not answer);
* ``run_finished``: ``exit_code``, ``stopped_by_budget``, ``seconds``, the counts by
  outcome, and ``error`` when the command failed before or outside the run.

Lines that are not JSON (a revision's own ``print``, a library's log) may come between
them, since stderr is shared: skip lines that do not parse as an object.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from alembic_fleet.execution.events import (
    Event,
    RunStarted,
    RunStopped,
    TargetDeferred,
    TargetFinished,
    TargetStarted,
)
from alembic_fleet.model.status import Outcome
from alembic_fleet.model.targets import Target
from alembic_fleet.redact import display, mask_urls, scrub


def _target(target: Target) -> dict[str, Any]:
    return {"service": target.service, "tenant": target.tenant, "schema": target.schema,
            "database": display(target.database)}


class EventLines:
    """Writes the JSON lines of one run."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.started = time.time()
        self.counts = {outcome: 0 for outcome in Outcome}
        self.ran = False
        self.stopped = False

    def _write(self, kind: str, **fields: Any) -> None:
        stream = self.stream or sys.stderr
        line = json.dumps({"event": kind, "time": round(time.time(), 3), **fields},
                          separators=(",", ":"), default=str)
        stream.write(mask_urls(line) + "\n")
        stream.flush()

    def event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.ran = True
            self._write("run_started", targets=event.total, to_migrate=event.to_migrate)
        elif isinstance(event, TargetStarted):
            self._write("target_started", **_target(event.target))
        elif isinstance(event, RunStopped):
            self.stopped = True
            self._write("run_stopped", reason=event.reason, detail=event.detail)
        elif isinstance(event, TargetDeferred):
            result = event.result
            self._write("target_deferred", **_target(result.target),
                        error=scrub(result.error) if result.error else None,
                        attempts=result.attempts,
                        retry_after=round(result.retry_after or 0.0, 3))
        elif isinstance(event, TargetFinished):
            result = event.result
            self.counts[result.outcome] += 1
            self._write(
                "target_finished", **_target(result.target), outcome=result.outcome.value,
                **{"from": list(result.from_revs)}, to=list(result.to_revs),
                seconds=round(result.seconds, 4), attempts=result.attempts,
                retries=list(result.retried), lock_wait_seconds=round(result.lock_wait, 4),
                revisions=[{"revision": t.revision, "seconds": round(t.seconds, 4)}
                           for t in result.revisions],
                via=result.via, error=scrub(result.error) if result.error else None,
                hint=result.hint, note=result.note)

    def warning(self, message: str) -> None:
        self._write("warning", message=scrub(message))

    def finished(self, code: int, *, budget_exit: int, error: str | None = None) -> None:
        """The last line, when a run happened or the command failed."""
        if not self.ran and code == 0:
            return
        fields: dict[str, Any] = {o.value: n for o, n in self.counts.items()}
        if error:
            fields["error"] = scrub(error)
        self._write("run_finished", exit_code=code,
                    stopped_by_budget=self.stopped or code == budget_exit,
                    seconds=round(time.time() - self.started, 3), **fields)


def warn(message: str) -> None:
    """A telemetry warning for people, on stderr (also under ``--json``, whose stdout it
    leaves alone)."""
    sys.stderr.write(f"warning: {scrub(message)}\n")
    sys.stderr.flush()
