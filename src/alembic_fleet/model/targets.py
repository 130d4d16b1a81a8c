"""Services, databases and targets: what fleet migrates.

A *target* is one (service, schema) pair on one database. These are plain values: building
them never touches a database or Alembic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alembic_fleet.model.identifiers import TENANT_PLACEHOLDER, render_schema


@dataclass(frozen=True)
class Database:
    """Where a service's schemas live.

    Either a URL the user configured, or a database of the embedded PostgreSQL
    (``url`` is None and ``embedded_name`` names the database on the embedded server).
    """

    url: str | None = None
    embedded_name: str | None = None
    key: str = field(init=False, repr=False, compare=False)
    """A stable identity used to group targets per database (may contain a password);
    computed once, since every target of a 30,000-target run is grouped by it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.url if self.url is not None
                           else f"embedded:///{self.embedded_name}")

    @property
    def is_embedded(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class Baseline:
    """What a fresh schema of a service starts from, before its first revision.

    Some projects created their first tables with ``metadata.create_all()`` and stamped;
    their first revision alters those tables, so the history only works on a schema that
    already holds them. A baseline recreates that state: it stands for *base* (no revision
    applied), and the revisions then run from base. It is applied only to a schema that does
    not exist yet (a fresh tenant, ``fleet check``'s scratch schema), in the transaction that
    creates it, with ``search_path`` already set to the new schema; never to an existing one.

    ``kind`` is ``sql`` (``path``: a file of SQL statements naming no schema) or
    ``callable`` (``target``: ``"package.module:function"``, called with a SQLAlchemy
    connection).
    """

    kind: Literal["sql", "callable"]
    path: Path | None = None
    target: str | None = None
    folder: Path | None = None
    """The service folder: a callable's package is imported from there."""

    @property
    def spec(self) -> str:
        """How the configuration wrote it, for messages."""
        return str(self.path) if self.kind == "sql" else str(self.target)


@dataclass(frozen=True)
class Service:
    """One Alembic project of the platform, as configured."""

    name: str
    path: Path
    schema: str
    database: Database
    alembic_ini: str = "alembic.ini"
    version_table: str = "alembic_version"
    depends_on: tuple[str, ...] = ()
    """Services whose target (same tenant) must be migrated before this one's."""
    revision_pattern: str | None = None
    """``fleet check``: a regular expression every revision id must match."""
    file_pattern: str | None = None
    """``fleet check``: a regular expression every revision file name must match
    (``{revision}`` stands for the file's revision id)."""
    application_packages: tuple[str, ...] | None = None
    """``fleet check``: packages a revision must not import (None: the service folder's)."""
    python: tuple[str, ...] | None = None
    """The command starting the Python interpreter the service's code runs in, run in the
    service folder (``("/srv/auth/.venv/bin/python",)``, ``("uv", "run", "python")``);
    None: fleet's own interpreter."""
    search_path: tuple[str, ...] = ()
    """Schemas searched after the target's own while it migrates (``SET search_path TO
    target, *search_path``), so that types, functions and operator classes of extensions
    installed in a shared schema (``extensions``, ``public``) resolve unqualified. They are
    read-only context: the target's schema stays first, so whatever a revision creates
    unqualified lands in the target."""
    baseline: Baseline | None = None
    """What a fresh schema starts from before the first revision (see :class:`Baseline`)."""
    provision: Literal["migrate", "reference"] = "migrate"
    """How a new tenant's schema is made: ``migrate`` runs every revision on it;
    ``reference`` copies a reference schema built once per head (see
    :mod:`alembic_fleet.execution.provision`)."""

    @property
    def per_tenant(self) -> bool:
        """True when the service keeps one schema per tenant."""
        return TENANT_PLACEHOLDER in self.schema

    @property
    def ini_path(self) -> Path:
        return self.path / self.alembic_ini

    def schema_for(self, tenant: str | None) -> str:
        return render_schema(self.schema, tenant if self.per_tenant else None)


@dataclass(frozen=True)
class Target:
    """One (service, schema) pair; ``tenant`` is None for a single-schema service."""

    service: str
    tenant: str | None
    schema: str
    database: Database
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Targets key the dicts and sets of every run (several lookups per target, 30,000
        # targets at 10,000 tenants): the hash is computed once, not on every lookup.
        object.__setattr__(self, "_hash", hash((self.service, self.tenant, self.schema,
                                                self.database)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Target], tuple[str, str | None, str, Database]]:
        # Made again from its values, so the hash is this process's: a string's hash
        # depends on the process's seed (a spawned worker, a service's own interpreter).
        return Target, (self.service, self.tenant, self.schema, self.database)

    @property
    def label(self) -> str:
        return f"{self.service}/{self.schema}"


def targets_for(
    services: list[Service], tenants: list[str],
    tenant_databases: Mapping[str, Database] | None = None,
) -> list[Target]:
    """Every target of ``services`` for ``tenants``, in config order, tenants in list order.

    A tenant placed on its own server (``tenant_databases``) has every per-tenant schema
    there, whatever the service's ``database``: the tenant's data is isolated as a whole.
    Single-schema services have no tenant and stay on their own database.
    """
    own = tenant_databases or {}
    result: list[Target] = []
    for service in services:
        if service.per_tenant:
            result.extend(
                Target(service.name, t, service.schema_for(t), own.get(t, service.database))
                for t in tenants
            )
        else:
            result.append(Target(service.name, None, service.schema_for(None), service.database))
    return result
