"""The run history and applied-revision checksums, stored in the database itself."""

from alembic_fleet.ledger.store import Ledger, RunInfo

__all__ = ["Ledger", "RunInfo"]
