"""Former name of :mod:`alembic_fleet.startup_check`, kept so existing imports work."""

from alembic_fleet.startup_check import SchemaNotAtHead, SchemaState, require_head

__all__ = ["SchemaNotAtHead", "SchemaState", "require_head"]
