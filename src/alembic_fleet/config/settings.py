"""The validated configuration: plain frozen values, built by :mod:`.loader`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.model.identifiers import validate_tenant
from alembic_fleet.model.namespace import SchemaNamespace
from alembic_fleet.model.targets import Database, Service

CONFIG_FILE = "fleet.toml"
PYPROJECT = "pyproject.toml"
EMBEDDED_DIR = ".fleet"
TENANT_NAME = "lowercase letter first, then a-z, 0-9 or _"


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
    version_mirror: bool = False
    """Keep every migrated version table's rows in one table of the ledger schema, by a
    trigger (see :mod:`alembic_fleet.catalog.version_mirror`): reads of thousands of
    tenants then open one table instead of one per schema."""
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
        names = validated_names(list(tenants), str(self.file), key)
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


def priority_order(tenants: Sequence[str], listed: Sequence[str],
                   attributes: Mapping[str, int]) -> tuple[str, ...]:
    """The ``priority`` tuple :func:`~alembic_fleet.model.schedule.execution_order` expects.

    The top-level list comes first (it is an explicit order), then the tenants by their
    ``priority`` attribute, higher first (absent counts as 0, ties keep the tenant order).
    Only the head that differs from the plain tenant order is returned, so a configuration
    without attributes keeps the short tuple it always had.
    """
    present = set(tenants)
    first = [t for t in dict.fromkeys(listed) if t in present]
    taken = set(first)
    rest = [t for t in tenants if t not in taken]
    ordered = first + sorted(rest, key=lambda t: -attributes.get(t, 0))  # stable sort
    # The tail of ``ordered`` that already follows the tenant order needs no listing: the
    # longest suffix whose positions in ``tenants`` increase (linear: this runs for every
    # command, with thousands of tenants).
    position = {t: i for i, t in enumerate(tenants)}
    cut = len(ordered)
    while cut > 0 and (cut == len(ordered)
                       or position[ordered[cut - 1]] < position[ordered[cut]]):
        cut -= 1
    return tuple(ordered[:cut])


def validated_names(names: list[str], file: str, where: str) -> tuple[str, ...]:
    """Validate tenant names and drop duplicates, keeping the first occurrence's place."""
    seen: dict[str, None] = {}
    for tenant in names:
        try:
            validate_tenant(tenant)
        except FleetError as exc:
            raise ConfigError(exc.message, file=file, key=where,
                              expected=TENANT_NAME) from None
        seen.setdefault(tenant)
    return tuple(seen)
