"""The development loop and the embedded PostgreSQL: ``up``, ``run``, ``db``, ``reset``.

``fleet up`` makes the databases ready (the embedded server started, configured servers
waited for), migrates only when something is pending, and returns the URLs each service
reads. ``fleet reset`` deletes the embedded server's data and never touches another
database unless forced; even forced, it empties ``public`` only when told to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic_fleet.commands import wait_for_databases
from alembic_fleet.config.exports import database_variables
from alembic_fleet.databases import libpq_url
from alembic_fleet.embedded import EmbeddedServer
from alembic_fleet.exceptions import DatabaseUnavailableError, UsageError
from alembic_fleet.execution.events import EventSink, ignore
from alembic_fleet.execution.run import RunOptions, execute
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.namespace import is_reference_schema, reference_prefix
from alembic_fleet.model.outcome import RunOutcome
from alembic_fleet.model.plan import Plan
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.planning import make_plan
from alembic_fleet.redact import display
from alembic_fleet.workspace import Workspace


@dataclass(frozen=True)
class UpResult:
    """What ``fleet up`` did: the servers it made ready, the migrations it ran, the URLs."""

    embedded: bool
    outcome: RunOutcome | None
    """None when migrations were skipped or nothing was pending."""
    plan: Plan | None
    exports: dict[str, str]
    """Variable name -> libpq URL, the way each service reads its database."""


def up(workspace: Workspace, *, migrate: bool = True, wait: float = 30.0,
       on_event: EventSink = ignore) -> UpResult:
    """Databases ready, migrations run only when something is pending, and the URLs."""
    for database in workspace.databases_in_use():
        if database.is_embedded:  # starts the server, creates the database (engine cached)
            workspace.databases.engine(database)
    if any(not d.is_embedded for d in workspace.databases_in_use()):
        still_down = wait_for_databases(workspace, wait)
        if still_down:
            raise DatabaseUnavailableError(
                f"{', '.join(still_down)} did not accept connections within {wait:g} s",
                hint="start the database (docker compose up -d postgres?), or unset "
                "DATABASE_URI to use the embedded PostgreSQL")
    plan = make_plan(workspace) if migrate else None
    outcome = None
    if plan is not None and plan.runnable:
        outcome = execute(workspace, plan, RunOptions(command="fleet up"), on_event)
    return UpResult(workspace.config.uses_embedded, outcome, plan, database_exports(workspace))


def database_exports(workspace: Workspace) -> dict[str, str]:
    """The URL of each service's database under the variable the configuration reads."""
    config = workspace.config
    names = database_variables(config.file, list(config.services))
    exports: dict[str, str] = {}
    for name, service in config.services.items():
        if names[name] in exports:
            continue
        database = service.database
        # A configured URL is handed on exactly as the user wrote it (their variable keeps
        # its value); the embedded server's is made here.
        exports[names[name]] = database.url if database.url is not None else libpq_url(
            workspace.databases.engine(database).url)
    return exports


def embedded_server(workspace: Workspace) -> EmbeddedServer:
    """The configuration's embedded server; an error when no service uses it."""
    if not workspace.config.uses_embedded:
        raise UsageError(
            "no service uses the embedded PostgreSQL: every service has a database URL",
            hint="'fleet db' and 'fleet reset' manage only the embedded server; "
            "unset DATABASE_URI to use it",
        )
    return workspace.databases.embedded


def embedded_url(workspace: Workspace, database: str | None = None) -> str:
    """The embedded server's libpq URL for ``database`` (server and database created)."""
    server = embedded_server(workspace)
    names = [s.database.embedded_name for s in workspace.config.services.values()
             if s.database.is_embedded]
    name = database or names[0] or "postgres"
    workspace.databases.url(Database(embedded_name=name))  # the user's now (see there)
    return server.url(name)


def embedded_program(workspace: Workspace, name: str) -> str:
    """Path of a bundled PostgreSQL program (psql, pg_dump) of the embedded server."""
    return str(embedded_server(workspace).bin_path() / name)


def embedded_dir(workspace: Workspace) -> Path:
    return embedded_server(workspace).pgdata


def reset_embedded(workspace: Workspace) -> bool:
    """Delete the embedded server's data; never touches any other database."""
    return embedded_server(workspace).reset()


def database_names(workspace: Workspace) -> list[str]:
    """The names of the configured databases (what ``reset --force`` asks to type)."""
    names = [workspace.databases.url(d).database for d in workspace.databases_in_use()]
    return list(dict.fromkeys(n for n in names if n))


PUBLIC = "public"

_PUBLIC_CONTENTS = """
SELECT kind, name FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                        WHEN 'f' THEN 'foreign table' ELSE 'table' END AS kind,
         c.relname AS name, c.oid AS oid, 'pg_class'::regclass AS catalog
  FROM pg_catalog.pg_class c
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  UNION ALL
  SELECT 'type', t.typname, t.oid, 'pg_type'::regclass
  FROM pg_catalog.pg_type t
  WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'r', 'm')
  UNION ALL
  SELECT 'function', p.proname, p.oid, 'pg_proc'::regclass
  FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'public'::regnamespace
) AS found
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = found.catalog
                  AND d.objid = found.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension', e.extname FROM pg_catalog.pg_extension e
WHERE e.extnamespace = 'public'::regnamespace
ORDER BY 1, 2
"""
"""What ``public`` holds, as a person would list it: relations, types, functions (those of an
extension counted as the extension). Implicit objects (row types, indexes, sequences of
serial columns) go with their table."""

SHOWN = 10
"""Names listed per kind of object; more are counted."""


def public_users(workspace: Workspace) -> dict[str, tuple[Database, list[str]]]:
    """Database key -> (database, the services whose schema there is ``public``)."""
    found: dict[str, tuple[Database, list[str]]] = {}
    for target in workspace.select():
        if target.schema == PUBLIC:
            services = found.setdefault(target.database.key, (target.database, []))[1]
            if target.service not in services:
                services.append(target.service)
    return found


def kept_public(workspace: Workspace) -> list[str]:
    """What ``reset --force --keep-public`` left: each database's ``public`` and its services."""
    return [f"{display(database)} public ({', '.join(services)})"
            for database, services in public_users(workspace).values()]


def refuse_public(workspace: Workspace) -> None:
    """Refuse ``reset --force`` where a service keeps its tables in ``public``.

    ``public`` is shared: other applications, extensions and people put objects there, and
    nothing in the catalog says which ones the service's migrations made (a history that
    reads the database cannot even be rendered offline to find out). Dropping the schema
    would take them all, so the user must choose, having seen what is there: everything in
    it goes (``--include-public``) or it stays as it is (``--keep-public``).
    """
    users = public_users(workspace)
    if not users:
        return
    parts = []
    for database, services in users.values():
        with workspace.databases.connect(database) as connection:
            rows = connection.exec_driver_sql(_PUBLIC_CONTENTS).all()
            connection.rollback()
        parts.append(f"{', '.join(services)} in {display(database)}, whose public holds "
                     + (_contents(rows) if rows else "nothing"))
    raise UsageError(
        "fleet reset --force would drop everything in schema public, not only what the "
        "migrations made (fleet cannot tell them apart), for: " + "; ".join(parts),
        hint="add --include-public to drop everything in public (made again as PostgreSQL "
        "makes it in a new database), or --keep-public to leave public as it is (to empty "
        "it of the service's own objects, run 'fleet downgrade SERVICE base' first)")


def _contents(rows: list) -> str:
    by_kind: dict[str, list[str]] = {}
    for kind, name in rows:
        by_kind.setdefault(kind, []).append(name)
    return "; ".join(
        f"{len(names)} {kind}{'' if len(names) == 1 else 's'} ("
        + ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN
                                      else "") + ")"
        for kind, names in by_kind.items())


def drop_all_schemas(workspace: Workspace, *, public: str = "refuse") -> list[str]:
    """Drop every configured target schema and the ledger (with fleet's reference schemas).

    Where a service keeps its tables in ``public``: ``public="refuse"`` refuses before
    anything is dropped (:func:`refuse_public`), ``"include"`` drops it with everything in
    it and makes it again as PostgreSQL makes it (:func:`_remake_public`), ``"keep"``
    leaves it as it is (those targets stay at their revision). The ``public`` of a
    database where no service keeps its tables is never touched.
    """
    if public not in ("refuse", "include", "keep"):
        raise ValueError(f"public={public!r}")
    if public == "refuse":
        refuse_public(workspace)
    dropped: list[str] = []
    by_database: dict[str, list[Target]] = {}
    for target in workspace.select():
        by_database.setdefault(target.database.key, []).append(target)
    for group in by_database.values():
        database = group[0].database
        schemas = sorted({t.schema for t in group} | {workspace.config.ledger_schema})
        if public == "keep":
            schemas = [s for s in schemas if s != PUBLIC]
        with workspace.databases.connect(database) as connection, connection.begin():
            # fleet's reference schemas (provision = "reference") go with the ledger.
            prefix = reference_prefix(workspace.config.ledger_schema)
            found = connection.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %(p)s)",
                {"p": prefix}).scalars().all()
            schemas += sorted(n for n in found
                              if is_reference_schema(n, workspace.config.ledger_schema))
            for schema in schemas:
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
                if schema == PUBLIC:
                    _remake_public(connection)
                dropped.append(f"{display(database)} {schema}")
    return dropped


def _remake_public(connection: Any) -> None:
    """``public`` as ``initdb`` makes it, hence as a new database has it.

    PostgreSQL 15 and later: owned by ``pg_database_owner`` (whoever owns the database),
    ``USAGE`` for everyone, ``CREATE`` only for the owner. Before 15: owned by the bootstrap
    superuser, ``USAGE`` and ``CREATE`` for everyone. A plain ``CREATE SCHEMA public`` would
    belong to the role running the reset, with no grant at all: the application's roles
    could no longer even see their tables.
    """
    public = quote_ident(PUBLIC)
    connection.exec_driver_sql(f"CREATE SCHEMA {public}")
    connection.exec_driver_sql(f"COMMENT ON SCHEMA {public} IS 'standard public schema'")
    if (connection.dialect.server_version_info or (0,)) >= (15,):
        connection.exec_driver_sql(f"ALTER SCHEMA {public} OWNER TO pg_database_owner")
        connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {public} TO PUBLIC")
        return
    bootstrap = connection.exec_driver_sql(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10").scalar_one()
    connection.exec_driver_sql(f"ALTER SCHEMA {public} OWNER TO {quote_ident(bootstrap)}")
    connection.exec_driver_sql(f"GRANT USAGE, CREATE ON SCHEMA {public} TO PUBLIC")
