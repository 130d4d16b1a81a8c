"""The only code that prints: tables, plain lines, JSON, progress and errors."""

from alembic_fleet.reporting.console import Reporter

__all__ = ["Reporter"]
