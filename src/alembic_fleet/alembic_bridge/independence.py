"""Whether a service's revisions do the same thing for every tenant, read from their files.

A new tenant may be copied from a reference schema (``provision = "reference"``) only when
migrating it would give exactly what migrating the reference gave, up to the schema's name.
Under fleet a revision learns which tenant it runs for only through its schema (the search
path, ``current_schema()``, the env helper's ``fleet_schema`` attribute, the version table's
schema) or through state outside that schema (another schema's tables, the environment).
This module refuses, before any reference is built, the histories whose files show one of
these:

* a revision whose SQL renders differently each time (a value computed in Python, such as
  ``uuid4()`` or ``datetime.now()``): each migrated tenant gets its own value, a copy would
  share the reference's;
* a revision whose source names the schema it runs in (in any letter case, as SQL reads
  it, or through the catalog's schema names), another schema, or the environment
  (:data:`TENANT_STATE`): what it does may depend on the tenant, or on when it runs;
* a revision that says ``fleet_provision = False``.

A revision that says ``fleet_provision = True`` is taken at its word (its author checked).
What the files cannot show (a value computed by the database, such as ``now()`` or
``gen_random_uuid()``, or a name that ends up in the rows) is found by building the history
twice and comparing (see :mod:`alembic_fleet.execution.provision`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from alembic_fleet.alembic_bridge.replay import DYNAMIC, render_statements

OPT_IN = re.compile(r"^fleet_provision\s*=\s*True\b", re.MULTILINE)
OPT_OUT = re.compile(r"^fleet_provision\s*=\s*False\b", re.MULTILINE)
IMPORTS = re.compile(r"^\s*(?:from|import)\s.*$", re.MULTILINE)

_OTHER_SCHEMA = (r"(?i)\b(?:FROM|JOIN|INTO|UPDATE|TABLE|REFERENCES)\s+"
                 r"(?!(?:pg_catalog|information_schema)\b)\"?[A-Za-z_][\w$]*\"?\s*\.\s*"
                 r"\"?[A-Za-z_]")

TENANT_STATE: tuple[tuple[str, re.Pattern[str]], ...] = (
    # SQL is case-insensitive: CURRENT_SCHEMA (the keyword, no parentheses), SEARCH_PATH.
    ("the schema it runs in (current_schema)", re.compile(r"(?i)current_schema")),
    ("the search path", re.compile(r"(?i)search_path")),
    ("the schemas' names in the catalog (pg_namespace, information_schema's table_schema)",
     re.compile(r"(?i)\b(?:pg_namespace|regnamespace|relnamespace|typnamespace|pronamespace"
                r"|connamespace|nspname|schemaname|table_schema|pg_my_temp_schema)\b")),
    ("the version table's schema", re.compile(r"version_table_schema")),
    ("the helper's attributes (fleet_schema)", re.compile(r"fleet_schema|\.attributes\b")),
    ("ALEMBIC_SCHEMA or -x arguments", re.compile(r"ALEMBIC_SCHEMA|x_argument")),
    ("the environment", re.compile(r"\bos\.environ\b|\bgetenv\b")),
    ("the connection's default schema", re.compile(r"default_schema_name")),
    ("another schema (schema=)", re.compile(r"\bschema\s*=\s*(?!None\b)")),
    ("another schema's table", re.compile(_OTHER_SCHEMA)),
)
"""What in a revision's source shows that its effect may depend on the tenant (or on what
lies outside its schema), each with how a refusal names it."""


def tenant_dependence(revisions: Iterable[tuple[str, Any, str]], target_metadata: Any = None,
                      rendered: Collection[str] = ()) -> str | None:
    """Why these revisions (``(id, module, path)``) may not be copied from a reference, or
    None when their files show nothing tenant-specific. ``rendered``: revisions already
    known to render the same SQL twice (the replay's own check), not rendered again."""
    for revision, module, path in revisions:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            return f"revision {revision}: its file cannot be read ({exc.strerror})"
        if OPT_IN.search(source):
            continue
        if OPT_OUT.search(source):
            return f"revision {revision} says fleet_provision = False"
        code = IMPORTS.sub("", source)  # 'from sqlalchemy.dialects import ...' is no SQL
        for what, pattern in TENANT_STATE:
            if pattern.search(code):
                return (f"revision {revision} may depend on the tenant: it reads {what} "
                        "(mark it fleet_provision = True if it does the same for every "
                        "tenant)")
        if (revision not in rendered and not DYNAMIC.search(source)
                and _renders_differently(module, target_metadata)):
            return (f"revision {revision} renders different SQL each time (a value computed "
                    "in Python, such as uuid4() or datetime.now()): each migrated tenant gets "
                    "its own value, a copy would share the reference's")
    return None


def _renders_differently(module: Any, target_metadata: Any) -> bool:
    """Whether two offline renderings of the revision differ (False when it cannot be
    rendered offline at all: it runs online, where the two builds are compared)."""
    try:
        first = render_statements(module.upgrade, target_metadata)
        second = render_statements(module.upgrade, target_metadata)
    except Exception:  # needs a live database: runs online
        return False
    return first != second
