"""The body of a service's ``env.py``: ``run_migrations(target_metadata=...)``.

Two callers:

* ``fleet`` hands over an open connection and the target schema through
  ``config.attributes`` (``connection``, ``fleet_schema``);
* plain ``alembic`` in the service folder: the schema comes from ``-x schema=NAME``,
  ``-x tenant=NAME`` or ``ALEMBIC_SCHEMA``; the database from ``-x url=``, the service's entry
  in ``fleet.toml`` (embedded PostgreSQL included), ``sqlalchemy.url`` in alembic.ini, or
  ``DATABASE_URI`` / ``DATABASE_URL``.

Either way the version table lives in the target schema, the schema is created when missing,
and ``search_path`` is set *inside* the migration transaction, to the target schema followed
by the service's shared schemas (``search_path`` in fleet.toml, ``-x search_path=a,b`` or
``ALEMBIC_SEARCH_PATH``), where extensions' types live; a schema created here gets the
service's baseline first (see :mod:`.baseline`). The ``SET`` goes inside the transaction
because a ``SET`` issued before ``begin_transaction()`` would open a transaction under
SQLAlchemy 2, silently turning ``transaction_per_migration`` off. It is a session-level
``SET`` (not ``SET LOCAL``) so that it survives the COMMIT of an ``autocommit_block()``, and
it is reset when the migration ends.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic_fleet.alembic_bridge import baseline as baselines
from alembic_fleet.exceptions import ConfigError, FleetError, UsageError
from alembic_fleet.model.identifiers import (
    quote_ident,
    search_path_value,
    shared_schema_problem,
    split_schema,
)
from alembic_fleet.model.targets import Baseline, Service

ATTR_CONNECTION = "connection"
ATTR_SCHEMA = "fleet_schema"
ATTR_PROBE = "fleet_probe"
"""A dict fleet hands over to learn the env.py's configure options without running it."""
ATTR_APPLIED = "fleet_applied"
"""A list fleet hands over; the helper appends each revision as Alembic applies it."""
ATTR_LISTENER = "fleet_listener"
"""An object fleet hands over whose methods run inside the migration's transaction:
``revision_applied(connection, rev)`` / ``revision_unapplied(connection, rev)`` as each
revision is applied or removed, and ``before_commit(connection)`` once every revision of a
single-transaction migration ran (fleet's ledger rows commit with the migration)."""
ATTR_DRIVE = "fleet_drive"
"""A callable fleet hands over to run a mixed replay plan inside the migration's transaction,
once the schema is prepared: ``drive(run_migrations)`` replays the static revisions itself
and calls ``run_migrations()`` (Alembic's) for each stretch that must run online."""
ATTR_SEARCH_PATH = "fleet_search_path"
"""The shared schemas fleet hands over, searched after the target's own."""
ATTR_BASELINE = "fleet_baseline"
"""The service's :class:`~alembic_fleet.model.targets.Baseline` (or None) fleet hands over."""
ATTR_FRESH = "fleet_fresh"
"""Offline only: True when fleet found the target's schema missing, so the script includes
the baseline (online, the helper looks for itself, inside the transaction)."""


@dataclass(frozen=True)
class SharedContext:
    """What a migration needs besides its schema: the shared schemas searched after it, the
    baseline of a fresh schema, and (offline) whether the schema is fresh."""

    search_path: tuple[str, ...] = ()
    baseline: Baseline | None = None
    fresh_offline: bool = False


def service_attributes(service: Service, *, fresh: bool = False) -> dict[str, Any]:
    """The ``config.attributes`` fleet sets for ``service`` (next to the connection and the
    schema), so that every way fleet runs an env.py sees the same search path and baseline."""
    return {ATTR_SEARCH_PATH: service.search_path, ATTR_BASELINE: service.baseline,
            ATTR_FRESH: fresh}


def run_migrations(target_metadata: Any = None, **configure_kwargs: Any) -> None:
    """Run the migrations Alembic asked for, for one schema, online or offline."""
    from alembic import context
    from alembic.util import CommandError

    config = context.config
    probe = config.attributes.get(ATTR_PROBE)
    if probe is not None:
        probe.update(configure_kwargs)
        probe["target_metadata"] = target_metadata
        return
    try:
        _run(context, target_metadata, configure_kwargs)
    except FleetError as exc:
        if config.attributes.get(ATTR_SCHEMA):
            raise
        # Plain alembic prints a CommandError as one line instead of a traceback.
        hint = f"\n  hint: {exc.hint}" if exc.hint else ""
        raise CommandError(f"{exc.message}{hint}") from None


def _run(context: Any, target_metadata: Any, options: dict[str, Any]) -> None:
    config = context.config
    if ATTR_SCHEMA not in config.attributes:
        _configure_logging(config)
    schema = config.attributes.get(ATTR_SCHEMA) or _schema_from_command_line(context)
    shared = _shared_context(context)
    kwargs = configure_kwargs(schema, target_metadata, options)
    applied = config.attributes.get(ATTR_APPLIED)
    listener = config.attributes.get(ATTR_LISTENER)
    if applied is not None or listener is not None:
        _record_applied(kwargs, applied if applied is not None else [], listener)
    if context.is_offline_mode():
        _run_offline(context, schema, kwargs, shared)
        return
    connection = config.attributes.get(ATTR_CONNECTION)
    if connection is not None:
        _run_online(context, connection, schema, kwargs, listener, shared)
        return
    _run_on_own_engine(context, schema, kwargs, shared)


def _run_on_own_engine(context: Any, schema: str, kwargs: dict[str, Any],
                       shared: SharedContext) -> None:
    """Plain ``alembic``: connect on the driver the URL names, as fleet does (an async
    driver through ``run_sync``, as Alembic's async template does)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from alembic_fleet import drivers

    text = _url_from_command_line(context)
    driver = drivers.for_url(text)
    url = make_url(text).set(drivername=driver.drivername)
    # The limits of fleet's own sessions: a server that answers nothing is given up on.
    limits = drivers.session_limits(driver, url.query)
    if not driver.is_async:
        from sqlalchemy import create_engine

        engine = create_engine(url, poolclass=NullPool, connect_args=limits)
        try:
            with engine.connect() as connection:
                _run_online(context, connection, schema, kwargs, shared=shared)
        finally:
            engine.dispose()
        return
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool, connect_args=limits)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(
                    lambda sync: _run_online(context, sync, schema, kwargs, shared=shared))
        finally:
            await engine.dispose()

    asyncio.run(run())


def configure_kwargs(schema: str, metadata: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The keywords for Alembic's ``context.configure`` on ``schema``: fleet's defaults
    (version table in the schema, only that schema compared, types compared, the version
    table never proposed for dropping), then ``extra`` (the env.py's own options) on top.

    Shared by the env helper and by ``fleet check``'s model comparison, so both see the
    schema the same way. ``extra`` is not changed; a user ``include_name`` is kept and
    called after fleet's own filter.
    """
    extra = dict(extra)
    version_table = extra.get("version_table", "alembic_version")
    user_include_name = extra.pop("include_name", None)

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        # The version table lives in the tenant schema, which autogenerate sees as the
        # default schema; without this it proposes to drop it.
        if type_ == "table" and name == version_table:
            return False
        return user_include_name(name, type_, parent_names) if user_include_name else True

    kwargs: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table_schema": schema,
        "include_schemas": False,
        "include_name": include_name,
        "compare_type": True,
    }
    kwargs.update(extra)
    return kwargs


def _record_applied(kwargs: dict[str, Any], applied: list[str], listener: Any) -> None:
    """Chain an ``on_version_apply`` hook that tells fleet how far a target got (Alembic
    calls it inside the transaction that applied the revision)."""
    user_hook = kwargs.get("on_version_apply")

    def on_version_apply(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        applied.append(step.up_revision_id if step.is_upgrade else step.down_revision_ids)
        if listener is not None:
            if step.is_upgrade:
                listener.revision_applied(ctx.connection, step.up_revision_id)
            else:
                for revision in step.up_revision_ids:
                    listener.revision_unapplied(ctx.connection, revision)
        if user_hook:
            user_hook(ctx=ctx, step=step, heads=heads, run_args=run_args)

    kwargs["on_version_apply"] = on_version_apply


def _run_online(context: Any, connection: Any, schema: str, kwargs: dict[str, Any],
                listener: Any = None, shared: SharedContext = SharedContext()) -> None:
    context.configure(connection=connection, **kwargs)
    if kwargs.get("transaction_per_migration"):
        # One transaction per revision: a SET LOCAL would end with the first one, so set the
        # session's path and commit before Alembic begins its own transactions. Each
        # revision's transaction carries the target's ledger row too.
        # The schema and its baseline commit together, before the first revision.
        if listener is not None:
            listener.each_revision = True
        _prepare_schema(connection, schema, shared)
        connection.commit()
        try:
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if not connection.closed and not connection.invalidated:
                connection.rollback()
                connection.exec_driver_sql("RESET search_path")
                connection.commit()
        return
    # A session-level SET issued inside the transaction: rolled back with it on failure, and
    # kept across the COMMIT of an ``autocommit_block()`` (CREATE INDEX CONCURRENTLY), which
    # a SET LOCAL would not survive. Reset afterwards: the connection may be reused.
    drive = context.config.attributes.get(ATTR_DRIVE)
    try:
        with context.begin_transaction():
            _prepare_schema(connection, schema, shared)
            if drive is None:
                context.run_migrations()
            else:
                drive(context.run_migrations)
            if listener is not None:
                listener.before_commit(connection)
    finally:
        if (not connection.closed and not connection.invalidated
                and not connection.in_transaction()):
            connection.exec_driver_sql("RESET search_path")
            connection.commit()


def _prepare_schema(connection: Any, schema: str, shared: SharedContext) -> None:
    """Create the schema when missing, set the search path, and give a schema created here
    its baseline: all in the caller's transaction."""
    fresh = shared.baseline is not None and not baselines.schema_exists(connection, schema)
    connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    path = search_path_value(schema, shared.search_path)
    connection.exec_driver_sql(f"SET search_path TO {path}")
    if fresh and shared.baseline is not None:
        baselines.apply(connection, shared.baseline)


def _configure_logging(config: Any) -> None:
    """Under plain alembic, apply alembic.ini's logging sections, as Alembic's own env.py
    does, so 'Running upgrade ...' lines appear; fleet keeps its own output."""
    import logging.config

    ini = config.config_file_name
    if ini and config.file_config.has_section("loggers"):
        logging.config.fileConfig(ini, disable_existing_loggers=False)


def _run_offline(context: Any, schema: str, kwargs: dict[str, Any],
                 shared: SharedContext = SharedContext()) -> None:
    quoted = quote_ident(schema)
    baseline = (baselines.offline_sql(shared.baseline)
                if shared.baseline is not None and shared.fresh_offline else None)
    # Only the dialect matters for SQL output: never connect (or start a server) for it.
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    url = context.config.attributes.get("fleet_url") or x_url or "postgresql://"
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **kwargs)
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        context.execute(f"SET search_path TO {search_path_value(schema, shared.search_path)}")
        if baseline:
            # Verbatim: context.execute() would strip it and append ';' after a trailing
            # comment, inside it.
            context.get_context().impl.static_output(baseline)
        context.run_migrations()


def _schema_from_command_line(context: Any) -> str:
    """Schema for plain ``alembic``: -x schema / -x tenant / ALEMBIC_SCHEMA / single schema."""
    x_args = context.get_x_argument(as_dictionary=True)
    service = _fleet_service(context)
    if x_args.get("schema"):
        _warn_unconfigured(context, service, x_args["schema"])
        return x_args["schema"]
    if x_args.get("tenant"):
        if service is None:
            raise UsageError("-x tenant=NAME needs a fleet.toml that lists this service",
                             hint="use -x schema=NAME or ALEMBIC_SCHEMA instead")
        tenant = x_args["tenant"]
        known = _known_tenants(context)
        if known is not None and tenant not in known:  # a typo must not create schemas
            raise UsageError(
                f"tenant {tenant!r} is not configured",
                hint=f"run 'fleet tenants add {tenant}' to record it, or name the schema "
                f"outright: -x schema={service.schema_for(tenant)}")
        return service.schema_for(tenant)
    if os.environ.get("ALEMBIC_SCHEMA"):
        schema = os.environ["ALEMBIC_SCHEMA"]
        _warn_unconfigured(context, service, schema)
        return schema
    if service is not None and not service.per_tenant:
        return service.schema
    raise UsageError(
        "no target schema: this service keeps one schema per tenant",
        hint="run e.g. 'ALEMBIC_SCHEMA=auth_default alembic upgrade head', "
        "'alembic -x tenant=default upgrade head', or use 'fleet migrate'",
    )


def _known_tenants(context: Any) -> frozenset[str] | None:
    """The configured tenants, when the configuration lists them (a registry query is not
    run from here: None)."""
    config = _fleet_config(context)
    if config is None or (config.tenant_source.kind == "query" and not config.tenants_from_env):
        return None
    return frozenset(config.tenants)


def _warn_unconfigured(context: Any, service: Any, schema: str) -> None:
    """A schema named outright (``ALEMBIC_SCHEMA``) is the user's choice; one that the
    service's template makes for a tenant that is not configured is said, since fleet will
    take it for an orphan."""
    if service is None or not service.per_tenant:
        return
    tenant = split_schema(service.schema, schema)
    known = _known_tenants(context)
    if tenant and known is not None and tenant not in known:
        print(f"warning: {schema} is the schema of tenant {tenant!r}, which is not "
              f"configured: fleet will list it as an orphan ('fleet tenants add {tenant}' "
              "records it)", file=sys.stderr)


def _shared_context(context: Any) -> SharedContext:
    """The search path and baseline: handed over by fleet, else (plain ``alembic``) the
    search path from ``-x search_path=a,b``, ``ALEMBIC_SEARCH_PATH`` or the service's entry
    in fleet.toml, and the baseline from that entry.

    Offline, plain ``alembic`` cannot look at the database: a script that starts from base
    is taken as one for a fresh schema and includes the baseline (``fleet migrate --sql``
    knows, and includes it only for schemas that do not exist).
    """
    attributes = context.config.attributes
    if ATTR_SCHEMA in attributes:
        return SharedContext(tuple(attributes.get(ATTR_SEARCH_PATH) or ()),
                             attributes.get(ATTR_BASELINE), bool(attributes.get(ATTR_FRESH)))
    x_args = context.get_x_argument(as_dictionary=True)
    written = x_args.get("search_path")
    where = "-x search_path"
    if written is None:
        written, where = os.environ.get("ALEMBIC_SEARCH_PATH"), "ALEMBIC_SEARCH_PATH"
    service = _fleet_service(context)
    if written is None:
        search_path = service.search_path if service is not None else ()
    else:
        search_path = _parse_search_path(written, where)
    fresh = context.is_offline_mode() and context.get_starting_revision_argument() in (
        None, "base")
    return SharedContext(search_path, service.baseline if service is not None else None, fresh)


def _parse_search_path(written: str, where: str) -> tuple[str, ...]:
    """Schema names separated by commas or spaces (empty: none), each validated."""
    names = [name for name in re.split(r"[\s,]+", written) if name]
    for name in names:
        problem = shared_schema_problem(name)
        if problem:
            raise UsageError(f"{where}: {problem}",
                             hint="list shared schemas by name, e.g. extensions,public")
    return tuple(dict.fromkeys(names))


def _url_from_command_line(context: Any) -> str:
    """Database URL for plain ``alembic`` (see the module docstring for the order)."""
    from alembic_fleet.databases import Databases

    x_args = context.get_x_argument(as_dictionary=True)
    if x_args.get("url"):
        return x_args["url"]
    service = _fleet_service(context)
    if service is not None:
        config = _fleet_config(context)
        return Databases(config.embedded_dir).migration_url(service.database).render_as_string(
            hide_password=False
        )
    ini_url = context.config.get_main_option("sqlalchemy.url")
    if ini_url:
        return ini_url
    for name in ("DATABASE_URI", "DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name]
    raise UsageError(
        "no database URL for this service",
        hint="set DATABASE_URI, pass -x url=..., or list the service in fleet.toml",
    )


_UNSET = object()
_cache: dict[str, Any] = {}


def _fleet_config(context: Any) -> Any:
    """The fleet configuration above this service folder, or None when there is none."""
    ini = context.config.config_file_name
    start = Path(ini).resolve().parent if ini else Path.cwd()
    cached = _cache.get(str(start), _UNSET)
    if cached is not _UNSET:
        return cached
    from alembic_fleet.config import load_config

    try:
        config = load_config(start=start)
    except ConfigError as exc:
        if "no fleet.toml" in exc.message and not os.environ.get("FLEET_CONFIG"):
            config = None
        else:
            raise
    _cache[str(start)] = config
    return config


def _fleet_service(context: Any) -> Any:
    """This folder's service in the fleet configuration, matched by its alembic.ini."""
    config = _fleet_config(context)
    ini = context.config.config_file_name
    if config is None or not ini:
        return None
    ini_path = Path(ini).resolve()
    for service in config.services.values():
        if service.ini_path.resolve() == ini_path:
            return service
    return None
