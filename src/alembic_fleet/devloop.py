"""The development loop and the embedded PostgreSQL: ``up``, ``run``, ``db``, ``reset``.

``fleet up`` makes the databases ready (the embedded server started, configured servers
waited for), migrates only when something is pending, and returns the URLs each service
reads. ``fleet reset`` deletes the embedded server's data and never touches another
database unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def drop_all_schemas(workspace: Workspace) -> list[str]:
    """Drop every configured target schema (``public`` is recreated empty) and the ledger."""
    dropped: list[str] = []
    by_database: dict[str, list[Target]] = {}
    for target in workspace.select():
        by_database.setdefault(target.database.key, []).append(target)
    for group in by_database.values():
        database = group[0].database
        schemas = sorted({t.schema for t in group} | {workspace.config.ledger_schema})
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
                if schema == "public":
                    connection.exec_driver_sql("CREATE SCHEMA public")
                dropped.append(f"{display(database)} {schema}")
    return dropped
