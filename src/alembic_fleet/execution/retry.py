"""Which failures are worth another try, and how long to wait before it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from alembic_fleet.drivers import sqlstate

_TRANSIENT_SQLSTATES = {
    "55P03": "lock timeout",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
}


def transient_reason(error: BaseException) -> str | None:
    """Why ``error`` may go away on its own (lock timeout, lost connection, ...), or None."""
    original = getattr(error, "orig", None) or error
    code = sqlstate(error)
    if code in _TRANSIENT_SQLSTATES:
        return _TRANSIENT_SQLSTATES[code]
    if code and code.startswith("08"):
        return "connection failure"
    if getattr(error, "connection_invalidated", False):
        return "connection lost"
    import psycopg
    from sqlalchemy.exc import OperationalError

    if isinstance(original, psycopg.OperationalError | OperationalError) and code is None:
        return "connection lost"
    if type(original).__name__ == "OperationalError" and code is None:  # psycopg2, asyncpg
        return "connection lost"
    return None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: base * 2**attempt, capped, times 0.5..1.0."""

    base: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** attempt)) * (0.5 + random.random() / 2)
