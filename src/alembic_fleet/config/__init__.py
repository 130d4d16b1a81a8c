"""Configuration: find ``fleet.toml`` / ``[tool.fleet]``, interpolate, validate -> model."""

from alembic_fleet.config.loader import (
    FleetConfig,
    TenantQuery,
    TenantSource,
    find_config_file,
    load_config,
)

__all__ = ["FleetConfig", "TenantQuery", "TenantSource", "find_config_file", "load_config"]
