"""Keep passwords out of every line fleet writes.

Passwords are registered as they are read (from configuration and URLs) and scrubbed from
any text the reporting layer prints, including tracebacks; URLs are shown with ``***``.
"""

from __future__ import annotations

import re

MASK = "***"
_secrets: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]*)(?=@)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s'\"]*)", re.I)


def register_secret(secret: str | None) -> None:
    """Remember a password so that :func:`scrub` hides it wherever it appears."""
    if secret and len(secret) >= 3:
        _secrets.add(secret)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the password is also registered).

    The password may sit in the authority (``user:pw@host``, even with a raw ``/`` in it)
    or in the query (``?password=pw``, as libpq accepts).
    """
    authority = url.split("://", 1)[1] if "://" in url else ""
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        register_secret(userinfo.split(":", 1)[1])
    for match in _QUERY_PASSWORD.finditer(url):
        register_secret(match.group("pw"))
    return scrub(url)


def scrub(text: str) -> str:
    """Hide every registered password and any password embedded in a URL in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + (MASK if m.group("pw") else ""), text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + (MASK if m.group("pw") else ""), text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
