"""Passwords never reach the output: redact_url, register_secret and scrub."""

from __future__ import annotations

import pytest

from alembic_fleet import redact
from alembic_fleet.redact import MASK, mask_urls, redact_url, register_secret, scrub


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no registered secret (the registry is process-wide)."""
    monkeypatch.setattr(redact, "_secrets", set())


def test_mask() -> None:
    assert MASK == "***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/platform", "postgresql://app:***@db:5432/platform"),
        ("postgres://app:s3cret@db/platform", "postgres://app:***@db/platform"),
        ("postgresql+psycopg://app:s3cret@db/p", "postgresql+psycopg://app:***@db/p"),
        ("postgresql://:s3cret@db/p", "postgresql://:***@db/p"),
        ("postgresql://app:pa:ss@db/p", "postgresql://app:***@db/p"),
        ("postgresql://app:p%40ss%2F@db/p", "postgresql://app:***@db/p"),
        ("POSTGRESQL://app:s3cret@db/p", "POSTGRESQL://app:***@db/p"),
        ("postgresql://app:s3cret@db/p?sslmode=require", "postgresql://app:***@db/p?sslmode=require"),
    ],
)
def test_redact_url_masks_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db/platform",
        "postgresql://db/platform",
        "postgresql:///platform?host=/var/run/postgresql",
        "postgresql://app:@db/platform",  # empty password: nothing to hide
        "embedded:///postgres",
        "postgresql://db:5432/platform",  # a port is not a password
    ],
)
def test_redact_url_leaves_urls_without_password_alone(url: str) -> None:
    assert redact_url(url) == url
    assert redact._secrets == set()


def test_redact_url_registers_the_password() -> None:
    redact_url("postgresql://app:hunter22@db/p")
    assert scrub("the password was hunter22.") == "the password was ***."


def test_redact_url_does_not_show_the_password_anywhere() -> None:
    shown = redact_url("postgresql://app:Tr0ub4dor&3@db:5432/p")
    assert "Tr0ub4dor" not in shown
    assert "app" in shown and "db:5432/p" in shown


def test_redact_url_password_with_slash() -> None:
    url = "postgresql://app:ab/cd+ef=@db/p"
    shown = redact_url(url)
    assert "ab/cd+ef=" not in shown
    assert shown == "postgresql://app:***@db/p"


def test_register_secret_ignores_empty_and_short_values() -> None:
    register_secret(None)
    register_secret("")
    register_secret("ab")
    assert redact._secrets == set()
    assert scrub("ab is fine") == "ab is fine"
    register_secret("abc")
    assert scrub("abc is hidden") == "*** is hidden"


def test_scrub_hides_registered_secrets_everywhere() -> None:
    register_secret("p4ssw0rd")
    text = "p4ssw0rd at start, in the p4ssw0rd middle and at the end p4ssw0rd"
    assert scrub(text) == "*** at start, in the *** middle and at the end ***"


def test_scrub_hides_the_longest_secret_first() -> None:
    register_secret("abcd")
    register_secret("abcdefgh")
    assert scrub("xx abcdefgh yy") == "xx *** yy"


def test_scrub_hides_url_passwords_that_were_never_registered() -> None:
    text = "could not connect to postgresql://app:never-registered@db:5432/platform"
    assert scrub(text) == "could not connect to postgresql://app:***@db:5432/platform"


def test_scrub_in_a_traceback() -> None:
    register_secret("Sup3r-Secret")
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/env.py", line 12, in run_migrations_online\n'
        "    engine = create_engine('postgresql+psycopg://app:other-pw@db/p')\n"
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: "
        "password authentication failed (password was Sup3r-Secret)\n"
        "[SQL: SET search_path TO auth]\n"
    )
    scrubbed = scrub(traceback)
    assert "Sup3r-Secret" not in scrubbed
    assert "other-pw" not in scrubbed
    assert "postgresql+psycopg://app:***@db/p" in scrubbed
    assert "password was ***" in scrubbed
    assert scrubbed.startswith("Traceback (most recent call last):\n")
    assert "[SQL: SET search_path TO auth]" in scrubbed


def test_scrub_several_urls_on_one_line() -> None:
    text = "postgresql://a:one1@h1/d and postgres://b:two2@h2/e"
    assert scrub(text) == "postgresql://a:***@h1/d and postgres://b:***@h2/e"


def test_scrub_hides_a_password_registered_by_another_url() -> None:
    redact_url("postgresql://app:k9-secret@db/p")
    # psycopg-style key/value connection strings carry the password without a URL.
    assert scrub("host=db user=app password=k9-secret") == "host=db user=app password=***"


def test_scrub_leaves_plain_text_alone() -> None:
    text = "auth/auth_toshiba: 2 revision(s) pending; see http://example.com/docs"
    assert scrub(text) == text
    assert scrub("") == ""


def test_scrub_is_idempotent() -> None:
    register_secret("abc123")
    once = scrub("postgresql://u:abc123@h/d abc123")
    assert scrub(once) == once
    assert once == "postgresql://u:***@h/d ***"


def test_password_in_query_string_is_hidden() -> None:
    url = "postgresql://app@db/p?sslmode=require&password=q-secret"
    assert "q-secret" not in redact_url(url)
    assert "q-secret" not in scrub(f"cannot connect to {url}")


def test_a_password_is_hidden_in_the_spellings_drivers_print() -> None:
    register_secret("p@ss:w/rd%Zebra")
    assert scrub("[SQL: SELECT 'p@ss:w/rd%%Zebra']") == "[SQL: SELECT '***']"
    assert scrub("dsn=p%40ss%3Aw%2Frd%25Zebra") == "dsn=***"
    assert scrub("password p@ss:w/rd%Zebra") == "password ***"


def test_mask_urls_touches_nothing_but_url_passwords() -> None:
    register_secret("auth")
    text = 'CREATE TABLE "auth_default".t; {"service": "auth"} postgresql://u:auth@h/db'
    assert redact.mask_urls(text) == (
        'CREATE TABLE "auth_default".t; {"service": "auth"} postgresql://u:***@h/db')


def test_masking_urls_finds_what_the_plain_pattern_finds() -> None:
    """mask_urls looks for a password only where a scheme ends in ``://`` (linear time on
    a large JSON status); on any text it gives what the pattern substituted everywhere
    gives."""
    import random

    def plain(text: str) -> str:
        return redact._URL_PASSWORD.sub(
            lambda m: m.group("head") + (MASK if m.group("pw") else ""), text)

    alphabet = [*'ab9+.-:/@? \n"xP', "://", "pg://", "u:p@", "A1://:s@"]
    generator = random.Random(20261130)
    for _ in range(20000):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 24)))
        assert redact._mask_authorities(text) == plain(text), repr(text)
    big = '{"database": "postgresql://app:s3cret@db:5432/platform", "x": "y"}\n' * 3000
    assert redact.mask_urls(big) == plain(big) and "s3cret" not in redact.mask_urls(big)


@pytest.mark.parametrize("text", [
    "\u212a://app:s3cret@db/p",          # KELVIN SIGN: a letter for the case-blind pattern
    "see x\u017f://app:s3cret@db/p",     # LATIN SMALL LETTER LONG S before '://'
    "\u0130\u0131://app:s3cret@db/p",    # dotted capital I, dotless small i
    "\u212a1+://app:s3cret@db/p",
])
def test_masking_urls_hides_what_the_plain_pattern_hides_beyond_ascii(text: str) -> None:
    """The pattern is case-insensitive, so ``[a-z]`` also matches the four non-ASCII
    letters whose case folds into ASCII: a scheme made of them is still a URL to it, and
    the linear search must hide that password too."""
    plain = redact._URL_PASSWORD.sub(
        lambda m: m.group("head") + (MASK if m.group("pw") else ""), text)
    assert "s3cret" not in plain
    assert redact.mask_urls(text) == plain


@pytest.mark.parametrize("name", ["token", "access_token", "api_key", "apikey", "secret",
                                  "client_secret", "sslpassword", "TOKEN"])
def test_a_token_in_a_query_string_is_hidden(name: str) -> None:
    url = f"https://gw.example/metrics?job=x&{name}=tok-9Secret&b=1"
    assert mask_urls(url) == f"https://gw.example/metrics?job=x&{name}=***&b=1"
    assert "tok-9Secret" not in scrub(url)


def test_a_query_parameter_that_only_ends_like_a_secret_is_kept() -> None:
    assert mask_urls("http://h/p?mytoken=x&sslkey=/k.pem") == "http://h/p?mytoken=x&sslkey=/k.pem"


def test_masking_a_json_text_keeps_it_json() -> None:
    # A raw quote in an unregistered ?password= is \" in JSON: masking ate the backslash
    # and left an invalid document ("...password=***"Zx9-tail"...).
    import json

    text = json.dumps({"database": "postgresql://u@h/db?password=Wq7\"Zx9-tail",
                       "other": "postgresql://u:p\"w@h/db"})
    assert json.loads(mask_urls(text))["database"].startswith(
        "postgresql://u@h/db?password=***")
    assert json.loads(mask_urls(text))["other"] == "postgresql://u:***@h/db"


def test_a_registered_query_password_is_hidden_whole_whatever_it_holds() -> None:
    secret = "Wq7 Zx9'tail"
    register_secret(secret)
    shown = redact_url(f"postgresql://u@h/db?password={secret}&sslmode=disable")
    assert shown == "postgresql://u@h/db?password=***&sslmode=disable"


def test_a_backslash_in_a_token_does_not_end_its_masking() -> None:
    # In free text a backslash is part of the token; in a JSON text it escapes the next
    # character, and the pair is masked with it (the JSON stays valid).
    assert mask_urls("http://h/?token=Wq7\\Zx9Kq4 failed") == "http://h/?token=*** failed"
    import json

    text = json.dumps({"u": "http://h/?token=Wq7\\Zx9\"Kq4", "v": 1})
    assert json.loads(mask_urls(text)) == {"u": "http://h/?token=***", "v": 1}


def test_masking_keeps_what_follows_a_json_control_escape_and_a_closing_quote() -> None:
    # The backslash rule took '\\n' and the data after it ('keep this data' lost), and a
    # shell-quoted word's closing quote.
    import json

    text = json.dumps({"m": "http://gw/?token=SECRET\nkeep this data"})
    assert json.loads(mask_urls(text)) == {"m": "http://gw/?token=***\nkeep this data"}
    assert mask_urls("fleet migrate --metrics-push 'http://gw/?token=SECRET\\' --json") == (
        "fleet migrate --metrics-push 'http://gw/?token=***\\' --json")


def test_overlapping_secrets_are_masked_as_one() -> None:
    """A URL's path taken for a password (``host:9/...?token=a:b`` before an ``@``) and the
    token after it overlap: replaced one after the other, the first cut the second apart."""
    url = "http://127.0.0.1:9/metrics/job/x/?token=Aa1:Bb2@TAILSECRET99"
    shown = redact.scrub(f"metrics not pushed to {redact.redact_url(url)}: {url}: refused")
    assert "TAIL" not in shown and "Bb2" not in shown and "Aa1" not in shown, shown
    assert shown.endswith(": refused")
