"""A start-up guard: a service refuses to run against schemas that are not at head.

Code that expects the newest tables but meets an older schema fails later and obscurely (a
missing column in the middle of a request); code meeting a schema migrated by a *newer*
release may corrupt data. Checking once at start-up turns both into one clear error that says
which command fixes it::

    from alembic_fleet.startup_check import require_head

    require_head(os.environ["DATABASE_URI"], service="auth", tenants=settings.tenants)

The check is cheap on purpose, since it runs on every start of every replica: one connection,
read-only, two queries for up to :data:`~alembic_fleet.catalog.versions.BATCH` schemas (the
bulk reader of ``fleet status``), no DDL and no lock beyond the reads. The scripts are read
through the Alembic bridge, the only package that imports Alembic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.catalog.versions import read_versions
from alembic_fleet.config.loader import EMBEDDED_DIR, load_config
from alembic_fleet.databases import Databases, explain_connection_error
from alembic_fleet.exceptions import ConfigError, FleetError, NotUpToDateError
from alembic_fleet.model.identifiers import tenant_from_schema, validate_schema_template
from alembic_fleet.model.status import TargetState, classify, reached
from alembic_fleet.model.targets import Database, Service, Target
from alembic_fleet.redact import redact_url, scrub

__all__ = ["SchemaNotAtHead", "SchemaState", "require_head"]


@dataclass(frozen=True)
class SchemaState:
    """One schema that is not at head: where it stands and why that blocks start-up."""

    schema: str
    tenant: str | None
    current: tuple[str, ...]
    """Its revisions; empty when it has no version table or an empty one."""
    state: str
    """``missing``, ``behind`` or ``ahead`` (the values ``fleet status`` uses)."""
    reason: str
    """One line saying what is wrong, e.g. ``auth_toshiba has no version table``."""


class SchemaNotAtHead(NotUpToDateError, RuntimeError):
    """Some schema of the service is missing, behind or ahead of the service's scripts.

    A RuntimeError, so that generic start-up code treats it as fatal, and a FleetError, so
    that it carries a ``hint`` like every error fleet raises. ``schema`` and ``current``
    describe the first failing schema; ``failures`` holds all of them.
    """

    def __init__(self, message: str, *, service: str, heads: tuple[str, ...],
                 failures: tuple[SchemaState, ...], command: str) -> None:
        super().__init__(message, hint=command)
        self.service = service
        self.heads = heads
        self.failures = failures
        self.command = command
        self.schema = failures[0].schema
        self.current = failures[0].current


def require_head(
    url: str | Engine | None = None,
    *,
    service: str | None = None,
    tenant: str | None = None,
    tenants: Sequence[str] | None = None,
    schema: str | None = None,
    config: str | os.PathLike[str] | None = None,
    alembic_ini: str | os.PathLike[str] | None = None,
    at_least: str | None = None,
) -> dict[str, str]:
    """Check that every schema of ``service`` is at its scripts' head; return ``{schema: head}``.

    ``url`` (a URL or an Engine) is the database to check; without it the service's database
    from ``fleet.toml`` is used (the embedded PostgreSQL in development). ``fleet.toml`` comes
    from ``config``, ``FLEET_CONFIG`` or the working directory and its parents, exactly as the
    ``fleet`` command finds it, so the guard and the migrations agree on scripts and schemas.
    Without ``fleet.toml``, ``alembic_ini`` names the scripts and ``schema`` the schema (or a
    template with ``{tenant}``; default ``public``).

    ``tenant`` / ``tenants`` choose the tenants checked (default: the configured ones,
    ``TENANTS`` included); a string of names separated by spaces or commas is accepted too.
    ``schema`` checks that schema (or template) instead of the service's configured one.

    ``at_least`` (a revision id, partial, or ``head``) accepts every schema at that revision
    or a descendant of it instead of only the head: an application that needs revision X
    starts while later, compatible revisions are being rolled out (the returned mapping
    then holds each schema's own revisions).

    Raises :class:`SchemaNotAtHead` listing every failing schema and the command to run,
    :class:`~alembic_fleet.exceptions.ConfigError` for an unusable configuration, and
    :class:`~alembic_fleet.exceptions.DatabaseUnavailableError` when the database cannot be
    reached; no message contains a password.
    """
    wanted_tenants = _tenant_list(tenant, tenants)
    svc, configured_tenants, embedded_dir, from_config = _service(
        url, service=service, schema=schema, config=config, alembic_ini=alembic_ini)
    if svc.per_tenant:
        chosen = wanted_tenants if wanted_tenants is not None else configured_tenants
        if not chosen:
            raise ConfigError(f"service '{svc.name}' keeps one schema per tenant "
                              f"({svc.schema}) but no tenant was given",
                              hint="pass tenants=[...] or set TENANTS")
        targets = [Target(svc.name, t, svc.schema_for(t), svc.database) for t in chosen]
    else:
        # schema= may name one tenant's schema of a per-tenant service: keep that tenant
        # for the suggested command.
        template = from_config.schema if from_config and from_config.per_tenant else None
        only = tenant_from_schema(template, svc.schema) if template else None
        targets = [Target(svc.name, only, svc.schema_for(None), svc.database)]

    scripts = ServiceScripts(svc)
    graph = scripts.graph
    wanted = scripts.resolve(at_least) if at_least else graph.heads
    pairs = {(t.schema, svc.version_table) for t in targets}
    current = _read(url, svc.database, embedded_dir, pairs)

    failures: list[SchemaState] = []
    held: dict[str, str] = {}
    for target in targets:
        status = classify(target, current.get((target.schema, svc.version_table)), graph)
        ok = (status.state is TargetState.AT_HEAD if at_least is None
              else reached(graph, status, wanted))
        if not ok:
            failures.append(_describe(target, status.current, status.state, wanted,
                                      known=all(graph.knows(r) for r in status.current)))
        held[target.schema] = ",".join(status.current)
    if failures:
        raise _error(svc, wanted, failures, from_config)
    if at_least is not None:
        return held
    head = ",".join(graph.heads)
    return {target.schema: head for target in targets}


def _tenant_list(tenant: str | None, tenants: Sequence[str] | str | None) -> list[str] | None:
    """Tenants asked for, or None for "the configured ones"."""
    if tenant is None and tenants is None:
        return None
    names = [tenant] if tenant else []
    if isinstance(tenants, str):  # settings often hold TENANTS as it came: "a b" or "a,b"
        names.extend(n for n in re.split(r"[\s,]+", tenants) if n)
    else:
        names.extend(tenants or ())
    return list(dict.fromkeys(names))


def _service(
    url: str | Engine | None, *, service: str | None, schema: str | None,
    config: str | os.PathLike[str] | None, alembic_ini: str | os.PathLike[str] | None,
) -> tuple[Service, tuple[str, ...], Path, Service | None]:
    """The service to check, the configured tenants, the embedded server's folder and the
    service as configured (None without fleet.toml)."""
    if schema is not None:
        validate_schema_template(schema, file=None, key="schema")
    if alembic_ini is not None:
        ini = Path(alembic_ini).expanduser().resolve()
        if not ini.is_file():
            raise ConfigError(f"{ini} does not exist", key="alembic_ini",
                              expected="the service's alembic.ini")
        if url is None:
            raise ConfigError("alembic_ini was given without a database URL",
                              hint="pass the URL (e.g. os.environ['DATABASE_URI'])")
        name = service or ini.parent.name
        # With an Engine the Database value is never connected to; it only names the service.
        database = Database(url=url) if isinstance(url, str) else Database(embedded_name="-")
        svc = Service(name, ini.parent, schema or "public", database, ini.name)
        return svc, (), Path(EMBEDDED_DIR), None
    fleet = load_config(config)
    if service is None:
        if len(fleet.services) != 1:
            raise ConfigError("which service? pass service=NAME", file=str(fleet.file),
                              expected="one of " + ", ".join(fleet.services))
        service = next(iter(fleet.services))
    configured = fleet.services.get(service)
    if configured is None:
        raise ConfigError(f"unknown service {service!r}", file=str(fleet.file),
                          expected="one of " + ", ".join(fleet.services))
    svc = configured
    if schema is not None:
        svc = replace(svc, schema=schema)
    if isinstance(url, str):
        svc = replace(svc, database=Database(url=url))
    return svc, fleet.tenants, fleet.embedded_dir, configured


def _read(url: str | Engine | None, database: Database, embedded_dir: Path,
          pairs: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Current revisions of ``pairs`` over one read-only connection."""
    if isinstance(url, Engine):
        try:
            connection = url.connect()
        except DBAPIError as exc:
            raise explain_connection_error(exc, redact_url(str(url.url))) from None
        return _read_on(connection, pairs)
    databases = Databases(embedded_dir)
    try:
        return _read_on(databases.connect(database), pairs)
    finally:
        databases.dispose()


def _read_on(connection: Connection, pairs: set[tuple[str, str]]
             ) -> dict[tuple[str, str], tuple[str, ...]]:
    # Read-only transactions: the guard can never write, whatever a future change does.
    with connection:
        readonly = connection.execution_options(postgresql_readonly=True)
        try:
            return read_versions(readonly, pairs)
        except DBAPIError as exc:
            original = getattr(exc, "orig", None) or exc
            raise FleetError(scrub(f"cannot read the version tables: {original}".strip()),
                             hint="check the database user's privileges") from None


def _describe(target: Target, current: tuple[str, ...], state: TargetState,
              heads: tuple[str, ...], *, known: bool) -> SchemaState:
    """One failing schema, in the words a person starting the service needs."""
    at = ", ".join(current) or "base (an empty version table)"
    head = ", ".join(heads)
    if state is TargetState.MISSING:
        reason = f"{target.schema} has no version table"
    elif state is TargetState.AHEAD and not known:
        reason = (f"{target.schema} is at {at}, which these scripts do not know: "
                  "deploy the newer code or downgrade")
    elif state is TargetState.AHEAD:
        reason = (f"{target.schema} is at {at}, past head {head}: "
                  "deploy the matching code or downgrade")
    else:
        reason = f"{target.schema} is at {at}, head is {head}"
    return SchemaState(target.schema, target.tenant, current, str(state), reason)


def _error(svc: Service, heads: tuple[str, ...], failures: list[SchemaState],
           from_config: Service | None) -> SchemaNotAtHead:
    """One error for all failing schemas, ending with the single command that fixes them."""
    to_migrate = [f for f in failures if f.state != TargetState.AHEAD]
    if not to_migrate:
        command = f"fleet status {svc.name}" if from_config else "alembic current"
    elif from_config is None:  # no fleet.toml: plain Alembic in the service folder
        command = (f"ALEMBIC_SCHEMA={to_migrate[0].schema} alembic upgrade head"
                   if len(to_migrate) == 1 else
                   "ALEMBIC_SCHEMA=<schema> alembic upgrade head (for each schema above)")
    elif len(to_migrate) == 1 and to_migrate[0].tenant is not None:
        command = f"fleet migrate {svc.name} --tenant {to_migrate[0].tenant}"
    else:
        command = f"fleet migrate {svc.name}"
    advice = f"run '{command}' before starting the service" if to_migrate else ""
    if len(failures) == 1:
        reason = failures[0].reason
        message = f"{reason}: {advice}" if advice else reason
    else:
        lines = [f"service '{svc.name}': {len(failures)} schemas are not at head:"]
        lines.extend(f"  {f.reason}" for f in failures)
        if advice:
            lines.append(advice)
        message = "\n".join(lines)
    return SchemaNotAtHead(scrub(message), service=svc.name, heads=heads,
                           failures=tuple(failures), command=command)
