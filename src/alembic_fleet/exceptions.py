"""Every error fleet reports on purpose.

Each exception carries structured fields (what failed, where, and a hint saying what to do
next) so that the reporting layer can print it for people or as JSON, and the CLI can map it
to one exit code. This module imports nothing from the rest of the package on purpose.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base class: a failure fleet understands and can explain.

    ``hint`` tells the user what to do next. Which exit code each kind of error means is
    decided in one table, :mod:`alembic_fleet.exit_codes`, not here.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class Terminated(KeyboardInterrupt):
    """SIGTERM (Kubernetes stopping a pod): handled like Ctrl-C, reported as terminated."""


class UsageError(FleetError):
    """The command line or its arguments are wrong; nothing was executed."""


class ConfigError(UsageError):
    """The configuration is missing or invalid; names the file, the key and what is expected."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        parts = []
        if file:
            parts.append(file)
        if key:
            parts.append(f"key '{key}'")
        where = ": ".join(parts)
        text = f"{where}: {message}" if where else message
        if expected:
            text += f" (expected {expected})"
        super().__init__(text, hint=hint)
        self.reason = message
        """The message without the file and key (a command's own argument was at fault)."""
        self.file = file
        self.key = key
        self.expected = expected


class InvalidTenantError(UsageError):
    """A tenant name or the schema name made from it is not acceptable."""


class DatabaseUnavailableError(FleetError):
    """The database could not be reached or refused the connection.

    Counts as a usage/configuration error: nothing was executed.
    """


class RevisionError(FleetError):
    """A revision given by the user, or the revision graph of a service, is invalid."""


class BaselineError(RevisionError):
    """A service's baseline could not be loaded or failed on a fresh schema (which was then
    not created: the baseline runs in the schema's first transaction)."""


class ChangedRevisionError(FleetError):
    """A revision file changed after it was applied; migrate refuses to run (nothing ran)."""


class LedgerError(FleetError):
    """The ledger could not be created or written at the start of a run (nothing ran)."""


class NotUpToDateError(FleetError):
    """Some schema is not at the revision the caller requires (the start-up guard)."""


class EmbeddedServerError(FleetError):
    """The embedded PostgreSQL could not be installed, started, stopped or reset."""


class Aborted(FleetError):
    """The user declined a confirmation; nothing was changed."""
