"""Which environment variable each service's database URL is read from.

``fleet up`` and ``fleet run`` hand the services the URLs fleet uses, under the names the
configuration itself reads: ``database = "${DATABASE_URI:-}"`` is exported as
``DATABASE_URI``; ``database = "${INGESTION_DATABASE_URL:-${DATABASE_URI:-...}}"`` as
``INGESTION_DATABASE_URL``: when the whole value is one variable (with an optional
default), that variable is the one a person sets, so it is the one exported. A value that
is a literal, or a URL composed of several variables, is exported under the default name:
``<SERVICE>_DATABASE_URI`` for a service, ``DATABASE_URI`` for the top-level database.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

_WHOLE_VALUE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-.*)?\}", re.DOTALL)
"""A value that is one variable (with an optional default): that variable holds the URL."""
DEFAULT_VARIABLE = "DATABASE_URI"


def database_variables(config_file: Path, services: list[str]) -> dict[str | None, str]:
    """Variable name per service (None: the top-level database)."""
    data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    if config_file.name == "pyproject.toml":
        data = data.get("tool", {}).get("fleet", {})
    names: dict[str | None, str] = {None: _first(data.get("database")) or DEFAULT_VARIABLE}
    tables = data.get("services", {})
    for service in services:
        raw = tables.get(service, {}).get("database") if isinstance(tables, dict) else None
        if raw is None:
            names[service] = names[None]
        else:
            fallback = service.upper().replace("-", "_") + "_DATABASE_URI"
            names[service] = _first(raw) or fallback
    return names


def _first(value: object) -> str | None:
    """The variable the whole URL is read from, or None when the value is a literal or is
    composed of parts (``postgresql://${DB_USER}:${DB_PASSWORD}@...``: no one variable
    holds the URL, so the default name is exported)."""
    if not isinstance(value, str):
        return None
    match = _WHOLE_VALUE.fullmatch(value.strip())
    return match.group(1) if match else None
