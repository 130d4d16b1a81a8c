"""The one table of process exit codes (the contract, DESIGN section 4)."""

from __future__ import annotations

from enum import IntEnum


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
    INTERRUPTED = 130
    """Interrupted by the user (Ctrl-C)."""


def exit_code_for(error: BaseException) -> ExitCode:
    """Map an exception to its exit code; the CLI calls this in exactly one place."""
    from alembic_fleet.exceptions import FleetError

    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, FleetError):
        return ExitCode(error.exit_code)
    return ExitCode.FAILED
