"""Static checks on a service's Alembic revision files (FC101-FC107, FC201, FC202).

The files are parsed with :mod:`ast`, never imported or executed, and Alembic is not used.
That is deliberate: Alembic's ``RevisionMap`` only *warns* when two files share a revision id
and then silently keeps one of them, warns (or fails late) on a ``down_revision`` that does
not exist, and happily serves several heads. A CI gate has to see every file as written, and
it must not run migration code (which may import the application, connect somewhere, or fail
for reasons unrelated to the graph) just to read four assignments.

Rules checked here:

* FC101 duplicate-revision: two files declare the same ``revision``.
* FC102 multiple-heads: more than one revision is not named in any ``down_revision``. Alembic
  supports several heads (and branch labels make them addressable), but ``fleet migrate``
  upgrades to a single head per service, so a CI gate wants exactly one; branch labels do not
  exempt a head. Merge them with ``alembic merge heads``.
* FC103 unknown-down-revision: ``down_revision`` or ``depends_on`` names an id no file has
  (``depends_on`` may also name a branch label, as in Alembic).
* FC104 revision-cycle: a revision descends from itself (through ``down_revision`` or
  ``depends_on``).
* FC105 / FC106: the revision id / file name does not fullmatch the service's pattern.
* FC107 unreadable-revision: the file does not parse, or its revision identifiers are not
  literals fleet can read without running the file.
* FC201 missing-downgrade: no ``downgrade()``, an empty one, or one that only raises.
* FC202 imports-application: the file imports the service's application package.

Acceptance: a finding is still returned when accepted, with ``accepted`` set to the reason,
so reports can show what was waived. The default acceptance source is a comment anywhere in
the revision file: ``# fleet: allow missing-downgrade: data migration cannot be undone``.
"""

from __future__ import annotations

import ast
import re
import tokenize
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_fleet.check.accept import acceptances
from alembic_fleet.model.findings import RULES, RULES_BY_NAME, Finding, finding

__all__ = [
    "RevisionFile",
    "allowed_rules",
    "iter_revision_paths",
    "lint_service",
    "read_revision_file",
]

Acceptor = Callable[[str, str], "str | None"]
"""``accepted(rule_name, file_source) -> reason | None``."""

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


# --------------------------------------------------------------------------- acceptance


def allowed_rules(source: str) -> dict[str, str]:
    """Rule name -> reason, from ``# fleet: allow NAME[, NAME]: reason`` comment lines.

    Names may also be given as codes (``FC201``); keys are always rule names, because that is
    what the ``accepted`` callback receives. A comment without a reason accepts nothing: the
    reason is the point of the comment, it is what reviewers and reports show.
    """
    return {name: item.reason for name, item in acceptances(source).items()}


def _default_accepted(rule_name: str, source: str) -> str | None:
    return allowed_rules(source).get(rule_name)


# --------------------------------------------------------------------------- reading


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
    or :class:`OSError` when it cannot be read); :func:`lint_service` turns those into FC107.
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


# --------------------------------------------------------------------------- linting


def lint_service(
    service: str,
    version_dirs: Sequence[Path],
    *,
    revision_pattern: str | None = None,
    file_pattern: str | None = None,
    application_packages: Collection[str] = (),
    accepted: Acceptor | None = None,
) -> list[Finding]:
    """All FC1xx/FC201/FC202 findings for one service, sorted by (file, line, code).

    ``file_pattern`` may contain the literal ``{revision}``, replaced by the escaped revision
    id before matching (so ``{revision}_[a-z0-9_]+\\.py`` ties file names to ids). Both
    patterns are full matches; an invalid one raises :class:`re.error` up front, since it is
    a configuration mistake rather than a finding. ``accepted(rule_name, source)`` returns a
    reason to waive a finding in that file; by default :func:`allowed_rules` comments do.
    """
    revision_re = re.compile(revision_pattern) if revision_pattern is not None else None
    if file_pattern is not None:
        re.compile(file_pattern.replace("{revision}", "x"))
    accept = accepted if accepted is not None else _default_accepted

    findings: list[Finding] = []
    files: list[RevisionFile] = []
    shown: dict[Path, str] = {}
    sources: dict[Path, str] = {}

    def add(code: str, path: Path, message: str, line: int | None, **more: object) -> None:
        rule = RULES.get(code) or RULES_BY_NAME[code]
        source = sources.get(path)
        reason = accept(rule.name, source) if source is not None else None
        findings.append(
            finding(code, service, message, file=str(path), line=line, accepted=reason, **more)
        )

    for version_dir, path in iter_revision_paths(version_dirs):
        shown[path] = path.relative_to(version_dir).as_posix()
        try:
            parsed = read_revision_file(path, application_packages=application_packages)
        except SyntaxError as error:
            sources[path] = _safe_text(path)
            add("FC107", path, f"{shown[path]} does not parse: {error.msg}", error.lineno or 1)
            continue
        except (UnicodeDecodeError, OSError, ValueError) as error:
            sources[path] = _safe_text(path)
            add("FC107", path, f"{shown[path]} cannot be read: {error}", 1)
            continue
        if parsed is None:
            continue
        sources[path] = parsed.source
        files.append(parsed)
        for message, line in parsed.problems:
            add("FC107", path, f"{shown[path]}: {message}; fleet reads revision files "
                "without running them", line, revision=parsed.revision)

    _check_files(files, shown, add, revision_re, file_pattern)
    _check_graph(files, shown, add)
    findings.sort(key=lambda item: (item.file or "", item.line or 0, item.code))
    return findings


def _safe_text(path: Path) -> str:
    """Best-effort text of an unreadable file, so acceptance comments still apply."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


_Add = Callable[..., None]


def _check_files(
    files: Sequence[RevisionFile],
    shown: Mapping[Path, str],
    add: _Add,
    revision_re: re.Pattern[str] | None,
    file_pattern: str | None,
) -> None:
    """The per-file rules: FC105, FC106, FC201, FC202."""
    for rev in files:
        path = rev.path
        if (revision_re is not None and rev.revision is not None
                and not revision_re.fullmatch(rev.revision)):
            add("FC105", path, f"revision id {rev.revision!r} does not match "
                f"revision_pattern {revision_re.pattern!r}", rev.revision_line,
                revision=rev.revision)
        if file_pattern is not None and (rev.revision is not None
                                         or "{revision}" not in file_pattern):
            pattern = file_pattern.replace("{revision}", re.escape(rev.revision or ""))
            if not re.fullmatch(pattern, path.name):
                add("FC106", path, f"file name {path.name!r} does not match file_pattern "
                    f"{file_pattern!r}", 1, revision=rev.revision)
        if rev.downgrade_line is None:
            add("FC201", path, f"{shown[path]} has no downgrade(); the revision cannot be "
                "rolled back", rev.revision_line, revision=rev.revision)
        elif rev.downgrade_empty:
            add("FC201", path, "downgrade() is empty; rolling back would leave upgrade()'s "
                "changes in place while Alembic records the revision as undone",
                rev.downgrade_line, revision=rev.revision)
        elif rev.downgrade_raises is not None:
            add("FC201", path, f"downgrade() raises {rev.downgrade_raises} instead of undoing "
                "upgrade()", rev.downgrade_line, revision=rev.revision)
        for module, line in rev.application_imports:
            add("FC202", path, f"imports application module {module!r}", line,
                revision=rev.revision)


def _check_graph(files: Sequence[RevisionFile], shown: Mapping[Path, str], add: _Add) -> None:
    """The graph rules: FC101, FC102, FC103, FC104."""
    by_id: dict[str, list[RevisionFile]] = defaultdict(list)
    labels: dict[str, list[str]] = defaultdict(list)
    for rev in files:
        if rev.revision is not None:
            by_id[rev.revision].append(rev)
            for label in rev.branch_labels:
                labels[label].append(rev.revision)

    # FC101: every file after the first (in path order) with a repeated id.
    for rid, same in by_id.items():
        for extra in same[1:]:
            others = [shown[other.path] for other in same if other is not extra]
            add("FC101", extra.path, f"revision id {rid!r} is also declared in "
                f"{', '.join(others)}; Alembic only warns and keeps one of the files",
                extra.revision_line, revision=rid, details=tuple(others))

    # FC103: parents and dependencies that do not exist.
    for rev in files:
        for down in rev.down_revisions:
            if down not in by_id:
                add("FC103", rev.path, f"down_revision {down!r} is not a revision of this "
                    "service", rev.down_line, revision=rev.revision)
        for dep in rev.depends_on:
            if dep not in by_id and dep not in labels:
                add("FC103", rev.path, f"depends_on {dep!r} is neither a revision nor a "
                    "branch label of this service", rev.depends_line or rev.down_line,
                    revision=rev.revision)

    # FC102: heads are ids no file names as a down_revision (depends_on does not count,
    # as in Alembic).
    named = {down for rev in files for down in rev.down_revisions}
    heads = sorted(rid for rid in by_id if rid not in named)
    if len(heads) > 1:
        for head in heads:
            rev = by_id[head][0]
            add("FC102", rev.path, f"{len(heads)} heads: {', '.join(heads)}; fleet upgrades "
                "each service to a single head", rev.revision_line, revision=head,
                details=tuple(heads))

    # FC104: every revision on a cycle, once, with the shortest cycle through it.
    edges: dict[str, set[str]] = defaultdict(set)
    for rev in files:
        if rev.revision is None:
            continue
        edges[rev.revision].update(down for down in rev.down_revisions if down in by_id)
        for dep in rev.depends_on:
            edges[rev.revision].update([dep] if dep in by_id else labels.get(dep, ()))
    for component in _cyclic_components(sorted(by_id), edges):
        for rid in sorted(component):
            path = _shortest_cycle(rid, edges, component)
            rev = by_id[rid][0]
            add("FC104", rev.path, f"revision {rid!r} descends from itself: "
                f"{' -> '.join(path)}", rev.down_line, revision=rid, details=tuple(path))


def _cyclic_components(
    nodes: Iterable[str], edges: Mapping[str, set[str]]
) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative).

    Iterative because a service can have thousands of linear revisions, more than Python's
    recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[set[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(edges.get(root, ())))))
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    result.append(component)
    return result


def _shortest_cycle(start: str, edges: Mapping[str, set[str]], within: set[str]) -> list[str]:
    """``[start, ..., start]`` following down edges inside one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child not in within:
                    continue
                if child == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return [*reversed(chain), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start, start]  # not reached for a cyclic component
