"""What to do about a revision that failed: hints for the failures real histories hit.

A revision that works under plain Alembic in its own project and fails under fleet most
often relies on something of that project's setup: its driver, an extension's schema on
the search path, tables made by ``create_all()`` before the first revision. The database's
error says what broke, not why; these hints name the configuration that fixes it.
"""

from __future__ import annotations

import re

from alembic_fleet import drivers
from alembic_fleet.model.targets import Service

_PLACEHOLDER = "are allowed as placeholders"
"""psycopg 3 refusing ``%I`` (or any ``%x``) in SQL it parses for parameters."""
_UNDEFINED_TYPE = re.compile(r'type "([^"]+)" does not exist')
"""PostgreSQL's message for a type it cannot find (42704): a never-created enum, or an
extension's type off the search path."""


def hint_for(error: BaseException, service: Service, database_url: str | None,
             from_base: bool) -> str | None:
    """A hint for a revision's failure on ``service``, or None when nothing specific is
    known. ``from_base``: the target started from an empty history."""
    text = str(getattr(error, "orig", None) or error)
    code = drivers.sqlstate(error)
    driver = drivers.for_url(database_url)
    if _PLACEHOLDER in text or "not enough arguments for format string" in text or (
            "unsupported format character" in text):
        return ("a '%' in this revision's SQL was read as a parameter placeholder by "
                f"{driver.name}: write '%%', or run the service on the driver it was "
                "written for (postgresql+asyncpg:// or postgresql+psycopg2:// in its URL)")
    if code == "42804" and driver is drivers.PSYCOPG:
        return ("psycopg 3 sends parameters with their Python type; a revision written "
                "for psycopg2 (which inlines them) may need postgresql+psycopg2:// in the "
                "service's URL")
    if code in ("42704", "42883") and any(word in text for word in (
            "operator class", "type", "function", "operator")):
        where = ", ".join(service.search_path) or "none"
        on_path = (f"not on the search path (shared schemas: {where}): list the schema it "
                   'is installed in, e.g. search_path = ["public"] or ["extensions"]')
        missing_type = _UNDEFINED_TYPE.search(text) if code == "42704" else None
        if missing_type is None:
            return f"an extension's type, function or operator class is {on_path}"
        return (f"the revision may use the type {missing_type.group(1)!r} without creating "
                "it (an enum created in another revision or service, or declared with "
                "create_type=False, or an sa.Enum column added with op.add_column, which "
                "creates no type): create it first in this revision, with sa.Enum(..., "
                "name=...).create(op.get_bind(), checkfirst=True) or CREATE TYPE. If it is "
                f"an extension's type, the extension's schema is {on_path}")
    if code == "42P01" and from_base and service.baseline is None:
        return ("the history may start from tables its project creates before the first "
                "revision (metadata.create_all() and stamp): give the service a baseline "
                "(README: Baselines)")
    return None
