"""Bulk, read-only reading of where every target stands."""

from alembic_fleet.catalog.versions import read_versions

__all__ = ["read_versions"]
