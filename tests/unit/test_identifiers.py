"""Tenant names, schema names and identifier quoting (pure functions, no database)."""

from __future__ import annotations

import pytest

from alembic_fleet.exceptions import ConfigError, InvalidTenantError, UsageError
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.identifiers import (
    MAX_IDENTIFIER_BYTES,
    quote_ident,
    render_schema,
    tenant_from_schema,
    validate_schema_template,
    validate_tenant,
)

HOSTILE = 'ok x"; drop schema public; --'


# --- validate_tenant ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "default", "toshiba", "acme_eu", "t1", "a_1_b_2", "x_"])
def test_validate_tenant_accepts_and_returns_good_names(name: str) -> None:
    assert validate_tenant(name) == name


@pytest.mark.parametrize(
    "name",
    [
        HOSTILE,
        "Default",
        "DEFAULT",
        "1abc",
        "",
        "a-b",
        "_abc",
        "a b",
        "a.b",
        "abc\n",
        "\nabc",
        " abc",
        "abc ",
        "tenant;",
        'a"b',
        "a\x00b",
        "café",
        "ténant",
        "\uff54enant",  # fullwidth t
        "tenant\u200b",  # zero width space
        "日本",
        "a٣",  # arabic-indic digit: not an ASCII digit
    ],
)
def test_validate_tenant_rejects_hostile_names(name: str) -> None:
    with pytest.raises(InvalidTenantError) as info:
        validate_tenant(name)
    assert repr(name) in str(info.value)
    assert info.value.hint and "lowercase letter" in info.value.hint
    assert exit_code(info.value) == 2


@pytest.mark.parametrize("value", [None, 1, b"abc", ["abc"]])
def test_validate_tenant_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidTenantError):
        validate_tenant(value)  # type: ignore[arg-type]


def test_invalid_tenant_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        validate_tenant("Default")


def test_validate_tenant_has_no_length_limit_of_its_own() -> None:
    # Length is checked on the schema name built from it (render_schema), not here.
    long_name = "a" * 70
    assert validate_tenant(long_name) == long_name


# --- quote_ident -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("public", '"public"'),
        ("Default", '"Default"'),
        ("", '""'),
        ('a"b', '"a""b"'),
        ('"', '""""'),
        ('""', '""""""'),
        (HOSTILE, '"ok x""; drop schema public; --"'),
        ("café", '"café"'),
        ("a b", '"a b"'),
    ],
)
def test_quote_ident(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_quote_ident_output_cannot_break_out_of_the_identifier() -> None:
    quoted = quote_ident(HOSTILE)
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    # Every quote inside is doubled: removing the pairs leaves no lone quote.
    assert '"' not in inner.replace('""', "")
    assert inner.replace('""', '"') == HOSTILE


@pytest.mark.parametrize("name", ["a\x00b", "\x00", "public\x00; drop table x"])
def test_quote_ident_rejects_nul(name: str) -> None:
    with pytest.raises(InvalidTenantError, match="NUL"):
        quote_ident(name)


# --- render_schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "tenant", "schema"),
    [
        ("auth_{tenant}", "toshiba", "auth_toshiba"),
        ("{tenant}", "acme_eu", "acme_eu"),
        ("{tenant}_data", "t1", "t1_data"),
        ("pre_{tenant}_post", "x", "pre_x_post"),
        ("public", None, "public"),
        ("public", "toshiba", "public"),  # single-schema service ignores the tenant
        ("Mixed Case", None, "Mixed Case"),
    ],
)
def test_render_schema(template: str, tenant: str | None, schema: str) -> None:
    assert render_schema(template, tenant) == schema


def test_render_schema_needs_a_tenant_for_a_tenant_template() -> None:
    with pytest.raises(InvalidTenantError, match="needs a tenant"):
        render_schema("auth_{tenant}", None)


@pytest.mark.parametrize("tenant", [HOSTILE, "Default", "1abc", "", "a-b", "café"])
def test_render_schema_validates_the_tenant(tenant: str) -> None:
    with pytest.raises(InvalidTenantError, match="invalid tenant name"):
        render_schema("auth_{tenant}", tenant)


def test_render_schema_accepts_exactly_63_bytes() -> None:
    tenant = "a" * (MAX_IDENTIFIER_BYTES - len("auth_"))
    schema = render_schema("auth_{tenant}", tenant)
    assert len(schema) == 63
    assert schema == "auth_" + tenant


def test_render_schema_refuses_64_bytes() -> None:
    tenant = "a" * (MAX_IDENTIFIER_BYTES - len("auth_") + 1)
    with pytest.raises(InvalidTenantError, match="longer than 63 bytes") as info:
        render_schema("auth_{tenant}", tenant)
    assert info.value.hint and "shorter" in info.value.hint


def test_render_schema_refuses_a_70_char_tenant() -> None:
    with pytest.raises(InvalidTenantError, match="longer than 63 bytes"):
        render_schema("{tenant}", "t" * 70)


def test_render_schema_counts_bytes_not_characters() -> None:
    # 32 two-byte characters = 64 bytes although only 32 characters.
    template = "é" * 32
    assert len(template) < MAX_IDENTIFIER_BYTES
    with pytest.raises(InvalidTenantError, match="longer than 63 bytes"):
        render_schema(template, None)
    assert render_schema("é" * 31, None) == "é" * 31  # 62 bytes


# --- validate_schema_template ------------------------------------------------------------


@pytest.mark.parametrize(
    "template", ["public", "auth_{tenant}", "{tenant}", "{tenant}_x", "a" * 63]
)
def test_validate_schema_template_accepts(template: str) -> None:
    assert validate_schema_template(template, file="fleet.toml", key="services.a.schema") == (
        template
    )


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("", "non-empty"),
        ("auth_{name}", "unknown placeholder"),
        ("auth_{tenant", "unknown placeholder"),
        ("auth_tenant}", "unknown placeholder"),
        ("{Tenant}", "unknown placeholder"),
        ("{tenant}_{tenant}", "more than once"),
        ('a"b', "quote or NUL"),
        ('auth_{tenant}"; drop schema public; --', "quote or NUL"),
        ("a\x00b", "quote or NUL"),
    ],
)
def test_validate_schema_template_rejects(template: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_schema_template(template, file="/srv/fleet.toml", key="services.auth.schema")
    err = info.value
    assert fragment in str(err)
    assert err.file == "/srv/fleet.toml"
    assert err.key == "services.auth.schema"
    assert "/srv/fleet.toml" in str(err)
    assert "key 'services.auth.schema'" in str(err)
    assert exit_code(err) == 2


@pytest.mark.parametrize("value", [None, 3, ["public"]])
def test_validate_schema_template_rejects_non_strings(value: object) -> None:
    with pytest.raises(ConfigError, match="non-empty string"):
        validate_schema_template(value, file="f.toml", key="k")  # type: ignore[arg-type]


def test_validate_schema_template_refuses_a_long_fixed_schema() -> None:
    with pytest.raises(ConfigError, match="longer than 63 bytes"):
        validate_schema_template("s" * 64, file="f.toml", key="services.a.schema")


def test_validate_schema_template_long_fixed_schema_names_file_and_key() -> None:
    with pytest.raises(ConfigError) as info:
        validate_schema_template("s" * 64, file="f.toml", key="services.a.schema")
    assert info.value.key == "services.a.schema"


# --- tenant_from_schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "schema", "tenant"),
    [
        ("auth_{tenant}", "auth_toshiba", "toshiba"),
        ("{tenant}", "acme_eu", "acme_eu"),
        ("{tenant}_data", "t1_data", "t1"),
        ("pre_{tenant}_post", "pre_x_post", "x"),
        ("auth_{tenant}", "auth_auth_x", "auth_x"),
        # Not a schema of this template, or not a valid tenant name:
        ("auth_{tenant}", "public", None),
        ("auth_{tenant}", "auth_", None),
        ("auth_{tenant}", "billing_toshiba", None),
        ("auth_{tenant}", "auth_Default", None),
        ("auth_{tenant}", "auth_1abc", None),
        ("auth_{tenant}", "auth_a-b", None),
        ("{tenant}", "Default", None),
        ("{tenant}", "", None),
        ("{tenant}", "pg_catalog", "pg_catalog"),
        ("a{tenant}a", "a", None),  # prefix and suffix overlap
        ("a{tenant}a", "aa", None),
        ("a{tenant}a", "aba", "b"),
        ("public", "public", None),  # single-schema service has no tenant
    ],
)
def test_tenant_from_schema(template: str, schema: str, tenant: str | None) -> None:
    assert tenant_from_schema(template, schema) == tenant


@pytest.mark.parametrize("tenant", ["a", "toshiba", "acme_eu", "t1_2"])
@pytest.mark.parametrize("template", ["auth_{tenant}", "{tenant}", "{tenant}_x", "p_{tenant}_s"])
def test_tenant_from_schema_inverts_render_schema(template: str, tenant: str) -> None:
    assert tenant_from_schema(template, render_schema(template, tenant)) == tenant
