"""Warnings about the shared schemas services search after their own (``search_path``).

Fleet never creates anything in a shared schema, but two things there can surprise:

* the schema does not exist in a database: PostgreSQL skips a missing ``search_path`` entry
  without a word, so an extension's type or operator class is then merely "does not exist"
  (configured for every service, a schema may legitimately exist in only some databases,
  hence a warning, not an error);
* it holds a table (view, ...) whose name a revision of the service uses. The tenant's own
  schema comes first, so the name resolves to the tenant's table when there is one; when
  there is not (a fresh tenant before the revision that creates it, a table a revision
  dropped, ``DROP TABLE IF EXISTS``, an ``INSERT`` into a table the tenant lacks) it
  silently resolves to the shared one. Only names the migrations use matter: the search
  path is fleet's during migrations, not the application's, and shared schemas routinely
  hold tables no revision touches (PostGIS's ``spatial_ref_sys``).

The names a revision uses are read from its source: every string constant (table names in
``op`` calls, SQL in ``op.execute``) split into words, docstrings left out. A word that
merely looks like a table name in a message may give a warning too many; never one too few
for a name written in a string.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from alembic_fleet.catalog.shared import shared_relations
from alembic_fleet.exceptions import FleetError
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.redact import display
from alembic_fleet.workspace import Workspace

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_names_cache: dict[str, frozenset[str]] = {}


def shared_schema_warnings(workspace: Workspace, targets: Sequence[Target]) -> list[str]:
    """Warnings for the shared schemas of the services of ``targets``, per database: one
    catalog query each, only for databases where some service has a ``search_path``. A
    database that cannot be read is left out (the caller reports it as unreachable)."""
    groups: dict[str, tuple[Database, dict[str, None]]] = {}
    for target in targets:
        if workspace.service(target.service).search_path:
            groups.setdefault(target.database.key, (target.database, {}))[1].setdefault(
                target.service)
    warnings: list[str] = []
    for database, names in groups.values():
        services = [workspace.service(name) for name in names]
        wanted = {schema for service in services for schema in service.search_path}
        try:
            with workspace.databases.connect(database) as connection:
                found = shared_relations(connection, wanted)
        except (DBAPIError, FleetError):
            continue
        for service in services:
            for schema in service.search_path:
                if schema not in found:
                    warnings.append(
                        f"{service.name}: search_path schema {schema} does not exist in "
                        f"{display(database)}; PostgreSQL skips it, so the types, functions "
                        "and operator classes expected there are not found")
                    continue
                clash = sorted(found[schema] & revision_names(workspace, service.name))
                if clash:
                    warnings.append(
                        f"{service.name}: search_path schema {schema} in {display(database)} "
                        f"holds {', '.join(clash)}, named unqualified by the service's "
                        f"revisions: in a schema without its own {clash[0]}, the name "
                        f"resolves to {schema}.{clash[0]} (qualify it in the revisions, or "
                        f"rename the shared table)")
    return warnings


def revision_names(workspace: Workspace, service: str) -> frozenset[str]:
    """Every word of every string constant in the service's revision files."""
    names: set[str] = set()
    for revision in workspace.graph(service).revisions.values():
        names |= string_words(revision.path)
    return frozenset(names)


def string_words(path: str) -> frozenset[str]:
    """The words of a Python file's string constants, docstrings left out, as written and
    folded to lower case as PostgreSQL folds unquoted names (read once per process)."""
    cached = _names_cache.get(path)
    if cached is not None:
        return cached
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        tree = None
    words: set[str] = set()
    docstrings = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value,
                                                                      ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree) if tree is not None else ():
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            for word in _WORD.findall(node.value):
                words.update((word, word.lower()))
    result = frozenset(words)
    _names_cache[path] = result
    return result
