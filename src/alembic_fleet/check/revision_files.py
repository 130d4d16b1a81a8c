"""Reading revision files without running them: what a file declares, and on which lines.

``fleet check`` must see every revision file as written, and must not run migration code
(which may import the application, connect somewhere, or fail for reasons unrelated to the
graph) just to read four assignments. So the files are parsed with :mod:`ast`, never
imported, and Alembic is not used. :func:`iter_revision_paths` finds the files the way
Alembic's loader does; :func:`read_revision_file` returns a :class:`RevisionFile`: the
identifiers (as a :class:`~alembic_fleet.model.revisions.Revision`, for the one revision
graph), the lines findings point at, and the facts the per-file rules need.

The rules themselves live in :mod:`alembic_fleet.check.scripts_lint`; other layers use this
module to point a finding at a revision's ``upgrade()`` or ``downgrade()`` line.
"""

from __future__ import annotations

import ast
import tokenize
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_fleet.model.revisions import Revision

__all__ = ["RevisionFile", "iter_revision_paths", "read_revision_file", "try_read_revision_file"]

_IDENTIFIERS = ("revision", "down_revision", "branch_labels", "depends_on")


@dataclass(frozen=True)
class RevisionFile:
    """What fleet reads from one revision file, with the lines to point findings at.

    ``revision`` is ``None`` when the assignment exists but is not a string literal (then
    ``problems`` says why). ``down_line`` is the ``revision`` line when ``down_revision`` is
    missing. ``downgrade_empty`` is true when ``downgrade()`` does nothing (only ``pass``,
    ``...`` or a docstring); ``downgrade_raises`` names the exception when its whole body is
    a single ``raise``.
    """

    path: Path
    revision: str | None
    down_revisions: tuple[str, ...]
    depends_on: tuple[str, ...]
    branch_labels: tuple[str, ...]
    revision_line: int
    down_line: int
    upgrade_line: int | None
    downgrade_line: int | None
    downgrade_empty: bool
    application_imports: tuple[tuple[str, int], ...]
    """``(module, line)`` for each import of an application package."""
    source: str
    depends_line: int | None = None
    downgrade_raises: str | None = None
    problems: tuple[tuple[str, int], ...] = ()
    """``(message, line)`` for identifiers fleet cannot read statically (reported as FC107)."""

    def declared(self) -> Revision | None:
        """The revision as declared, for the revision graph (``None`` without a literal id)."""
        if self.revision is None:
            return None
        return Revision(self.revision, self.down_revisions, path=str(self.path),
                        branch_labels=self.branch_labels, depends_on=self.depends_on)


def iter_revision_paths(version_dirs: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
    """``(version_dir, path)`` for every candidate ``*.py`` file, recursively, sorted.

    Mirrors Alembic's loader: ``__init__.py`` and editor lock files (``.#name.py``) are
    skipped; ``__pycache__`` and hidden folders are not walked. Recursing always is harmless
    (a revision in a subfolder without ``recursive_version_locations`` is a mistake worth
    seeing) and keeps fleet independent of that setting. A missing folder yields nothing.
    """
    seen: set[Path] = set()
    for version_dir in version_dirs:
        if not version_dir.is_dir():
            continue
        for path in sorted(version_dir.rglob("*.py")):
            relative = path.relative_to(version_dir)
            if any(part == "__pycache__" or part.startswith(".") for part in relative.parts[:-1]):
                continue
            if path.name == "__init__.py" or path.name.startswith(".#") or not path.is_file():
                continue
            resolved = path.resolve()
            if resolved in seen:  # overlapping version dirs: read each file once
                continue
            seen.add(resolved)
            yield version_dir, path


def _read_source(path: Path) -> str:
    """The file's text, decoded as Python decodes it (PEP 263 coding cookie, else UTF-8)."""
    with tokenize.open(path) as handle:
        return handle.read()


def read_revision_file(
    path: Path, *, application_packages: Collection[str] = ()
) -> RevisionFile | None:
    """Parse one file; ``None`` when it has no module-level ``revision = ...``.

    Raises :class:`SyntaxError` when the file does not parse (and :class:`UnicodeDecodeError`
    or :class:`OSError` when it cannot be read); the lint turns those into FC107.
    """
    source = _read_source(path)
    tree = ast.parse(source, filename=str(path))
    values: dict[str, ast.expr] = {}
    lines: dict[str, int] = {}
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        for name, value in _assigned(node):
            values[name] = value  # the last assignment wins, as when Python runs the module
            lines[name] = node.lineno
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[node.name] = node
    if "revision" not in values:
        return None

    problems: list[tuple[str, int]] = []
    revision: str | None = None
    raw = _literal(values["revision"])
    if isinstance(raw, str):
        revision = raw
    else:
        problems.append(("revision is not a string literal", lines["revision"]))

    def identifiers(name: str) -> tuple[str, ...]:
        if name not in values:
            return ()
        ids = _ids(_literal(values[name]))
        if ids is None:
            problems.append(
                (f"{name} is not a literal string, tuple of strings or None", lines[name])
            )
            return ()
        return ids

    if "down_revision" not in values:
        problems.append(("no module-level down_revision (Alembic requires one)",
                         lines["revision"]))
    downgrade = functions.get("downgrade")
    empty, raises = _downgrade_body(downgrade)
    upgrade = functions.get("upgrade")
    return RevisionFile(
        path=path,
        revision=revision,
        down_revisions=identifiers("down_revision"),
        depends_on=identifiers("depends_on"),
        branch_labels=identifiers("branch_labels"),
        revision_line=lines["revision"],
        down_line=lines.get("down_revision", lines["revision"]),
        upgrade_line=upgrade.lineno if upgrade else None,
        downgrade_line=downgrade.lineno if downgrade else None,
        downgrade_empty=empty,
        application_imports=tuple(_application_imports(tree, application_packages)),
        source=source,
        depends_line=lines.get("depends_on"),
        downgrade_raises=raises,
        problems=tuple(problems),
    )


def _assigned(node: ast.stmt) -> Iterator[tuple[str, ast.expr]]:
    """``(name, value)`` for the revision identifiers a module-level statement assigns.

    Covers ``revision = "x"``, ``revision: str = "x"`` (the current ``script.py.mako``) and
    chained ``a = b = "x"``. A bare annotation (``revision: str``) defines nothing.
    """
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id in _IDENTIFIERS:
                yield target.id, node.value
    elif (
        isinstance(node, ast.AnnAssign)
        and node.value is not None
        and isinstance(node.target, ast.Name)
        and node.target.id in _IDENTIFIERS
    ):
        yield node.target.id, node.value


_NOT_LITERAL = object()


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _ids(value: object) -> tuple[str, ...] | None:
    """Alembic's ``to_tuple``: ``None`` -> ``()``, ``"a"`` -> ``("a",)``; ``None`` if invalid."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, set | frozenset) and all(isinstance(item, str) for item in value):
        return tuple(sorted(value))
    return None


def _downgrade_body(
    function: ast.FunctionDef | ast.AsyncFunctionDef | None,
) -> tuple[bool, str | None]:
    """``(empty, raises)``: does ``downgrade()`` do nothing, or only raise (and what)?

    A missing function counts as empty. Comments are not in the AST, so ``pass`` plus
    comments is empty too.
    """
    if function is None:
        return True, None
    body = [statement for statement in function.body if not _is_filler(statement)]
    if not body:
        return True, None
    if len(body) == 1 and isinstance(body[0], ast.Raise):
        exc = body[0].exc
        if isinstance(exc, ast.Call):
            exc = exc.func
        return False, ast.unparse(exc) if exc is not None else "raise"
    return False, None


def _is_filler(statement: ast.stmt) -> bool:
    """``pass``, ``...`` or a bare string (docstring): statements that do nothing."""
    if isinstance(statement, ast.Pass):
        return True
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and (isinstance(statement.value.value, str) or statement.value.value is Ellipsis)
    )


def _application_imports(
    tree: ast.Module, application_packages: Collection[str]
) -> Iterator[tuple[str, int]]:
    """``(module, line)`` for imports of the application, anywhere in the module.

    ``application_packages`` may hold top-level packages (``app``) or dotted prefixes
    (``app.models``); ``app_other`` does not match ``app``. Relative imports are ignored:
    a versions folder is not a package of the application.
    """
    packages = tuple(package.strip(".") for package in application_packages if package.strip("."))
    if not packages:
        return

    def matches(module: str) -> bool:
        return any(module == package or module.startswith(package + ".") for package in packages)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if matches(alias.name):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if matches(node.module):
                yield node.module, node.lineno
            else:  # from app import models, with application_packages=("app.models",)
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    if matches(dotted):
                        yield dotted, node.lineno


def try_read_revision_file(path: str | Path) -> RevisionFile | None:
    """The parsed file (source, ``upgrade()`` and ``downgrade()`` lines), or ``None`` when it
    cannot be read or parsed: for pointing a finding of a later layer at its line."""
    try:
        return read_revision_file(Path(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
