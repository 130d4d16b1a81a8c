"""The workspace: one command's configuration and the resources it opens.

Every command starts by opening a :class:`Workspace`: the validated configuration, the
engines of its databases (:class:`~alembic_fleet.databases.Databases`) and each service's
scripts, loaded once through the Alembic gateway. It is a context manager: the CLI opens it
once per command and closes it when the command ends, whatever happens.

Nothing here decides anything: reading the databases is :mod:`alembic_fleet.inventory`,
deciding what to do is :mod:`alembic_fleet.planning`, doing it is
:mod:`alembic_fleet.execution`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.config import FleetConfig, load_config
from alembic_fleet.config.tenant_sources import resolve_query
from alembic_fleet.databases import Databases
from alembic_fleet.exceptions import UsageError
from alembic_fleet.model.identifiers import validate_tenant
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.targets import Database, Service, Target
from alembic_fleet.redact import register_secret


@dataclass
class Workspace:
    """A validated configuration, its database engines and its services' scripts."""

    config: FleetConfig
    databases: Databases
    _scripts: dict[str, ServiceScripts] = field(default_factory=dict, repr=False)
    _tenants_resolved: bool = field(default=False, repr=False)
    tenants_read_at: float = field(default_factory=time.monotonic)
    """When the tenant list this command works from was read (``time.monotonic()``): the
    configuration's, or the registry query's. A tenant removed after it is one this
    command must not create again (see :meth:`RunLedger.read_before`)."""

    @classmethod
    def open(cls, config_path: str | None = None) -> Workspace:
        """Load and validate the configuration; nothing is connected yet."""
        config = load_config(config_path)
        for secret in config.secrets:
            register_secret(secret)
        return cls(config, Databases(config.embedded_dir))

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every engine this workspace opened."""
        self.databases.dispose()

    # --- services and their scripts ----------------------------------------------------

    def service(self, name: str) -> Service:
        try:
            return self.config.services[name]
        except KeyError:
            known = ", ".join(self.config.services)
            raise UsageError(f"unknown service {name!r}",
                             hint=f"configured services: {known}") from None

    def scripts(self, name: str) -> ServiceScripts:
        """The service's scripts, loaded once per process through the Alembic gateway."""
        if name not in self._scripts:
            self._scripts[name] = ServiceScripts(self.service(name))
        return self._scripts[name]

    def graph(self, name: str) -> RevisionGraph:
        return self.scripts(name).graph

    # --- tenants and targets -------------------------------------------------------------

    def resolve_tenants(self) -> FleetConfig:
        """The configuration with its tenants known: a registry query runs once, when the
        tenants come from one (and ``TENANTS`` does not override it)."""
        query = self.config.tenant_query
        if query is not None and not self.config.tenants_from_env and not self._tenants_resolved:
            self.tenants_read_at = time.monotonic()
            self.config = self.config.with_tenants(resolve_query(query, self.databases.connect))
            self._tenants_resolved = True
        return self.config

    def select(self, services: Sequence[str] = (), tenants: Sequence[str] = ()) -> list[Target]:
        """The targets named by ``SERVICE...`` and ``--tenant``; unknown names are errors.

        ``--tenant`` narrows per-tenant services to those tenants and leaves single-schema
        services out, unless such a service is named explicitly.
        """
        config = self.resolve_tenants()
        chosen = [self.service(n) for n in dict.fromkeys(services)] or list(
            config.services.values())
        for tenant in tenants:
            validate_tenant(tenant)
            if tenant not in config.tenants:
                raise UsageError(f"tenant {tenant!r} is not configured",
                                 hint=_unknown_tenant_hint(config, tenant))
        if tenants:
            chosen = [s for s in chosen if s.per_tenant or s.name in services]
        wanted = list(dict.fromkeys(tenants)) or list(config.tenants)
        return config.namespace.targets(chosen, wanted)

    def databases_in_use(self) -> list[Database]:
        """Each configured database once, in configuration order: the services' databases,
        then those of tenants placed on their own server."""
        config = self.config
        found = {s.database.key: s.database for s in config.services.values()}
        if any(s.per_tenant for s in config.services.values()):
            for tenant, database in config.tenant_databases.items():
                if tenant in config.tenants:
                    found.setdefault(database.key, database)
        return list(found.values())


def _unknown_tenant_hint(config: FleetConfig, tenant: str) -> str:
    """What to do about a tenant that is not configured: the near name of a typo, and the
    command that adds it (never the whole list: a fleet has thousands)."""
    near = difflib.get_close_matches(tenant, config.tenants, n=1, cutoff=0.8)
    guess = f"did you mean {near[0]!r}? " if near else ""
    if config.tenants_from_env:
        return (f"{guess}TENANTS decides the tenants in this shell: add it there, or unset "
                f"TENANTS and run 'fleet tenants add {tenant}'")
    return f"{guess}run 'fleet tenants add {tenant}' to record it and create its schemas"
