"""Keep passwords out of every line fleet writes, without touching data or SQL.

Two tools, used where text is made rather than over everything printed:

* :func:`mask_urls` hides the password of any URL in a text (``user:***@host``,
  ``?password=***``). It only matches URL syntax, so it is safe on any output.
* :func:`scrub` also replaces every password fleet has seen (registered as configuration
  and URLs are read, with the spellings drivers and SQLAlchemy print it in: ``%`` doubled,
  percent-encoded). It is a substring replacement, so it is applied only to free text that
  may quote a password: error messages and hints from drivers, warnings, tracebacks. Never
  to SQL, table cells or data: a password ``auth`` must not turn ``auth_default`` into
  ``***_default``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_plus

if TYPE_CHECKING:
    from alembic_fleet.model.targets import Database

MASK = "***"
_secrets: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]*)(?=@)", re.I)
_SECRET_KEYS = ("password", "passwd", "sslpassword", "token", "access_token", "auth_token",
                "api_key", "apikey", "secret", "client_secret")
"""Query parameters whose value is a secret: libpq's ``password``, and the tokens and keys
of the HTTP endpoints fleet pushes to (a Pushgateway behind a proxy)."""
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&](?:" + "|".join(_SECRET_KEYS) + r")=)"
    r"(?P<pw>(?:[^&#\s'\"\\]|\\[^nrtbfu'\s])*)", re.I)
"""A secret in a URL's query. It ends before a space or a quote; a backslash is taken with
the character after it (in a JSON text ``\\"`` and ``\\\\`` escape a character of the
secret, and masking the backslash alone broke the JSON; in free text it is part of the
secret), except a JSON escape of a control character (``\\n``, ``\\t``, ``\\u...``: the
data after it is not the secret's) and ``\\'`` (the end of a shell-quoted word). A secret
fleet has read (from the configuration, a URL it was given: :func:`register_url_secrets`)
is hidden whole by :func:`scrub` before this pattern is tried, whatever it holds."""


def register_secret(secret: str | None) -> None:
    """Remember a password so that :func:`scrub` hides it wherever it appears, in the
    spellings it is printed in (as is, ``%`` doubled as in SQLAlchemy's ``[SQL: ...]``
    text, percent-encoded as in a URL, ``\\`` doubled as ``repr()`` and JSON write it)."""
    if secret and len(secret) >= 3:
        _secrets.update({secret, secret.replace("%", "%%"), quote(secret, safe=""),
                         secret.replace("\\", "\\\\")})  # as repr() and JSON write it


def secrets() -> tuple[str, ...]:
    """The passwords registered so far (handed to a service's interpreter, so that what it
    reports is scrubbed there too)."""
    return tuple(_secrets)


def register_url_secrets(url: str) -> None:
    """Register the secrets of ``url``: the password of its authority (``user:pw@host``,
    even with a raw ``/`` in it) and the value of each secret query parameter
    (:data:`_SECRET_KEYS`) whole, as written and decoded, whatever it holds (a space or a
    quote ends the URL pattern of free text, not a parameter)."""
    authority = url.split("://", 1)[1] if "://" in url else ""
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        register_secret(userinfo.split(":", 1)[1])
    query = url.partition("?")[2].partition("#")[0]
    for parameter in query.split("&"):
        key, equals, value = parameter.partition("=")
        if equals and key.lower() in _SECRET_KEYS:
            register_secret(value)
            register_secret(unquote_plus(value))


def redact_url(url: str) -> str:
    """``url`` with its passwords replaced by ``***`` (and registered:
    :func:`register_url_secrets`)."""
    register_url_secrets(url)
    return scrub(url)


@lru_cache(maxsize=256)
def display(database: Database) -> str:
    """How a database is shown to users: the URL with its password masked (cached: every
    target of a status line shows it). Here, not beside the engines, so that what prints
    a database does not import SQLAlchemy."""
    if database.url is None:
        return f"embedded:///{database.embedded_name}"
    # As written, password masked (in the userinfo and as ?password=). SQLAlchemy's
    # render_as_string(hide_password=True) would also re-encode the query (a socket path
    # 'host=/tmp/x' becomes 'host=%2Ftmp%2Fx'), showing a URL the user never wrote.
    return redact_url(database.url)


_AUTHORITY_WITH_PASSWORD = re.compile(r"://[^:/?#@\s]*:[^@/\s]*(?=@)")
"""What follows the scheme in a match of ``_URL_PASSWORD``."""
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_CHAR = re.compile(r"[a-z0-9+.-]", re.I)
_LETTER = re.compile(r"[a-z]", re.I)
"""The scheme's characters as ``_URL_PASSWORD`` reads them: case-insensitive, so ``[a-z]``
also takes the non-ASCII letters whose case folds into ASCII (KELVIN SIGN, long s, dotted
and dotless i). The ASCII sets answer for ASCII; the pattern itself for anything else."""


def _folded_scheme_char(char: str) -> bool:
    """A non-ASCII character that the pattern's scheme takes."""
    return not char.isascii() and bool(_SCHEME_CHAR.match(char))


def _folded_letter(char: str) -> bool:
    """A non-ASCII character that the pattern takes for a scheme's first letter."""
    return not char.isascii() and bool(_LETTER.match(char))


def mask_urls(text: str) -> str:
    """Hide the password of every URL in ``text`` (and nothing else)."""
    if "://" in text:
        text = _mask_authorities(text)
    return _QUERY_PASSWORD.sub(lambda m: m.group("head") + (MASK if m.group("pw") else ""),
                               text)


def _mask_authorities(text: str) -> str:
    """``_URL_PASSWORD.sub`` with the same result, in time linear in the text: the pattern
    is tried only where ``://`` is followed by ``user:password@`` (the plain substitution
    tries it at every letter: half a second on a 30,000-target JSON status)."""
    pieces = []
    last = 0
    after = _AUTHORITY_WITH_PASSWORD.search(text)
    while after is not None:
        position = start = after.start()
        while start > last and (text[start - 1] in _SCHEME_CHARS
                                or _folded_scheme_char(text[start - 1])):
            start -= 1
        while start < position and not (text[start] in _LETTERS  # a scheme starts with one
                                        or _folded_letter(text[start])):
            start += 1
        found = _URL_PASSWORD.match(text, start) if start < position else None
        if found is not None:
            pieces += (text[last:start], found.group("head"), MASK if found.group("pw") else "")
            last = found.end()
        after = _AUTHORITY_WITH_PASSWORD.search(text, max(position + 3, last))
    pieces.append(text[last:])
    return "".join(pieces)


def scrub(text: str) -> str:
    """Hide every registered password and any password embedded in a URL in ``text``
    (free text only: see the module docstring)."""
    return mask_urls(_mask_secrets(text))


def _mask_secrets(text: str) -> str:
    """Every place any registered secret covers, masked whole, whatever it holds (a space or
    a quote end the URL pattern). Where secrets overlap, their union is masked: replacing
    one after the other cut the second apart (a URL's path and query taken for a password
    that holds ``:``, replaced first, left the token after it) and showed its rest."""
    spans = []
    for secret in _secrets:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    pieces, last = [], 0
    for start, end in sorted(spans):
        if start > last:
            pieces += (text[last:start], MASK)
        elif not pieces:
            pieces.append(MASK)
        last = max(last, end)
    pieces.append(text[last:])
    return "".join(pieces)


def first_line(error: BaseException) -> str:
    """The first line of an error (the database's message when there is one), with any
    password it quotes hidden."""
    original = getattr(error, "orig", None) or error
    lines = [line for line in str(original).strip().splitlines() if line.strip()]
    return scrub(lines[0]) if lines else type(original).__name__
