"""The one table of process exit codes (the contract, DESIGN section 4), and the one
function that decides a command's exit code from what it returned or raised."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from alembic_fleet.exceptions import (
    Aborted,
    ChangedRevisionError,
    DatabaseUnavailableError,
    FleetError,
    LedgerError,
    NotUpToDateError,
    RevisionError,
    Terminated,
    UsageError,
)
from alembic_fleet.model.outcome import RunEnd, RunOutcome


class ExitCode(IntEnum):
    """Exit codes of every ``fleet`` command."""

    OK = 0
    """Success."""
    FAILED = 1
    """An operation failed (a target's migration, a server start, a declined confirmation)."""
    USAGE = 2
    """Usage or configuration error: nothing was executed."""
    NOT_UP_TO_DATE = 3
    """Some target is not at head, or ``check`` found problems."""
    STOPPED_EARLY = 4
    """A run stopped starting targets because of its time budget (``--deadline``), with no
    target failed: the rest is pending, and a rerun resumes."""
    INTERRUPTED = 130
    """Interrupted by the user (Ctrl-C)."""
    TERMINATED = 143
    """Terminated (SIGTERM, as Kubernetes stops a pod)."""


ERRORS: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (Terminated, ExitCode.TERMINATED),
    (KeyboardInterrupt, ExitCode.INTERRUPTED),
    (UsageError, ExitCode.USAGE),  # ConfigError and InvalidTenantError too
    (DatabaseUnavailableError, ExitCode.USAGE),
    (RevisionError, ExitCode.USAGE),
    (ChangedRevisionError, ExitCode.USAGE),
    (LedgerError, ExitCode.USAGE),
    (NotUpToDateError, ExitCode.NOT_UP_TO_DATE),
    (Aborted, ExitCode.FAILED),
    (FleetError, ExitCode.FAILED),
)
"""Each kind of error and its code; the first matching class wins. Anything else is 1."""

_ENDS = {RunEnd.INTERRUPTED: ExitCode.INTERRUPTED, RunEnd.TERMINATED: ExitCode.TERMINATED}


def exit_code(value: Any) -> ExitCode:
    """The exit code for what a command produced: an error, a run, or a report.

    * an exception: by :data:`ERRORS`;
    * a :class:`RunOutcome`: 130 / 143 when interrupted or terminated, 1 when a target
      failed, 4 when it stopped at its deadline, else 0;
    * an inventory: 2 when a service's scripts could not be loaded, else 0 when every
      target is at head, else 3;
    * anything with ``failed`` (a check report): 3 when true, else 0;
    * None: 0.
    """
    if isinstance(value, BaseException):
        return next((code for kind, code in ERRORS if isinstance(value, kind)), ExitCode.FAILED)
    if isinstance(value, RunOutcome):
        if value.end in _ENDS:
            return _ENDS[value.end]
        if value.failed:  # a failure outweighs an early stop (canary, max-failures)
            return ExitCode.FAILED
        return ExitCode.STOPPED_EARLY if value.end is RunEnd.DEADLINE else ExitCode.OK
    if getattr(value, "unloadable", None):
        return ExitCode.USAGE  # a service's scripts could not be loaded: fix them first
    if hasattr(value, "up_to_date"):
        return ExitCode.OK if value.up_to_date else ExitCode.NOT_UP_TO_DATE
    if hasattr(value, "failed"):
        return ExitCode.NOT_UP_TO_DATE if value.failed else ExitCode.OK
    return ExitCode.OK
