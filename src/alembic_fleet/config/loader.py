"""Find, read and validate the fleet configuration, producing the pure model.

Sources, first found wins: ``--config PATH``, ``FLEET_CONFIG``, then walking up from the
working directory: ``fleet.toml``, or ``pyproject.toml`` with a ``[tool.fleet]`` table.
Every problem raises :class:`ConfigError` naming the file, the key and what is expected;
nothing here touches a database.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic_fleet.config.interpolate import InterpolationError, interpolate
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.model.identifiers import validate_schema_template, validate_tenant
from alembic_fleet.model.targets import Database, Service

CONFIG_FILE = "fleet.toml"
PYPROJECT = "pyproject.toml"
EMBEDDED_DIR = ".fleet"
DEFAULT_EMBEDDED_DATABASE = "postgres"
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
URL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")

_TOP_KEYS = {"database", "tenants", "services", "jobs", "priority", "lock_wait", "lock_timeout",
             "statement_timeout", "retries", "ledger", "ledger_schema"}
_SERVICE_KEYS = {"path", "schema", "database", "alembic_ini", "version_table", "depends_on",
                 "revision_pattern", "file_pattern", "application_packages"}


@dataclass(frozen=True)
class FleetConfig:
    """A validated configuration: where it came from, its services and its tenants."""

    file: Path
    services: dict[str, Service]
    tenants: tuple[str, ...]
    tenants_from_env: bool = False
    secrets: tuple[str, ...] = field(default=(), repr=False)
    jobs: int | None = None
    """Worker processes for ``migrate`` (None: one per CPU)."""
    priority: tuple[str, ...] = ()
    """Tenants migrated first, in this order (e.g. ``default``); the others follow in list order."""
    lock_wait: float = 60.0
    lock_timeout: float = 5.0
    statement_timeout: float = 3600.0
    retries: int = 3
    ledger: bool = True
    ledger_schema: str = "fleet"

    @property
    def root(self) -> Path:
        """The folder of the configuration file; service paths are relative to it."""
        return self.file.parent

    @property
    def embedded_dir(self) -> Path:
        """Where the embedded PostgreSQL keeps its data (git-ignored)."""
        return self.root / EMBEDDED_DIR

    @property
    def uses_embedded(self) -> bool:
        return any(s.database.is_embedded for s in self.services.values())


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
    reader = _Reader(name, environ)
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
    tenants, from_env = reader.tenants(data.get("tenants"))
    if not tenants and any(s.per_tenant for s in services.values()):
        raise ConfigError("no tenants configured while a service has a {tenant} schema",
                          file=name, key="tenants",
                          expected='a list of tenant names, or TENANTS="a b" in the environment')
    source = "TENANTS (environment)" if from_env else "tenants"
    for service in services.values():
        for tenant in tenants if service.per_tenant else ():
            try:
                service.schema_for(tenant)
            except FleetError as exc:
                raise ConfigError(f"{exc.message} (service '{service.name}')", file=name,
                                  key=source, hint=exc.hint) from None
    jobs = reader.jobs(data.get("jobs"))
    priority = reader.priority(data.get("priority"), tenants)
    return FleetConfig(
        path, services, tenants, from_env, tuple(reader.secrets), jobs, priority,
        lock_wait=reader.seconds(data.get("lock_wait", 60), "lock_wait"),
        lock_timeout=reader.seconds(data.get("lock_timeout", 5), "lock_timeout"),
        statement_timeout=reader.seconds(data.get("statement_timeout", 3600),
                                         "statement_timeout"),
        retries=reader.count(data.get("retries", 3), "retries"),
        ledger=reader.flag(data.get("ledger", True), "ledger"),
        ledger_schema=reader.identifier(data.get("ledger_schema", "fleet"), "ledger_schema"),
    )


class _Reader:
    """Validates one file's values, collecting the passwords found in database URLs."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.secrets: list[str] = []

    def check_keys(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise ConfigError("unknown key", file=self.file, key=prefix + key,
                                  expected="one of " + ", ".join(sorted(allowed)))

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"has type {type(value).__name__}", file=self.file, key=key,
                              expected="a string")
        try:
            return interpolate(value, self.environ)
        except InterpolationError as exc:
            raise ConfigError(str(exc), file=self.file, key=key) from None

    def database(self, value: Any, key: str, inherit: Database | None) -> Database:
        """A database reference: a URL, ``embedded[:///NAME]``, or empty for the default."""
        text = "" if value is None else self.string(value, key).strip()
        if not text:
            return inherit or Database(embedded_name=DEFAULT_EMBEDDED_DATABASE)
        if text == "embedded" or text.startswith("embedded:"):
            db_name = text.removeprefix("embedded").removeprefix(":").lstrip("/")
            db_name = db_name or DEFAULT_EMBEDDED_DATABASE
            if not SERVICE_NAME.fullmatch(db_name.replace("-", "_")):
                raise ConfigError(f"invalid embedded database name {db_name!r}", file=self.file,
                                  key=key, expected="embedded:///NAME with a simple name")
            return Database(embedded_name=db_name)
        from sqlalchemy.engine import make_url  # local: keeps config import light
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(text)
        except (ArgumentError, ValueError):
            raise ConfigError("is not a database URL", file=self.file, key=key,
                              expected="postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
        if url.drivername not in URL_SCHEMES:
            raise ConfigError(f"unsupported scheme {url.drivername!r}", file=self.file, key=key,
                              expected="a postgresql:// URL")
        for secret in (url.password, url.query.get("password")):
            if secret:
                self.secrets.append(str(secret))
        return Database(url=text)

    def service(self, root: Path, name: str, table: Any, default_db: Database) -> Service:
        key = f"services.{name}"
        if not SERVICE_NAME.fullmatch(name):
            raise ConfigError("invalid service name", file=self.file, key=key,
                              expected="a lowercase letter, then lowercase letters, digits, _ or -")
        if not isinstance(table, dict):
            raise ConfigError("must be a table", file=self.file, key=key,
                              expected=f"[{key}] with path and schema")
        self.check_keys(table, _SERVICE_KEYS, key + ".")
        if "path" not in table:
            raise ConfigError("is missing", file=self.file, key=f"{key}.path",
                              expected="the folder holding the service's alembic.ini")
        folder = (root / self.string(table["path"], f"{key}.path")).resolve()
        ini = self.string(table.get("alembic_ini", "alembic.ini"), f"{key}.alembic_ini")
        if not (folder / ini).is_file():
            raise ConfigError(f"{folder / ini} does not exist", file=self.file,
                              key=f"{key}.path", expected="a folder holding " + ini,
                              hint=f"create it with 'fleet init --service {name} PATH'")
        schema = self.string(table.get("schema", "public"), f"{key}.schema")
        validate_schema_template(schema, file=self.file, key=f"{key}.schema")
        database = self.database(table.get("database"), f"{key}.database", inherit=default_db)
        version_table = self.string(table.get("version_table", "alembic_version"),
                                    f"{key}.version_table")
        depends_on = table.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            raise ConfigError("must be a list of service names", file=self.file,
                              key=f"{key}.depends_on", expected='depends_on = ["auth"]')
        patterns = {k: self.pattern(table.get(k), f"{key}.{k}")
                    for k in ("revision_pattern", "file_pattern")}
        packages = table.get("application_packages")
        if packages is not None and (not isinstance(packages, list) or not all(
                isinstance(p, str) and p.isidentifier() for p in packages)):
            raise ConfigError("must be a list of package names", file=self.file,
                              key=f"{key}.application_packages",
                              expected='application_packages = ["app"]')
        return Service(name, folder, schema, database, ini, version_table,
                       tuple(dict.fromkeys(depends_on)),
                       revision_pattern=patterns["revision_pattern"],
                       file_pattern=patterns["file_pattern"],
                       application_packages=None if packages is None else tuple(packages))

    def pattern(self, value: Any, key: str) -> str | None:
        """A regular expression ``fleet check`` matches names against (whole-name match)."""
        if value is None:
            return None
        text = self.string(value, key)
        try:
            re.compile(text.replace("{revision}", "x"))
        except re.error as exc:
            raise ConfigError(f"is not a valid regular expression: {exc}", file=self.file,
                              key=key, expected='e.g. "[0-9a-f]{12}"') from None
        return text

    def jobs(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"invalid value {value!r}", file=self.file, key="jobs",
                              expected="a whole number of worker processes, 1 or more")
        return value

    def seconds(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected="a number of seconds, 0 or more")
        return float(value)

    def count(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected="a whole number, 0 or more")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected="true or false")
        return value

    def identifier(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected="a schema name: lowercase letters, digits and _")
        return value

    def priority(self, value: Any, tenants: tuple[str, ...]) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("must be a list of tenant names", file=self.file, key="priority",
                              expected='priority = ["default"]')
        return tuple(t for t in dict.fromkeys(value) if t in tenants)

    def check_dependencies(self, services: dict[str, Service]) -> None:
        """Every ``depends_on`` names a service, and the dependencies have no cycle."""
        for service in services.values():
            for dependency in service.depends_on:
                if dependency not in services or dependency == service.name:
                    raise ConfigError(f"unknown service {dependency!r}", file=self.file,
                                      key=f"services.{service.name}.depends_on",
                                      expected="names of other configured services")
        state: dict[str, int] = {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = " -> ".join((*path[path.index(name):], name))
                raise ConfigError(f"dependency cycle {cycle}", file=self.file,
                                  key=f"services.{name}.depends_on",
                                  expected="services that depend on each other in one direction")
            state[name] = 1
            for dependency in services[name].depends_on:
                visit(dependency, (*path, name))
            state[name] = 2

        for name in services:
            visit(name, ())

    def tenants(self, value: Any) -> tuple[tuple[str, ...], bool]:
        """The tenant list; ``TENANTS`` (spaces or commas) overrides the file."""
        override = self.environ.get("TENANTS")
        names = [n for n in re.split(r"[\s,]+", override or "") if n]
        if names:
            return self._validated(names, "TENANTS (environment)"), True
        if value is None:
            return (), False
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("must be a list of strings", file=self.file, key="tenants",
                              expected='tenants = ["default", "toshiba"]')
        return self._validated([interpolate_or_fail(v, self) for v in value], "tenants"), False

    def _validated(self, names: list[str], where: str) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for tenant in names:
            try:
                validate_tenant(tenant)
            except FleetError as exc:
                raise ConfigError(exc.message, file=self.file, key=where,
                                  expected="lowercase letter first, then a-z, 0-9 or _") from None
            seen.setdefault(tenant)
        return tuple(seen)


def interpolate_or_fail(value: str, reader: _Reader) -> str:
    """Interpolate one tenant entry (tenants may come from the environment too)."""
    return reader.string(value, "tenants")
