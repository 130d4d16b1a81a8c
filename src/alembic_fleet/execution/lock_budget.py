"""One lock budget for a target's whole transaction, not one per statement.

``lock_timeout`` bounds each lock *wait*. A revision that alters three tables takes the
first table's ACCESS EXCLUSIVE lock at once, then may wait for the second, then for the
third: the application's queries on the first table wait behind all of it, up to three
lock timeouts. The promise is that they never wait longer than one. So from the first
statement that takes a strong lock, every later statement of the target gets as
``lock_timeout`` only what is left of the budget (``SET LOCAL``, issued only when it is at
least :data:`STEP` below the value in force, so a fast migration pays a handful of extra
round trips, not one per statement). When the budget is spent, the next statement that has
to wait for a lock gives up at once: the target rolls back, releasing the first table, and
is retried after a back-off.

A statement takes a strong lock when it alters, drops, truncates, locks, reindexes or
comments on an existing object, or creates an index (not concurrently) or a trigger on one;
plain DML and ``CREATE TABLE`` do not block the application's reads and writes.
"""

from __future__ import annotations

import re
import time
from typing import Any

STRONG = re.compile(
    r"^\s*(?:ALTER|DROP|TRUNCATE|LOCK|REINDEX|CLUSTER|COMMENT|VACUUM\s+FULL"
    r"|CREATE\s+(?:UNIQUE\s+)?INDEX(?!\s+CONCURRENTLY)|CREATE\s+(?:OR\s+REPLACE\s+)?"
    r"(?:CONSTRAINT\s+)?TRIGGER)\b",
    re.IGNORECASE)
"""Statements that take a lock the application's queries would queue behind."""

STEP = 0.1
"""Seconds the budget must have shrunk before ``lock_timeout`` is set again."""


class LockBudget:
    """Tracks one target attempt's lock budget on its connection."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._started: float | None = None
        self._in_force: float | None = None

    def before(self, cursor: Any, statement: str) -> None:
        """Called before each statement of the target, with a DB-API cursor."""
        if self.seconds <= 0:
            return
        if self._started is None:
            if not STRONG.match(statement):
                return
            self._started = time.monotonic()
            return  # the first strong statement waits the whole budget, as configured
        left = max(0.001, self.seconds - (time.monotonic() - self._started))
        if self._in_force is None or self._in_force - left >= STEP:
            cursor.execute(f"SET LOCAL lock_timeout = '{int(left * 1000)}ms'")
            self._in_force = left

    def committed(self) -> None:
        """A COMMIT ended the transaction (``autocommit_block``, one transaction per
        revision): the locks are released, so the budget starts afresh."""
        self._started = None
        self._in_force = None

    # SQLAlchemy's connection events, for the online path.
    def before_cursor_execute(self, conn: Any, cursor: Any, statement: str, *_args: Any
                              ) -> None:
        if getattr(cursor, "name", None):
            # A server-side cursor (a revision streaming rows: yield_per): whatever it
            # executes becomes DECLARE ... CURSOR FOR it, so the SET goes on a cursor of
            # its own on the same connection.
            own = conn.connection.dbapi_connection.cursor()
            try:
                self.before(own, statement)
            finally:
                own.close()
            return
        self.before(cursor, statement)

    def on_commit(self, _conn: Any) -> None:
        self.committed()
