"""The errors the Alembic gateway raises while a target migrates.

They live apart from the modules that import Alembic, so that the execution code can catch
them without importing Alembic: a command that migrates nothing (``status``, a ``migrate``
with nothing pending, a tenant copied from its reference) then never loads it.
"""

from __future__ import annotations


class RevisionFailed(Exception):
    """A revision raised while a target was migrating; wraps the original error.

    ``location`` is where in the revision's file it was raised (``versions/x.py, line 12,
    in upgrade``), when a frame of that file was on the way: plain Alembic shows the whole
    traceback, and without the line a ``RuntimeError: boom`` names nothing to fix."""

    def __init__(self, revision: str | None, error: BaseException,
                 location: str | None = None) -> None:
        super().__init__(str(error))
        self.revision = revision
        self.error = error
        self.location = location


class ReplayFailed(Exception):
    """A replayed statement failed; names the revision it belongs to."""

    def __init__(self, revision: str | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.revision = revision
        self.error = error


class TransactionRolledBack(Exception):
    """A revision rolled the target's transaction back itself: with a ``ROLLBACK``
    statement, or from Python (the connection's or an ORM session's ``rollback()``)."""
