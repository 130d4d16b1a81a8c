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
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from alembic_fleet.config.interpolate import InterpolationError, interpolate
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.model.identifiers import validate_schema_template, validate_tenant
from alembic_fleet.model.namespace import SchemaNamespace
from alembic_fleet.model.targets import Database, Service

CONFIG_FILE = "fleet.toml"
PYPROJECT = "pyproject.toml"
EMBEDDED_DIR = ".fleet"
DEFAULT_EMBEDDED_DATABASE = "postgres"
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
URL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")

_TOP_KEYS = {"database", "tenants", "tenant_attributes", "services", "jobs", "priority",
             "lock_wait", "lock_timeout", "statement_timeout", "retries", "ledger",
             "ledger_schema"}
_SERVICE_KEYS = {"path", "schema", "database", "alembic_ini", "version_table", "depends_on",
                 "revision_pattern", "file_pattern", "application_packages"}
_FILE_SOURCE_KEYS = {"file"}
_QUERY_SOURCE_KEYS = {"query", "database", "insert", "delete"}
_ATTRIBUTE_KEYS = {"database", "priority"}
_TENANT_NAME = "lowercase letter first, then a-z, 0-9 or _"
TENANTS_ENV_KEY = "TENANTS (environment)"


@dataclass(frozen=True)
class TenantQuery:
    """A tenant registry in a database: ``sql`` lists the tenants (first column).

    ``insert`` / ``delete`` (each with a ``:tenant`` parameter) let ``fleet tenants add`` and
    ``remove`` record the change there; None when the registry is maintained elsewhere.
    """

    sql: str
    database: Database
    insert: str | None = None
    delete: str | None = None


@dataclass(frozen=True)
class TenantSource:
    """Where the configured tenant names live, so that commands know where to record one.

    ``kind`` is ``list`` (the configuration file itself: a ``tenants`` array or
    ``[tenants.NAME]`` tables), ``file`` (a text file, ``path``) or ``query`` (a registry
    table, see :attr:`FleetConfig.tenant_query`). ``path`` is the file to edit for ``list``
    and ``file``.
    """

    kind: Literal["list", "file", "query"] = "list"
    path: Path | None = None

    @property
    def where(self) -> str:
        """A short human description, e.g. ``fleet.toml`` or ``tenants.txt``."""
        if self.kind == "query":
            return "the tenant registry query"
        if self.path is None:
            return "the configuration"
        if self.path.name == PYPROJECT and self.kind == "list":
            return f"{PYPROJECT} [tool.fleet]"
        return self.path.name


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
    """Tenants migrated first, in this order: the ``priority`` list, then ``priority`` attributes
    (see :func:`priority_order`); the others follow in list order."""
    lock_wait: float = 60.0
    lock_timeout: float = 5.0
    statement_timeout: float = 3600.0
    retries: int = 3
    ledger: bool = True
    ledger_schema: str = "fleet"
    tenant_source: TenantSource = TenantSource()
    tenant_query: TenantQuery | None = None
    """The registry query when ``tenants = { query = ... }``; ``tenants`` is then empty until
    the commands run it and call :meth:`with_tenants` (unless ``TENANTS`` overrides)."""
    tenant_databases: dict[str, Database] = field(default_factory=dict)
    """Tenants placed on their own server: every per-tenant schema of the tenant lives there.
    Holds every tenant with a ``database`` attribute, configured or not (a registry may list
    it later)."""
    tenant_priorities: dict[str, int] = field(default_factory=dict)
    """``priority`` attributes: higher runs earlier; already folded into :attr:`priority`."""
    priority_names: tuple[str, ...] = ()
    """The top-level ``priority`` list as written (kept to recompute :attr:`priority`)."""
    namespace: SchemaNamespace = field(kw_only=True, repr=False, compare=False)
    """Who owns which schema, for these services and tenants (see
    :class:`~alembic_fleet.model.namespace.SchemaNamespace`)."""

    def with_tenants(self, tenants: Sequence[str], *, key: str = "tenants.query") -> FleetConfig:
        """This configuration with ``tenants`` resolved from the registry query.

        Validates the names and every schema they produce (a registry is user input too),
        rebuilds :attr:`namespace` (refusing a tenant whose schema is not free) and
        recomputes :attr:`priority`, which depends on the tenants present.
        """
        names = _validated_names(list(tenants), str(self.file), key)
        namespace = self.namespace.with_tenants(names, self.tenant_databases, key=key)
        return replace(self, tenants=names, namespace=namespace,
                       priority=priority_order(names, self.priority_names,
                                               self.tenant_priorities))

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
        lock_timeout=reader.seconds(data.get("lock_timeout", 5), "lock_timeout"),
        statement_timeout=reader.seconds(data.get("statement_timeout", 3600),
                                         "statement_timeout"),
        retries=reader.count(data.get("retries", 3), "retries"),
        ledger=reader.flag(data.get("ledger", True), "ledger"),
        ledger_schema=ledger_schema,
        tenant_source=source,
        tenant_query=query,
        tenant_databases=tenant_databases,
        tenant_priorities=tenant_priorities,
        priority_names=priority_names,
        namespace=namespace,
    )


@dataclass(frozen=True)
class _Attributes:
    database: Database | None = None
    priority: int | None = None


def priority_order(tenants: Sequence[str], listed: Sequence[str],
                   attributes: Mapping[str, int]) -> tuple[str, ...]:
    """The ``priority`` tuple :func:`~alembic_fleet.model.schedule.execution_order` expects.

    The top-level list comes first (it is an explicit order), then the tenants by their
    ``priority`` attribute, higher first (absent counts as 0, ties keep the tenant order).
    Only the head that differs from the plain tenant order is returned, so a configuration
    without attributes keeps the short tuple it always had.
    """
    first = [t for t in dict.fromkeys(listed) if t in tenants]
    rest = [t for t in tenants if t not in first]
    ordered = first + sorted(rest, key=lambda t: -attributes.get(t, 0))  # stable sort
    cut = len(ordered)
    while cut > 0:
        head = set(ordered[:cut - 1])
        if ordered[cut - 1:] != [t for t in tenants if t not in head]:
            break
        cut -= 1
    return tuple(ordered[:cut])


def _validated_names(names: list[str], file: str, where: str) -> tuple[str, ...]:
    """Validate tenant names and drop duplicates, keeping the first occurrence's place."""
    seen: dict[str, None] = {}
    for tenant in names:
        try:
            validate_tenant(tenant)
        except FleetError as exc:
            raise ConfigError(exc.message, file=file, key=where,
                              expected=_TENANT_NAME) from None
        seen.setdefault(tenant)
    return tuple(seen)


def read_tenants_file(path: Path, *, config_file: str) -> tuple[str, ...]:
    """The names in a tenants file: one per line, ``#`` comments and blank lines ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"tenants file {path} does not exist", file=config_file,
                          key="tenants.file",
                          expected="a text file with one tenant name per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"tenants file {path} cannot be read: {reason}", file=config_file,
                          key="tenants.file") from None
    names: list[str] = []
    for number, line in enumerate(lines, 1):
        entry = tenant_file_entry(line)
        if entry is None:
            continue
        try:
            validate_tenant(entry)
        except FleetError as exc:
            raise ConfigError(f"{path}, line {number}: {exc.message}", file=config_file,
                              key="tenants.file", expected=_TENANT_NAME) from None
        names.append(entry)
    return tuple(dict.fromkeys(names))


def tenant_file_entry(line: str) -> str | None:
    """The tenant named on one line of a tenants file, or None for a blank/comment line."""
    entry = line.split("#", 1)[0].strip()
    return entry or None


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

    def priority(self, value: Any) -> tuple[str, ...]:
        """The top-level list; tenants not configured are left out by :func:`priority_order`."""
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("must be a list of tenant names", file=self.file, key="priority",
                              expected='priority = ["default"]')
        return tuple(dict.fromkeys(value))

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

    def tenants_override(self) -> tuple[str, ...]:
        """``TENANTS`` (spaces or commas): replaces the names of whatever source is configured."""
        names = [n for n in re.split(r"[\s,]+", self.environ.get("TENANTS") or "") if n]
        return _validated_names(names, self.file, TENANTS_ENV_KEY) if names else ()

    def tenant_source(
        self, config: Path, value: Any, default_db: Database, *, read_names: bool = True,
    ) -> tuple[TenantSource, TenantQuery | None, tuple[str, ...], dict[str, _Attributes]]:
        """The ``tenants`` key: its source, the registry query, the names read, attributes.

        A table whose values are all tables (``[tenants.NAME]``, possibly empty) lists the
        tenants with their attributes; any other table is a source (``file`` or ``query``).
        The value types decide, so a tenant may even be called ``file``. Without
        ``read_names`` (``TENANTS`` overrides) the shape is still validated, but list entries
        are not interpolated and the file is not read: a job that sets ``TENANTS`` needs
        neither the variables nor the file.
        """
        where = TenantSource("list", config)
        if value is None:
            return where, None, (), {}
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise self._tenants_type_error()
            if not read_names:
                return where, None, (), {}
            names = [self.string(v, "tenants") for v in value]
            return where, None, _validated_names(names, self.file, "tenants"), {}
        if not isinstance(value, dict):
            raise self._tenants_type_error()
        if all(isinstance(v, dict) for v in value.values()):
            attributes = self.attribute_tables(value, "tenants")
            return where, None, tuple(attributes), attributes
        if "file" in value and "query" in value:
            raise ConfigError("has both 'file' and 'query'", file=self.file, key="tenants",
                              expected="one tenant source: a file or a query")
        if "file" in value:
            self.check_keys(value, _FILE_SOURCE_KEYS, "tenants.")
            relative = self.string(value["file"], "tenants.file").strip()
            if not relative:
                raise ConfigError("is empty", file=self.file, key="tenants.file",
                                  expected="a path relative to the configuration file")
            path = (config.parent / relative).resolve()
            names = read_tenants_file(path, config_file=self.file) if read_names else ()
            return TenantSource("file", path), None, names, {}
        if "query" in value:
            self.check_keys(value, _QUERY_SOURCE_KEYS, "tenants.")
            sql = self.string(value["query"], "tenants.query").strip()
            if not sql:
                raise ConfigError("is empty", file=self.file, key="tenants.query",
                                  expected="a SELECT whose first column is the tenant name")
            database = self.database(value.get("database"), "tenants.database",
                                     inherit=default_db)
            insert, delete = (self.statement(value.get(k), f"tenants.{k}")
                              for k in ("insert", "delete"))
            return TenantSource("query"), TenantQuery(sql, database, insert, delete), (), {}
        first = next(iter(value))
        raise ConfigError("unknown key", file=self.file, key=f"tenants.{first}",
                          expected="'file' or 'query', or [tenants.NAME] tables")

    def _tenants_type_error(self) -> ConfigError:
        return ConfigError("must be a list of strings or a table", file=self.file,
                           key="tenants",
                           expected='tenants = ["default", "toshiba"], [tenants.NAME] tables, '
                           'tenants = { file = "tenants.txt" } or tenants = { query = "..." }')

    def statement(self, value: Any, key: str) -> str | None:
        """An ``insert`` / ``delete`` statement of a registry: it must bind ``:tenant``."""
        if value is None:
            return None
        sql = self.string(value, key).strip()
        if ":tenant" not in sql:
            raise ConfigError("does not use the :tenant parameter", file=self.file, key=key,
                              expected="a statement such as "
                              "INSERT INTO public.tenants (slug) VALUES (:tenant)")
        return sql

    def tenant_attributes(self, value: Any, *, table_form: bool) -> dict[str, _Attributes]:
        """``[tenant_attributes.NAME]``: attributes for tenants of any source."""
        if value is None:
            return {}
        if table_form:
            raise ConfigError("cannot be combined with [tenants.NAME] tables", file=self.file,
                              key="tenant_attributes",
                              expected="the attributes inside [tenants.NAME]")
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError("must be a table of tables", file=self.file,
                              key="tenant_attributes",
                              expected='[tenant_attributes.toshiba] with database = "..." '
                              "and/or priority = 10")
        return self.attribute_tables(value, "tenant_attributes")

    def attribute_tables(self, tables: dict[str, Any], prefix: str) -> dict[str, _Attributes]:
        """Tenant name -> attributes, from ``[PREFIX.NAME]`` tables (names validated)."""
        result: dict[str, _Attributes] = {}
        for tenant, table in tables.items():
            key = f"{prefix}.{tenant}"
            try:
                validate_tenant(tenant)
            except FleetError as exc:
                raise ConfigError(exc.message, file=self.file, key=key,
                                  expected=_TENANT_NAME) from None
            self.check_keys(table, _ATTRIBUTE_KEYS, key + ".")
            database = None
            raw = table.get("database")
            # Empty (e.g. an unset "${VAR:-}") means no server of its own: the service's.
            if raw is not None and self.string(raw, f"{key}.database").strip():
                database = self.database(raw, f"{key}.database", inherit=None)
            priority = table.get("priority")
            if priority is not None and (isinstance(priority, bool)
                                         or not isinstance(priority, int)):
                raise ConfigError(f"invalid value {priority!r}", file=self.file,
                                  key=f"{key}.priority",
                                  expected="a whole number; higher runs earlier (default 0)")
            result[tenant] = _Attributes(database, priority)
        return result
