"""One schema of one database, one owner: across URLs that reach the same database.

The schema namespace (:mod:`alembic_fleet.model.namespace`) refuses, when the configuration
loads, every configuration in which a schema could have two owners; it knows databases by
their URLs. Two URLs may reach one database, though (a service on ``postgresql+psycopg2://``,
the others on ``postgresql://``; ``localhost`` and ``127.0.0.1``; a tenant placed on "its
own" database that is the default one spelled otherwise), which only the servers can tell
(:meth:`~alembic_fleet.databases.Databases.identity`). Two owners of one schema would share
its version table: the second reads the first's revision (``ahead``, never migrated) or
migrates into the other's tables.

So every plan (``migrate`` with ``--dry-run`` and ``--sql`` too, ``fleet plan``), ``tenants
add`` (before it records anything, also with ``--no-migrate``) and ``tenants remove``
(before it drops anything) check the targets it selected against every configured
target: a schema name that the configuration places under more than one URL is looked up on
the servers, and two owners refuse the command (exit 2). A configuration on one URL, or
one in which no schema name recurs (a database per tenant), asks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic_fleet.exceptions import DatabaseUnavailableError, UsageError
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.redact import display
from alembic_fleet.workspace import Workspace


def refuse_shared_schemas(workspace: Workspace, selected: Sequence[Target]) -> None:
    """Raise UsageError (exit 2) when a target of ``selected`` (configured, or the orphan
    schemas of a name ``tenants remove`` was given) shares its schema of its database with
    another owner's target (through another URL)."""
    if len(workspace.databases_in_use()) < 2:
        return
    by_schema: dict[str, list[Target]] = {}
    for target in (*workspace.select(), *selected):  # selected: also a name's orphans
        by_schema.setdefault(target.schema, []).append(target)
    shared = {schema: named for schema, named in by_schema.items()
              if len({t.database.key for t in named}) > 1}  # else the namespace decided
    if not shared:
        return
    identities: dict[str, tuple[object, ...]] = {}
    for target in selected:
        for other in shared.get(target.schema, ()):
            if other.database.key == target.database.key or (
                    other.service, other.tenant) == (target.service, target.tenant):
                continue
            if _identity(workspace, other.database, identities) == _identity(
                    workspace, target.database, identities):
                raise UsageError(
                    f"{_owner(other)} and {_owner(target)} both use schema "
                    f"'{target.schema}' of one database, reached as "
                    f"{display(other.database)} and {display(target.database)}; nothing "
                    "was run",
                    hint="give one of the two another schema, or the tenant another "
                    "database (each schema must have one owner: they would share its "
                    "version table)")


def _identity(workspace: Workspace, database: Database,
              known: dict[str, tuple[object, ...]]) -> tuple[object, ...]:
    """The database's identity (asked once per URL: ``known``); one that cannot be reached
    now, or whose URL is not valid, is its own (the plan reports its targets, and nothing
    runs there)."""
    if database.key not in known:
        try:
            known[database.key] = workspace.databases.identity(database)
        except (DatabaseUnavailableError, UsageError):  # unreachable, or not a valid URL
            known[database.key] = (database.key,)
    return known[database.key]


def _owner(target: Target) -> str:
    return f"service '{target.service}'" + (
        f" (tenant '{target.tenant}')" if target.tenant else "")
