"""Who owns which schema: the configured targets, the ledger, and what each template can make.

Nothing else knows whose a schema is, and guessing is how data gets dropped: with templates
``auth_{tenant}`` and ``auth_audit_{tenant}``, ``auth_audit_acme`` is tenant ``acme``'s audit
schema *and* tenant ``audit_acme``'s auth schema. :class:`SchemaNamespace` is built once, when
the configuration is loaded, and refuses (with :class:`ConfigError`, exit code 2, before
anything runs) every configuration in which a schema could belong to two owners:

1. two per-tenant templates that can render the same schema (see :func:`template_collision`)
   for services that can share a database;
2. two single-schema services with the same schema in the same database;
3. a single-schema service in a reserved schema: ``information_schema``, ``pg_*`` (PostgreSQL's)
   or the ledger schema (fleet's; ``public`` is fine for a single-schema service);
4. a per-tenant template whose every rendering is reserved (its prefix starts with ``pg_``);
5. a configured tenant whose schema for some service is reserved (``public`` too: a tenant
   must never own it) or is another service's fixed schema in the same database.

Once those are refused, every schema has at most one owner, which :meth:`owner_of` and
:meth:`template_owner` answer.

Reference schemas (``<ledger_schema>_ref_<8 hex digits>``, see
:mod:`alembic_fleet.execution.provision`) are fleet's, like the ledger: never a target's,
never an orphan, never a tenant's; when a service provisions tenants from a reference, a
template that could render such a name is refused (:func:`reference_collision`).

A pure module: no database, no Alembic.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.model.identifiers import (
    MAX_IDENTIFIER_BYTES,
    TENANT_PATTERN,
    TENANT_PLACEHOLDER,
    check_schema_length,
    tenant_from_schema,
    validate_tenant,
)
from alembic_fleet.model.targets import Database, Service, Target, targets_for

_SCHEMA_HINT = ("a schema must have one owner, or 'fleet status' lists it as the other's "
                "orphan and 'fleet tenants remove' drops it")


@dataclass(frozen=True)
class Owner:
    """Who a schema belongs to: a configured target (``tenant`` None for a single-schema
    service) or fleet's ledger (``service`` and ``tenant`` None)."""

    kind: Literal["target", "ledger"]
    service: str | None = None
    tenant: str | None = None


REFERENCE_INFIX = "_ref_"
REFERENCE_DIGITS = 8
_HEX = "0123456789abcdef"


def reference_prefix(ledger_schema: str) -> str:
    """What every reference schema's name starts with: the ledger schema's name (cut so
    that the whole name fits in 63 bytes), then ``_ref_``."""
    room = MAX_IDENTIFIER_BYTES - len(REFERENCE_INFIX) - REFERENCE_DIGITS
    return ledger_schema[:room] + REFERENCE_INFIX


def reference_schema(ledger_schema: str, digest: str) -> str:
    """The reference schema named by a hex ``digest`` (its first 8 digits)."""
    return reference_prefix(ledger_schema) + digest[:REFERENCE_DIGITS]


def is_reference_schema(schema: str, ledger_schema: str | None) -> bool:
    """Whether ``schema`` has the shape of a reference schema's name (fleet's own)."""
    if ledger_schema is None:
        return False
    prefix = reference_prefix(ledger_schema)
    rest = schema[len(prefix):]
    return (schema.startswith(prefix) and len(rest) == REFERENCE_DIGITS
            and all(c in _HEX for c in rest))


def reference_collision(template: str, ledger_schema: str) -> str | None:
    """A reference schema's name that ``template`` renders for a valid tenant, or None.

    Exact: a reference name has a fixed length, so the tenant's length is fixed too, and
    every position is checked against what it may hold (the literal text of the template,
    a tenant character, the prefix's literal or a hex digit).
    """
    if TENANT_PLACEHOLDER not in template:
        return template if is_reference_schema(template, ledger_schema) else None
    prefix, suffix = _split(template)
    fixed = reference_prefix(ledger_schema)
    length = len(fixed) + REFERENCE_DIGITS - len(prefix) - len(suffix)
    if length < 1:
        return None

    def allowed(position: int) -> str:
        return fixed[position] if position < len(fixed) else _HEX

    chosen = []
    for position, char in enumerate(prefix):
        if char not in allowed(position):
            return None
        chosen.append(char)
    for offset in range(length):
        tenant_chars = string.ascii_lowercase + ("" if offset == 0 else string.digits + "_")
        options = sorted(set(allowed(len(prefix) + offset)) & set(tenant_chars))
        if not options:
            return None
        chosen.append(options[0])
    for offset, char in enumerate(suffix):
        if char not in allowed(len(prefix) + length + offset):
            return None
        chosen.append(char)
    return "".join(chosen)


def reserved_reason(schema: str, ledger_schema: str | None, *, tenant: bool) -> str | None:
    """Why ``schema`` may not be a target's schema, or None.

    ``information_schema`` and ``pg_*`` are PostgreSQL's, the ledger schema and the
    reference schemas are fleet's. A tenant (``tenant=True``) may not own ``public`` either:
    removing the tenant would drop it.
    """
    if schema == "information_schema" or schema.startswith("pg_"):
        return "which is reserved by PostgreSQL"
    if ledger_schema is not None and schema == ledger_schema:
        return "which holds fleet's ledger"
    if is_reference_schema(schema, ledger_schema):
        return "which has the name of one of fleet's reference schemas"
    if tenant and schema == "public":
        return "which is reserved by PostgreSQL (its default schema)"
    return None


def _split(template: str) -> tuple[str, str]:
    prefix, _, suffix = template.partition(TENANT_PLACEHOLDER)
    return prefix, suffix


def _valid(tenant: str) -> bool:
    return bool(tenant) and TENANT_PATTERN.fullmatch(tenant) is not None


def template_collision(first: str, second: str) -> tuple[str, str, str] | None:
    """The shortest ``(tenant_a, tenant_b, schema)`` such that ``first`` renders ``schema``
    for ``tenant_a`` and ``second`` renders it for ``tenant_b``; None when no valid tenant
    names (``[a-z][a-z0-9_]*``, schema at most 63 bytes) make the two renderings equal.

    The rule. Write the templates ``P1{tenant}S1`` and ``P2{tenant}S2`` with ``len(P1) <=
    len(P2)``. A shared rendering starts with both prefixes and ends with both suffixes, so
    ``P2 = P1 + X`` for some ``X`` and one suffix must end the other; otherwise they never
    collide. Then, with ``t1`` / ``t2`` the tenants of the first / second template:

    * nested, ``S2 = Y + S1`` (the template with the longer prefix also has the longer or
      equal suffix): ``t1 = X + t2 + Y``. They collide iff ``X`` and ``Y`` hold only tenant
      characters ``a-z0-9_`` and ``X`` is empty or starts with a letter (``t2 = 'a'``).
      Identical templates are the case ``X = Y = ''``.
    * crossed, ``S1 = Y + S2`` with ``Y`` non-empty: ``t1 + Y = X + t2``. They collide iff
      either ``X`` and ``Y`` hold only tenant characters and ``X`` is empty or starts with
      a letter (``t1 = X + m``, ``t2 = m + Y``, ``m = 'a'``), or the literal texts overlap:
      ``X = t1 + N`` and ``Y = N + t2`` for some ``N`` with ``t1``, ``t2`` valid tenant
      names (``'{tenant}-b'`` and ``'a-{tenant}'`` both render ``'a-b'``).

    Hence ``a_{tenant}`` and ``a_1{tenant}`` never collide (``X = '1'`` would have to start
    a tenant name), while ``auth_{tenant}`` and ``auth_audit_{tenant}`` do (``X = 'audit_'``:
    tenant ``audit_acme`` of the first, ``acme`` of the second). The candidates below are
    the shortest witness of each case; each is checked by rendering it, and the shortest
    valid one must fit in 63 bytes (a longer rendering can never exist).
    """
    if TENANT_PLACEHOLDER not in first or TENANT_PLACEHOLDER not in second:
        return None
    swapped = len(_split(first)[0]) > len(_split(second)[0])
    (p1, s1), (p2, s2) = (_split(second), _split(first)) if swapped else (
        _split(first), _split(second))
    if not p2.startswith(p1):
        return None
    x = p2[len(p1):]
    if s2.endswith(s1):  # nested: t1 = x + t2 + y
        y = s2[:len(s2) - len(s1)]
        candidates: Iterable[tuple[str, str]] = [(x + "a" + y, "a")]
    elif s1.endswith(s2):  # crossed: t1 + y = x + t2
        y = s1[:len(s1) - len(s2)]
        candidates = _crossed(x, y)
    else:
        return None
    for t1, t2 in candidates:
        if _valid(t1) and _valid(t2):
            schema = p1 + t1 + s1
            if len(schema.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
                return None  # the shortest collision is too long to exist
            return (t2, t1, schema) if swapped else (t1, t2, schema)
    return None


def _crossed(x: str, y: str) -> Iterable[tuple[str, str]]:
    """Solutions ``(t1, t2)`` of ``t1 + y == x + t2`` (non-empty), shortest first: the
    common string ``u = t1 + y = x + t2`` has length ``n``; up to ``len(x) + len(y)`` the
    two literal parts overlap (or touch), one more leaves room for a free tenant letter."""
    for n in range(max(len(x), len(y)) + 1, len(x) + len(y) + 2):
        overlap = len(x) + len(y) - n
        if overlap < 0:
            u = x + "a" + y
        elif x[len(x) - overlap:] == y[:overlap]:
            u = x + y[overlap:]
        else:
            continue
        yield u[:n - len(y)], u[len(x):]


@dataclass(frozen=True)
class SchemaNamespace:
    """Every schema the configuration owns, per database, and the templates that own more.

    Build it with :meth:`build`; it raises :class:`ConfigError` for any configuration in
    which a schema could have two owners (see the module docstring). Schemas are keyed by
    :attr:`Database.key`. The ledger schema is reserved in every database.
    """

    services: Mapping[str, Service] = field(repr=False)
    tenants: tuple[str, ...]
    tenant_databases: Mapping[str, Database] = field(repr=False)
    ledger_schema: str | None
    file: str | None = field(default=None, compare=False, repr=False)
    key: str = field(default="tenants", compare=False, repr=False)
    _owners: Mapping[tuple[str, str], Owner] = field(default_factory=dict, repr=False)
    _targets: Mapping[str, tuple[Target, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, services: Mapping[str, Service], tenants: Sequence[str],
        tenant_databases: Mapping[str, Database], ledger_schema: str | None, *,
        file: str | None = None, key: str = "tenants",
    ) -> SchemaNamespace:
        """Check ``services`` and ``tenants`` and record who owns what (raises ConfigError)."""
        services = MappingProxyType(dict(services))
        tenant_databases = MappingProxyType(dict(tenant_databases))
        owners: dict[tuple[str, str], Owner] = {}
        _check_services(services, tenant_databases, ledger_schema, file, owners)
        namespace = cls(services, tuple(dict.fromkeys(tenants)), tenant_databases,
                        ledger_schema, file, key)
        by_tenant: dict[str, tuple[Target, ...]] = {}
        for tenant in namespace.tenants:
            found = namespace._tenant_targets(tenant, owners, key)
            for target in found:
                owners[(target.database.key, target.schema)] = Owner(
                    "target", target.service, tenant)
            by_tenant[tenant] = tuple(found)
        return replace(namespace, _owners=MappingProxyType(owners),
                       _targets=MappingProxyType(by_tenant))

    def with_tenants(self, tenants: Sequence[str], tenant_databases: Mapping[str, Database],
                     *, key: str | None = None) -> SchemaNamespace:
        """The namespace of the same services for other tenants (e.g. a registry's).

        Tenants added after this namespace's own, on the same tenant databases (``fleet
        tenants add``), extend it: what it found for its tenants stands, and only the new
        ones are checked (building it again took a tenth of a second at 10,000 tenants)."""
        key = self.key if key is None else key
        names = tuple(dict.fromkeys(tenants))
        if names[:len(self.tenants)] != self.tenants or dict(tenant_databases) != dict(
                self.tenant_databases):
            return SchemaNamespace.build(self.services, names, tenant_databases,
                                         self.ledger_schema, file=self.file, key=key)
        owners = dict(self._owners)
        by_tenant = dict(self._targets)
        for tenant in names[len(self.tenants):]:
            found = self._tenant_targets(tenant, owners, key)
            for target in found:
                owners[(target.database.key, target.schema)] = Owner(
                    "target", target.service, tenant)
            by_tenant[tenant] = tuple(found)
        return replace(self, tenants=names, key=key, _owners=MappingProxyType(owners),
                       _targets=MappingProxyType(by_tenant))

    def owner_of(self, database_key: str, schema: str) -> Owner | None:
        """The configured target or ledger owning ``schema`` in that database, or None (a
        reference schema is the ledger's: fleet's own)."""
        if self.ledger_schema is not None and (
                schema == self.ledger_schema or is_reference_schema(schema, self.ledger_schema)):
            return Owner("ledger")
        return self._owners.get((database_key, schema))

    def template_owner(self, database_key: str, schema: str) -> tuple[str, str] | None:
        """``(service, tenant)`` when a per-tenant template whose schemas for that tenant live
        in that database renders ``schema`` for a valid tenant name, configured or not.

        Orphans are such schemas of tenants that are not configured. A reserved schema, the
        ledger's, a single-schema service's, or another configured target's is never
        returned as a template's.
        """
        owner = self.owner_of(database_key, schema)
        if owner is not None:
            if owner.kind == "target" and owner.tenant is not None and owner.service:
                return owner.service, owner.tenant
            return None
        if reserved_reason(schema, self.ledger_schema, tenant=True):
            return None
        if len(schema.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
            return None
        for service in self.services.values():
            if not service.per_tenant:
                continue
            tenant = tenant_from_schema(service.schema, schema)
            if tenant is not None and self._database(service, tenant).key == database_key:
                return service.name, tenant
        return None

    def schemas_of(self, tenant: str) -> list[Target]:
        """The per-tenant targets of a configured tenant, in service order ([] otherwise)."""
        return list(self._targets.get(tenant, ()))

    def check_new_tenant(self, name: str, *, key: str | None = None) -> None:
        """Raise ConfigError when adding tenant ``name`` would give a schema two owners (or
        ``name`` is invalid, or one of its schema names too long)."""
        try:
            validate_tenant(name)
        except FleetError as exc:
            raise ConfigError(exc.message, file=self.file, key=key or self.key,
                              hint=exc.hint) from None
        if name in self._targets:
            return
        self._tenant_targets(name, self._owners, key or self.key)

    def _database(self, service: Service, tenant: str) -> Database:
        return self.tenant_databases.get(tenant, service.database)

    @cached_property
    def _per_tenant(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services.values() if s.per_tenant)

    def targets(self, services: Sequence[Service], tenants: Sequence[str]) -> list[Target]:
        """``targets_for(services, tenants, tenant_databases)``, from the targets this
        namespace made (and checked) when it was built: at 10,000 tenants, rendering and
        validating 30,000 schema names again cost a tenth of a second per command. A tenant
        it does not know is rendered (and validated) as by :func:`targets_for`."""
        per_tenant = [s.name for s in self._per_tenant]
        result: list[Target] = []
        for service in services:
            if not service.per_tenant or self.services.get(service.name) is not service:
                result.extend(targets_for([service], list(tenants), self.tenant_databases))
                continue
            index = per_tenant.index(service.name)
            made = self._targets
            for tenant in tenants:
                mine = made.get(tenant)
                result.append(mine[index] if mine is not None else targets_for(
                    [service], [tenant], self.tenant_databases)[0])
        return result

    def _tenant_targets(self, tenant: str, owners: Mapping[tuple[str, str], Owner],
                        key: str) -> list[Target]:
        """``tenant``'s per-tenant targets, refusing any schema that is not free for it.

        Runs once per tenant when the configuration loads (30,000 times at 10,000 tenants
        x 3 services): the tenant is validated once, and the messages are only written for
        a refusal."""
        found: list[Target] = []
        for service in self._per_tenant:
            try:
                if not found:
                    validate_tenant(tenant)
                schema = check_schema_length(service.schema.replace(TENANT_PLACEHOLDER,
                                                                    tenant))
            except FleetError as exc:
                raise ConfigError(f"{exc.message} (service '{service.name}')", file=self.file,
                                  key=key, hint=exc.hint) from None
            database = self._database(service, tenant)
            other = owners.get((database.key, schema))
            if other is not None and (other.service, other.tenant) != (service.name, tenant):
                owned = f"service '{other.service}'" + (
                    f" for tenant '{other.tenant}'" if other.tenant else "")
                raise ConfigError(f"{_renders(tenant, service, schema)}, which belongs to "
                                  f"{owned}", file=self.file, key=key,
                                  hint=f"choose another tenant name; {_SCHEMA_HINT}")
            reason = reserved_reason(schema, self.ledger_schema, tenant=True)
            if reason:
                raise ConfigError(f"{_renders(tenant, service, schema)}, {reason}",
                                  file=self.file, key=key,
                                  hint="choose another tenant name, or a schema template "
                                  "with a prefix, such as 'app_{tenant}'")
            found.append(Target(service.name, tenant, schema, database))
        return found


def _renders(tenant: str, service: Service, schema: str) -> str:
    return f"tenant '{tenant}' of service '{service.name}' renders schema '{schema}'"


def _check_services(services: Mapping[str, Service], tenant_databases: Mapping[str, Database],
                    ledger_schema: str | None, file: str | None,
                    owners: dict[tuple[str, str], Owner]) -> None:
    """Refusals 1 to 4 (they do not depend on the tenants); records the fixed schemas."""
    templates: list[Service] = []
    references = ledger_schema is not None and any(
        s.provision == "reference" for s in services.values())
    for service in services.values():
        key = f"services.{service.name}.schema"
        if service.per_tenant:
            if _split(service.schema)[0].startswith("pg_"):
                raise ConfigError(
                    f"service '{service.name}' has schema template '{service.schema}': every "
                    "schema it renders starts with 'pg_', which is reserved by PostgreSQL",
                    file=file, key=key, hint="use a prefix such as 'app_{tenant}'")
            clash = (reference_collision(service.schema, ledger_schema)
                     if references and ledger_schema is not None else None)
            if clash is not None:
                raise ConfigError(
                    f"service '{service.name}' has schema template '{service.schema}', which "
                    f"can render '{clash}': a name of fleet's reference schemas "
                    f"('{reference_prefix(str(ledger_schema))}' and 8 hex digits)",
                    file=file, key=key,
                    hint="use a template whose text before {tenant} does not start like "
                    "the ledger schema's name, or another ledger_schema")
            templates.append(service)
            continue
        schema = service.schema
        reason = reserved_reason(schema, ledger_schema, tenant=False)
        if reason:
            raise ConfigError(f"service '{service.name}' uses schema '{schema}', {reason}",
                              file=file, key=key, hint="choose another schema name")
        other = owners.get((service.database.key, schema))
        if other is not None:
            raise ConfigError(
                f"services '{other.service}' and '{service.name}' both use schema '{schema}' "
                "in the same database", file=file, key=key,
                hint=f"give each service its own schema or database; {_SCHEMA_HINT}")
        owners[(service.database.key, schema)] = Owner("target", service.name, None)
    for index, first in enumerate(templates):
        for second in templates[index + 1:]:
            if first.database.key != second.database.key and not tenant_databases:
                continue  # never in the same database
            collision = template_collision(first.schema, second.schema)
            if collision is None:
                continue
            tenant_a, tenant_b, schema = collision
            raise ConfigError(
                f"services '{first.name}' ('{first.schema}') and '{second.name}' "
                f"('{second.schema}') can render the same schema: tenant '{tenant_a}' of "
                f"'{first.name}' and tenant '{tenant_b}' of '{second.name}' both render "
                f"'{schema}'", file=file, key=f"services.{second.name}.schema",
                hint="make neither template's text before {tenant} a prefix of the other's "
                "(e.g. 'auth_{tenant}' and 'audit_{tenant}'), or put the services on "
                f"different databases; {_SCHEMA_HINT}")
