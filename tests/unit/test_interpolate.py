"""``${VAR}`` / ``${VAR:-default}`` interpolation of configuration strings."""

from __future__ import annotations

import pytest

from alembic_fleet.config.interpolate import InterpolationError, interpolate

ENV = {
    "HOST": "db.internal",
    "PORT": "5432",
    "EMPTY": "",
    "DOLLAR": "$HOME",
    "REF": "${HOST}",
    "ESCAPED": "$$",
    "B": "bee",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("${HOST}", "db.internal"),
        ("postgresql://u@${HOST}:${PORT}/db", "postgresql://u@db.internal:5432/db"),
        ("${HOST}${PORT}", "db.internal5432"),
        ("${HOST:-other}", "db.internal"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a b c}", "a b c"),
        ("${MISSING:-postgresql://x:y@h/db}", "postgresql://x:y@h/db"),
        ("${MISSING:-a:-b}", "a:-b"),
        ("${EMPTY:-fallback}", "fallback"),  # set but empty falls to the default
        ("${EMPTY}", ""),  # set but empty, no default: the empty value
        ("x${EMPTY}y", "xy"),
        # nested defaults
        ("${MISSING:-${B:-x}}", "bee"),
        ("${MISSING:-${ALSO_MISSING:-x}}", "x"),
        ("${MISSING:-${ALSO_MISSING:-${B}}}", "bee"),
        ("${MISSING:-pre-${B}-post}", "pre-bee-post"),
        ("${HOST:-${B:-x}}", "db.internal"),
        # $$ escape and lone dollars
        ("$$", "$"),
        ("$${HOST}", "${HOST}"),
        ("$$$$", "$$"),
        ("$$${HOST}", "$db.internal"),
        ("${MISSING:-$$}", "$"),
        ("${MISSING:-$${X}}", "${X}"),
        ("cost: 5$", "cost: 5$"),
        ("$HOST", "$HOST"),  # only ${...} is a reference
        ("a$b", "a$b"),
        ("}", "}"),
        ("a}b", "a}b"),
        ("${MISSING:-a}b}", "ab}"),
        # values from the environment are never interpolated again
        ("${DOLLAR}", "$HOME"),
        ("${REF}", "${HOST}"),
        ("${ESCAPED}", "$$"),
        ("${MISSING:-${REF}}", "${HOST}"),
        # names: letters, digits, underscore, not starting with a digit
        ("${_U:-u}", "u"),
        ("${lower_case1:-l}", "l"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


def test_unset_variable_without_default_is_an_error() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("postgresql://${DB_HOST}/db", ENV)
    message = str(info.value)
    assert "DB_HOST" in message
    assert "not set" in message
    assert "${DB_HOST:-default}" in message  # tells the user how to give a default


def test_unset_variable_inside_a_used_default_is_an_error() -> None:
    with pytest.raises(InterpolationError, match="ALSO_MISSING"):
        interpolate("${MISSING:-${ALSO_MISSING}}", ENV)


@pytest.mark.parametrize(
    "text",
    [
        "${HOST:-${UNSET}}",
        "${HOST:-${UNSET}${OTHER_UNSET}}",
        "${HOST:-${UNSET:-${DEEPER}}}",
        "${B:-x${UNSET}y}",
    ],
)
def test_unused_default_referencing_an_unset_var_is_not_an_error(text: str) -> None:
    assert interpolate(text, ENV) in ("db.internal", "bee")


def test_is_an_error_when_the_empty_var_makes_the_default_used() -> None:
    with pytest.raises(InterpolationError, match="UNSET"):
        interpolate("${EMPTY:-${UNSET}}", ENV)


@pytest.mark.parametrize(
    "text",
    [
        "${",
        "${}",
        "${ HOST}",
        "${HOST }",
        "${1ABC}",
        "${-x}",
        "${HOST",
        "${HOST-x}",
        "${HOST:x}",
        "${HOST:=x}",
        "${MISSING:-x",
        "${MISSING:-${B}",
        "${MISSING:-${B:-x}",
        "abc ${HOST",
        "${HOST.name}",
    ],
)
def test_malformed_or_unclosed_references_are_errors(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, ENV)


def test_unclosed_default_names_the_problem() -> None:
    with pytest.raises(InterpolationError, match="unclosed"):
        interpolate("${MISSING:-x", ENV)


def test_malformed_reference_message_names_the_variable() -> None:
    with pytest.raises(InterpolationError, match="HOST"):
        interpolate("${HOST-x}", ENV)


def test_malformed_reference_in_an_unused_default_is_still_an_error() -> None:
    with pytest.raises(InterpolationError):
        interpolate("${HOST:-${}}", ENV)


def test_interpolation_error_is_a_value_error() -> None:
    assert issubclass(InterpolationError, ValueError)


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TEST_INTERP_VAR", "from-os")
    monkeypatch.delenv("FLEET_TEST_INTERP_UNSET", raising=False)
    assert interpolate("${FLEET_TEST_INTERP_VAR}") == "from-os"
    assert interpolate("${FLEET_TEST_INTERP_UNSET:-d}") == "d"


def test_explicit_empty_environ_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TEST_INTERP_VAR", "from-os")
    with pytest.raises(InterpolationError):
        interpolate("${FLEET_TEST_INTERP_VAR}", {})
