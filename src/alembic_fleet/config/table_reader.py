"""Reading one configuration file's values: types, keys, URLs, tenant sources.

Every method raises :class:`ConfigError` naming the file, the key and what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alembic_fleet import drivers, interpreters
from alembic_fleet.config.interpolate import InterpolationError, interpolate
from alembic_fleet.config.settings import (
    TENANT_NAME,
    TenantQuery,
    TenantSource,
    validated_names,
)
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.model.identifiers import (
    shared_schema_problem,
    validate_schema_template,
    validate_tenant,
)
from alembic_fleet.model.targets import Baseline, Database, Service

DEFAULT_EMBEDDED_DATABASE = "postgres"
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]*")

SERVICE_KEYS = {"path", "schema", "database", "alembic_ini", "version_table", "depends_on",
                "revision_pattern", "file_pattern", "application_packages", "python",
                "search_path", "baseline", "provision"}
CALLABLE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
"""A baseline written ``package.module:function``; anything else is a file path."""
_FILE_SOURCE_KEYS = {"file"}
_QUERY_SOURCE_KEYS = {"query", "database", "insert", "delete"}
_ATTRIBUTE_KEYS = {"database", "priority"}
PROVISION_VALUES = ("migrate", "reference")
TENANTS_ENV_KEY = "TENANTS (environment)"
MAX_SECONDS = 7 * 24 * 3600
"""The longest timeout or wait accepted (a week): PostgreSQL's own limit is near 24 days."""


@dataclass(frozen=True)
class TenantAttributes:
    database: Database | None = None
    priority: int | None = None


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
                              key="tenants.file", expected=TENANT_NAME) from None
        names.append(entry)
    return tuple(dict.fromkeys(names))


def tenant_file_entry(line: str) -> str | None:
    """The tenant named on one line of a tenants file, or None for a blank/comment line."""
    entry = line.split("#", 1)[0].strip()
    return entry or None


class TableReader:
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

        if text.split("?", 1)[0].count("@") > 1:  # the URL is not shown: it holds a password
            raise ConfigError(
                "the URL has more than one '@' before the host: a password (or user name) "
                "holding '@', ':', '/' or '%' must be percent-encoded", file=self.file,
                key=key, expected="postgresql://USER:PASSWORD@HOST/DB",
                hint="e.g. python -c 'import urllib.parse,sys; "
                "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'p@ss' gives p%40ss")
        # The value is never shown (it may hold a password); the variables it came from are.
        source = "".join(f" (from {ref})" for ref in _references(value))
        try:
            url = make_url(text)
        except (ArgumentError, ValueError):
            raise ConfigError("is not a database URL" + source, file=self.file, key=key,
                              expected="postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
        if drivers.for_scheme(url.drivername) is None:
            raise ConfigError(drivers.unsupported(url.drivername) + source, file=self.file,
                              key=key, expected=drivers.SUPPORTED)
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
        self.check_keys(table, SERVICE_KEYS, key + ".")
        if "path" not in table:
            raise ConfigError("is missing", file=self.file, key=f"{key}.path",
                              expected="the folder holding the service's alembic.ini")
        folder = (root / self.string(table["path"], f"{key}.path")).resolve()
        ini = self.string(table.get("alembic_ini", "alembic.ini"), f"{key}.alembic_ini")
        if not (folder / ini).is_file():
            raise ConfigError(f"{folder / ini} does not exist", file=self.file,
                              key=f"{key}.path", expected="a folder holding " + ini,
                              hint=(f"point path at the folder that holds the service's {ini} "
                                    "(or set alembic_ini), or run 'alembic init migrations' "
                                    "there" if folder.is_dir() else
                                    f"check path under [{key}] (a typo?)"))
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
                       application_packages=None if packages is None else tuple(packages),
                       python=self.python(table.get("python"), folder, f"{key}.python"))

    def python(self, value: Any, folder: Path, key: str) -> tuple[str, ...] | None:
        """The interpreter a service's code runs in (see :mod:`alembic_fleet.interpreters`):
        None for fleet's own, else the command that starts it."""
        if isinstance(value, str):  # ${VAR} as in every other string; empty: the default
            value = self.string(value, key) or None
        elif isinstance(value, list) and all(isinstance(part, str) for part in value):
            written = value
            value = [self.string(part, f"{key}[{i}]") for i, part in enumerate(value)]
            for index, (raw, part) in enumerate(zip(written, value, strict=True)):
                if not part:  # an empty word would be run as a program named ""
                    why = (f"{raw!r} is empty in this environment" if raw
                           else "is an empty string")
                    raise ConfigError(f"word {index} of the command {why}", file=self.file,
                                      key=f"{key}[{index}]", expected="a non-empty word",
                                      hint="set the variable, or give it a default: "
                                      '"${VAR:-uv}"' if raw else None)
        if value is None:
            found = interpreters.default_for(folder)
            if found is not None and not found.exists():
                raise ConfigError(f"{found} is a broken link (the service's .venv, used by "
                                  "default)", file=self.file, key=key,
                                  expected="a working interpreter",
                                  hint="recreate the environment (e.g. 'uv sync' or 'python "
                                  "-m venv --clear .venv' in the service folder), or set "
                                  'python = "fleet" for this service')
            return None if found is None else (str(found),)
        if isinstance(value, str):
            if value == interpreters.FLEET:
                return None
            path = folder / value
            if not path.exists():
                raise ConfigError(f"{path} does not exist", file=self.file, key=key,
                                  expected='a path relative to the service folder, e.g. '
                                  '".venv/bin/python", a command as a list, or "fleet"',
                                  hint="create the environment (e.g. 'uv sync' or 'python -m "
                                  "venv .venv' in the service folder, then install the "
                                  "service and alembic-fleet there)")
            return None if interpreters.is_current(path) else (str(path.absolute()),)
        if (isinstance(value, list) and value
                and all(isinstance(part, str) and part for part in value)):
            return tuple(value)
        raise ConfigError("must be a path, a command or \"fleet\"", file=self.file, key=key,
                          expected='python = ".venv/bin/python" or python = ["uv", "run", '
                          '"--project", ".", "python"]')

    def search_path(self, value: Any, key: str) -> tuple[str, ...]:
        """A ``search_path`` list: shared schemas searched after the target's own."""
        expected = 'a list of schema names, e.g. search_path = ["extensions"]'
        if not isinstance(value, list):
            raise ConfigError(f"has type {type(value).__name__}", file=self.file, key=key,
                              expected=expected)
        names = []
        for index, item in enumerate(value):
            name = self.string(item, f"{key}[{index}]") if isinstance(item, str) else item
            problem = shared_schema_problem(name)
            if problem:
                raise ConfigError(problem, file=self.file, key=f"{key}[{index}]",
                                  expected=expected + " (lowercase letters, digits and _)")
            names.append(name)
        return tuple(dict.fromkeys(names))

    def shared_context(self, service: Service, table: dict[str, Any],
                       default_search_path: tuple[str, ...], ledger_schema: str) -> Service:
        """``service`` with its ``search_path`` (its own, else the top-level default) and
        ``baseline``, validated against what the service and fleet own."""
        key = f"services.{service.name}"
        search_path = default_search_path
        if "search_path" in table:
            search_path = self.search_path(table["search_path"], f"{key}.search_path")
        where = f"{key}.search_path" if "search_path" in table else "search_path"
        for name in search_path:
            if name == ledger_schema:
                raise ConfigError(f"{name!r} is fleet's ledger schema", file=self.file,
                                  key=where, expected="shared schemas such as 'extensions'")
            if not service.per_tenant and name == service.schema and "search_path" in table:
                raise ConfigError(f"{name!r} is the service's own schema, which is always "
                                  "searched first", file=self.file, key=where,
                                  expected="other schemas only")
        if not service.per_tenant:  # a default naming this service's own schema: first anyway
            search_path = tuple(name for name in search_path if name != service.schema)
        baseline = self.baseline(table.get("baseline"), f"{key}.baseline", service.path)
        return replace(service, search_path=search_path, baseline=baseline)

    def baseline(self, value: Any, key: str, folder: Path) -> Baseline | None:
        """``baseline``: a SQL file (relative to the service folder) or ``module:function``."""
        if value is None:
            return None
        text = self.string(value, key).strip()
        expected = ('a SQL file relative to the service folder ("baseline.sql") or a '
                    'callable ("package.module:function")')
        if not text:
            raise ConfigError("is empty", file=self.file, key=key, expected=expected)
        if CALLABLE.fullmatch(text):
            return Baseline("callable", target=text, folder=folder)
        path = (folder / text).resolve()
        if not path.is_file():
            raise ConfigError(f"{path} does not exist", file=self.file, key=key,
                              expected=expected)
        return Baseline("sql", path=path, folder=folder)

    def provision(self, value: Any, key: str) -> str:
        """``provision``: how a new tenant's schema is made (``${VAR}`` allowed)."""
        if isinstance(value, str):
            value = self.string(value, key).strip()
        if value not in PROVISION_VALUES:
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected='"migrate" (run every revision) or "reference" (copy '
                              "a reference schema built once per head)")
        return str(value)

    def provisioning(self, service: Service, table: dict[str, Any], default: str,
                     ledger: bool) -> Service:
        """``service`` with its ``provision`` (its own key, else the top-level default); a
        reference needs the ledger, where it is recorded."""
        key = f"services.{service.name}.provision"
        value = self.provision(table["provision"], key) if "provision" in table else default
        if value == "reference" and not ledger:
            raise ConfigError('"reference" needs the ledger (ledger = false)', file=self.file,
                              key=key if "provision" in table else "provision",
                              expected='provision = "migrate", or ledger = true: reference '
                              "schemas are recorded in the ledger schema")
        return replace(service, provision=value)  # type: ignore[arg-type]

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

    def seconds(self, value: Any, key: str, *, positive: bool = False) -> float:
        """A number of seconds; ``positive``: 0 is refused too (a ``lock_timeout`` of 0 is
        PostgreSQL's "no limit", the opposite of what it reads as)."""
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not 0 <= value <= MAX_SECONDS):  # NaN fails this comparison too
            raise ConfigError(f"invalid value {value!r}", file=self.file, key=key,
                              expected=f"a number of seconds from 0 to {MAX_SECONDS}")
        if positive and value == 0:
            raise ConfigError("0 would mean no limit to PostgreSQL (DDL waiting behind the "
                              "application's locks as long as they are held)", file=self.file,
                              key=key, expected=f"a number of seconds above 0, up to "
                              f"{MAX_SECONDS} (e.g. 0.5)")
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
        return validated_names(names, self.file, TENANTS_ENV_KEY) if names else ()

    def tenant_source(
        self, config: Path, value: Any, default_db: Database, *, read_names: bool = True,
    ) -> tuple[TenantSource, TenantQuery | None, tuple[str, ...], dict[str, TenantAttributes]]:
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
            return where, None, validated_names(names, self.file, "tenants"), {}
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

    def tenant_attributes(self, value: Any, *, table_form: bool) -> dict[str, TenantAttributes]:
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

    def attribute_tables(self, tables: dict[str, Any], prefix: str) -> dict[str, TenantAttributes]:
        """Tenant name -> attributes, from ``[PREFIX.NAME]`` tables (names validated)."""
        result: dict[str, TenantAttributes] = {}
        for tenant, table in tables.items():
            key = f"{prefix}.{tenant}"
            try:
                validate_tenant(tenant)
            except FleetError as exc:
                raise ConfigError(exc.message, file=self.file, key=key,
                                  expected=TENANT_NAME) from None
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
            result[tenant] = TenantAttributes(database, priority)
        return result


def _references(value: Any) -> list[str]:
    """The ``${VAR}`` references a configured string holds, as written."""
    return re.findall(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}", value) \
        if isinstance(value, str) else []
