"""Find, read and validate the fleet configuration, producing the pure model.

Sources, first found wins: ``--config PATH``, ``FLEET_CONFIG``, then walking up from the
working directory: ``fleet.toml``, or ``pyproject.toml`` with a ``[tool.fleet]`` table.
Every problem raises :class:`ConfigError` naming the file, the key and what is expected;
nothing here touches a database. The tenants come from one *source* (``tenants`` is a list,
``[tenants.NAME]`` tables, ``{ file = PATH }`` or ``{ query = SQL }``); a tenants file is read
here, but a registry query is only kept (:class:`TenantQuery`) and run later by the commands
(:mod:`alembic_fleet.config.tenant_sources`), so that loading stays free of network I/O.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from alembic_fleet.config.settings import (
    CONFIG_FILE,
    EMBEDDED_DIR,
    PYPROJECT,
    FleetConfig,
    TenantQuery,
    TenantSource,
    priority_order,
)
from alembic_fleet.config.table_reader import (
    SERVICE_NAME,
    TENANTS_ENV_KEY,
    TableReader,
    read_tenants_file,
    tenant_file_entry,
)
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.model.namespace import SchemaNamespace
from alembic_fleet.model.targets import Service

__all__ = [
    "CONFIG_FILE", "EMBEDDED_DIR", "PYPROJECT", "SERVICE_NAME", "TENANTS_ENV_KEY", "FleetConfig",
    "TenantQuery", "TenantSource", "find_config_file", "load_config", "parse_config",
    "priority_order", "read_tenants_file", "tenant_file_entry",
]

_TOP_KEYS = {"database", "tenants", "tenant_attributes", "services", "jobs", "priority",
             "lock_wait", "lock_timeout", "statement_timeout", "retries", "ledger",
             "ledger_schema", "search_path", "provision", "version_mirror"}


def find_config_file(
    explicit: str | os.PathLike[str] | None = None,
    *,
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Locate the configuration file, or raise ConfigError saying where we looked."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get("FLEET_CONFIG") or None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError("configuration file not found", file=str(path),
                              hint="check --config / FLEET_CONFIG")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and _has_tool_fleet(pyproject):
            return pyproject
    raise ConfigError(
        f"no {CONFIG_FILE} (or [tool.fleet] in {PYPROJECT}) in {here} or any parent folder",
        hint="run 'fleet init' to write one, or pass --config PATH / -C DIR",
    )


def _has_tool_fleet(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return isinstance(data.get("tool"), dict) and "fleet" in data["tool"]


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> FleetConfig:
    """Find and validate the configuration. Raises ConfigError; touches no database."""
    env = os.environ if environ is None else environ
    path = find_config_file(explicit, start=start, environ=env)
    return parse_config(path, env)


def parse_config(path: Path, environ: Mapping[str, str]) -> FleetConfig:
    """Validate the configuration held in ``path``."""
    name = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=name) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", file=name) from None
    if path.name == PYPROJECT:
        data = data.get("tool", {}).get("fleet")
        if not isinstance(data, dict):
            raise ConfigError("has no [tool.fleet] table", file=name)
    reader = TableReader(name, environ)
    reader.check_keys(data, _TOP_KEYS, "")
    default_db = reader.database(data.get("database"), "database", inherit=None)
    services_table = data.get("services")
    if not isinstance(services_table, dict) or not services_table:
        raise ConfigError("must define at least one service", file=name, key="services",
                          expected='a table such as [services.auth] with path and schema')
    services: dict[str, Service] = {}
    for svc_name, table in services_table.items():
        services[svc_name] = reader.service(path.parent, svc_name, table, default_db)
    reader.check_dependencies(services)
    tenants_value = data.get("tenants")
    override = reader.tenants_override()
    source, query, listed, attributes = reader.tenant_source(path, tenants_value, default_db,
                                                             read_names=not override)
    attributes = {**attributes, **reader.tenant_attributes(data.get("tenant_attributes"),
                                                           table_form=source.kind == "list"
                                                           and isinstance(tenants_value, dict))}
    tenants, from_env = (override, True) if override else (listed, False)
    if not tenants and query is None and any(s.per_tenant for s in services.values()):
        raise ConfigError("no tenants configured while a service has a {tenant} schema",
                          file=name, key="tenants",
                          expected='a list of tenant names, or TENANTS="a b" in the environment')
    ledger_schema = reader.identifier(data.get("ledger_schema", "fleet"), "ledger_schema")
    if ledger_schema in ("public", "information_schema") or ledger_schema.startswith("pg_"):
        raise ConfigError(f"{ledger_schema!r} is not a schema fleet may own", file=name,
                          key="ledger_schema", expected="a schema of its own, such as 'fleet'")
    # Shared schemas (extensions) and baselines: the top-level search_path is every
    # service's default; a service's own key replaces it.
    default_search_path = reader.search_path(data.get("search_path", []), "search_path")
    services = {svc_name: reader.shared_context(service, services_table[svc_name],
                                                default_search_path, ledger_schema)
                for svc_name, service in services.items()}
    # How new tenants' schemas are made: the top-level key is every service's default.
    ledger = reader.flag(data.get("ledger", True), "ledger")
    version_mirror = reader.flag(data.get("version_mirror", False), "version_mirror")
    if version_mirror and not ledger:
        raise ConfigError("version_mirror = true needs the ledger (ledger = false)", file=name,
                          key="version_mirror", expected="version_mirror = false, or ledger = "
                          "true: the mirror table lives in the ledger schema")
    default_provision = reader.provision(data.get("provision", "migrate"), "provision")
    services = {svc_name: reader.provisioning(service, services_table[svc_name],
                                              default_provision, ledger)
                for svc_name, service in services.items()}
    tenant_databases = {t: a.database for t, a in attributes.items() if a.database}
    # Every schema the tenants produce has one owner and fits in 63 bytes (checked once,
    # before any command). The ledger schema is reserved even with ``ledger = false``:
    # ``fleet reset`` drops it, and the ledger may be turned on later.
    namespace = SchemaNamespace.build(services, tenants, tenant_databases, ledger_schema,
                                      file=name,
                                      key=TENANTS_ENV_KEY if from_env else "tenants")
    jobs = reader.jobs(data.get("jobs"))
    priority_names = reader.priority(data.get("priority"))
    tenant_priorities = {t: a.priority for t, a in attributes.items() if a.priority is not None}
    priority = priority_order(tenants, priority_names, tenant_priorities)
    return FleetConfig(
        path, services, tenants, from_env, tuple(reader.secrets), jobs, priority,
        lock_wait=reader.seconds(data.get("lock_wait", 60), "lock_wait"),
        lock_timeout=reader.seconds(data.get("lock_timeout", 5), "lock_timeout", positive=True),
        statement_timeout=reader.seconds(data.get("statement_timeout", 3600),
                                         "statement_timeout"),
        retries=reader.count(data.get("retries", 3), "retries"),
        ledger=ledger,
        ledger_schema=ledger_schema,
        version_mirror=version_mirror,
        tenant_source=source,
        tenant_query=query,
        tenant_databases=tenant_databases,
        tenant_priorities=tenant_priorities,
        priority_names=priority_names,
        namespace=namespace,
    )
