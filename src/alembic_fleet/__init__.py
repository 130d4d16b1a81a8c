"""alembic-fleet: Alembic migrations for many services and many tenant schemas at once."""

__version__ = "0.1.0"
