"""Configuration: find ``fleet.toml`` / ``[tool.fleet]``, interpolate, validate -> model."""

from alembic_fleet.config.loader import (
    FleetConfig,
    TenantQuery,
    TenantSource,
    find_config_file,
    load_config,
)
from alembic_fleet.model.namespace import Owner, SchemaNamespace

__all__ = ["FleetConfig", "Owner", "SchemaNamespace", "TenantQuery", "TenantSource",
           "find_config_file", "load_config"]
