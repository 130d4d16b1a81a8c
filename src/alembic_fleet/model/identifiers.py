"""Tenant names, schema names and identifier quoting.

Pure functions: every name is validated here before anything touches a database, and every
identifier that reaches SQL goes through :func:`quote_ident`.
"""

from __future__ import annotations

import re

from alembic_fleet.exceptions import ConfigError, InvalidTenantError

TENANT_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
TENANT_PLACEHOLDER = "{tenant}"
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes; we refuse them instead."""


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier (double quotes, embedded quotes doubled)."""
    if "\x00" in name:
        raise InvalidTenantError(f"identifier {name!r} contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def search_path_value(schema: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """The value of ``SET search_path TO ...`` for a target: its own schema first, then the
    configured shared schemas, each quoted (a schema listed twice is kept once, first)."""
    names = dict.fromkeys((schema, *extra))
    return ", ".join(quote_ident(name) for name in names)


SHARED_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*")
"""What a ``search_path`` entry may be: an unquoted lowercase schema name."""


def shared_schema_problem(name: object) -> str | None:
    """Why ``name`` cannot be a ``search_path`` entry, or None when it can.

    ``pg_catalog`` is always searched, and first; listing it would move it *after* the
    target's schema, letting a tenant's table shadow a system catalog. ``pg_temp`` and the
    other ``pg_*`` schemas and ``information_schema`` are not shared application context.
    """
    if not isinstance(name, str) or not SHARED_SCHEMA.fullmatch(name):
        return f"{name!r} is not a schema name"
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        return f"{name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes"
    if name.startswith("pg_") or name == "information_schema":
        return f"{name!r} is a system schema (pg_catalog is always searched first)"
    return None


def validate_tenant(name: str) -> str:
    """Return ``name`` if it is an acceptable tenant name, else raise InvalidTenantError."""
    if not isinstance(name, str) or not TENANT_PATTERN.fullmatch(name):
        raise InvalidTenantError(
            f"invalid tenant name {name!r}",
            hint="a tenant name starts with a lowercase letter and holds only lowercase "
            "letters, digits and '_' (for example 'toshiba' or 'acme_eu')",
        )
    return name


def validate_schema_template(template: str, *, file: str | None, key: str) -> str:
    """Check a service's ``schema`` template: ``{tenant}`` is the only placeholder allowed."""
    if not isinstance(template, str) or not template:
        raise ConfigError("must be a non-empty string", file=file, key=key,
                          expected='a schema name such as "public" or "auth_{tenant}"')
    rest = template.replace(TENANT_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise ConfigError(f"unknown placeholder in {template!r}", file=file, key=key,
                          expected="'{tenant}' as the only placeholder")
    if template.count(TENANT_PLACEHOLDER) > 1:
        raise ConfigError(f"{template!r} names '{{tenant}}' more than once", file=file, key=key,
                          expected="'{tenant}' at most once")
    if "\x00" in template or '"' in template:
        raise ConfigError(f"{template!r} contains a quote or NUL byte", file=file, key=key,
                          expected="letters, digits, '_' and '{tenant}'")
    if TENANT_PLACEHOLDER not in template:
        try:
            check_schema_length(template)
        except InvalidTenantError as exc:
            raise ConfigError(exc.message, file=file, key=key,
                              expected=f"at most {MAX_IDENTIFIER_BYTES} bytes") from None
    return template


def render_schema(template: str, tenant: str | None) -> str:
    """The schema name of ``tenant`` under ``template`` (``tenant`` is None for single-schema)."""
    if TENANT_PLACEHOLDER in template:
        if tenant is None:
            raise InvalidTenantError(f"schema template {template!r} needs a tenant")
        schema = template.replace(TENANT_PLACEHOLDER, validate_tenant(tenant))
    else:
        schema = template
    return check_schema_length(schema)


def check_schema_length(schema: str) -> str:
    """Refuse schema names PostgreSQL would silently truncate."""
    if len(schema.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise InvalidTenantError(
            f"schema name {schema!r} is longer than {MAX_IDENTIFIER_BYTES} bytes",
            hint="use a shorter tenant name or schema template",
        )
    return schema


def split_schema(template: str, schema: str) -> str | None:
    """The part of ``schema`` standing for ``{tenant}`` in ``template`` (not validated), or
    None when the template has no ``{tenant}`` or does not match."""
    if TENANT_PLACEHOLDER not in template:
        return None
    prefix, _, suffix = template.partition(TENANT_PLACEHOLDER)
    if len(schema) <= len(prefix) + len(suffix) or not (
            schema.startswith(prefix) and schema.endswith(suffix)):
        return None
    return schema[len(prefix) : len(schema) - len(suffix)]


def tenant_from_schema(template: str, schema: str) -> str | None:
    """Inverse of :func:`render_schema`: the tenant whose schema is ``schema``, or None."""
    tenant = split_schema(template, schema)
    return tenant if tenant is not None and TENANT_PATTERN.fullmatch(tenant) else None


REVISION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")
"""What a revision id may hold. Alembic writes the id into the version table's SQL without
escaping it; an id with a quote would run SQL of its own (it did: a DROP TABLE outside the
tenant), so anything else is refused when the scripts load and by ``fleet check`` (FC108)."""


def unsafe_revision_id(revision: str) -> bool:
    """True when ``revision`` is not a plain id (letters, digits, '_', '.')."""
    return not REVISION_ID.fullmatch(revision)
