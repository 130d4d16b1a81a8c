"""The rules on a service's revision files (FC101-FC107, FC201, FC202).

The files are read by :mod:`alembic_fleet.check.revision_files` (parsed, never imported);
this module turns what they declare into findings. The graph rules are not computed here:
the declared revisions go into the one revision graph,
:meth:`alembic_fleet.model.revisions.RevisionGraph.from_revisions`, whose validation
methods return typed problems, and each problem becomes a finding on the file and line
that declared it. Alembic itself is no help for a CI gate: its ``RevisionMap`` only
*warns* when two files share a revision id and then silently keeps one of them, warns (or
fails late) on a ``down_revision`` that does not exist, and happily serves several heads.

Rules checked here:

* FC101 duplicate-revision: two files declare the same ``revision``.
* FC102 multiple-heads: more than one revision is not named in any ``down_revision``.
  Alembic supports several heads (and branch labels make them addressable), and
  ``fleet migrate`` upgrades to all of them (``heads``); but a CI gate wants one line of
  history, so two heads fail and branch labels do not exempt a head. Merge them with
  ``alembic merge heads``.
* FC103 unknown-down-revision: ``down_revision`` or ``depends_on`` names an id no file has
  (``depends_on`` may also name a branch label, as in Alembic).
* FC104 revision-cycle: a revision descends from itself (through ``down_revision`` or
  ``depends_on``): one finding per revision of the cycle the graph reports (one cycle at a
  time, as Alembic does).
* FC105 / FC106: the revision id / file name does not fullmatch the service's pattern.
* FC107 unreadable-revision: the file does not parse, or its revision identifiers are not
  literals fleet can read without running the file.
* FC108 unsafe-revision-id: a revision id (or a ``down_revision``) holds anything but
  letters, digits, '_' and '.': Alembic writes ids into SQL unescaped.
* FC201 missing-downgrade: no ``downgrade()``, an empty one, or one that only raises.
* FC202 imports-application: the file imports the service's application package.

Acceptance: a finding is still returned when accepted, with ``accepted`` set to the reason,
so reports can show what was waived. The default acceptance source is a comment anywhere in
the revision file: ``# fleet: allow missing-downgrade: data migration cannot be undone``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from alembic_fleet.check.accept import acceptances
from alembic_fleet.check.revision_files import (
    RevisionFile,
    iter_revision_paths,
    read_revision_file,
)
from alembic_fleet.model.findings import RULES, RULES_BY_NAME, Finding, finding
from alembic_fleet.model.identifiers import unsafe_revision_id
from alembic_fleet.model.revisions import (
    DuplicateRevision,
    MultipleHeads,
    RevisionCycle,
    RevisionGraph,
    UnknownReference,
)

__all__ = [
    "RevisionFile",
    "allowed_rules",
    "iter_revision_paths",
    "lint_service",
    "read_revision_file",
]

Acceptor = Callable[[str, str], "str | None"]
"""``accepted(rule_name, file_source) -> reason | None``."""


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
    """The per-file rules: FC105, FC106, FC108, FC201, FC202."""
    for rev in files:
        path = rev.path
        declared = rev.declared()
        named = [rev.revision] if rev.revision is not None else []
        named += list(declared.down) if declared is not None else []
        for unsafe in (i for i in named if unsafe_revision_id(i)):
            add("FC108", path, f"revision id {unsafe!r} holds characters Alembic would write "
                "into SQL unescaped", rev.revision_line, revision=rev.revision)
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
    """The graph rules (FC101, FC102, FC103, FC104): the graph's problems, as findings."""
    graph = RevisionGraph.from_revisions(
        declared for rev in files if (declared := rev.declared()) is not None)
    by_path = {str(rev.path): rev for rev in files}
    for problem in graph.problems():
        if isinstance(problem, DuplicateRevision):
            _duplicate(problem, by_path, shown, add)
        elif isinstance(problem, MultipleHeads):
            _multiple_heads(problem, graph, by_path, add)
        elif isinstance(problem, UnknownReference):
            _unknown(problem, by_path[problem.revision.path], add)
        elif isinstance(problem, RevisionCycle):
            _cycle(problem, graph, by_path, add)


def _duplicate(problem: DuplicateRevision, by_path: Mapping[str, RevisionFile],
               shown: Mapping[Path, str], add: _Add) -> None:
    """FC101 on every file after the first (in path order) with a repeated id."""
    same = [by_path[declared.path] for declared in problem.declarations]
    for index, extra in enumerate(same[1:], start=1):
        others = [shown[other.path] for number, other in enumerate(same) if number != index]
        add("FC101", extra.path, f"revision id {problem.revision!r} is also declared in "
            f"{', '.join(others)}; Alembic only warns and keeps one of the files",
            extra.revision_line, revision=problem.revision, details=tuple(others))


def _multiple_heads(problem: MultipleHeads, graph: RevisionGraph,
                    by_path: Mapping[str, RevisionFile], add: _Add) -> None:
    """FC102 on each head's file."""
    heads = problem.heads
    for head in heads:
        rev = by_path[graph.revisions[head].path]
        add("FC102", rev.path, f"{len(heads)} heads: {', '.join(heads)}; fleet would upgrade "
            "to all of them, but a CI gate wants one line of history", rev.revision_line,
            revision=head, details=heads)


def _unknown(problem: UnknownReference, rev: RevisionFile, add: _Add) -> None:
    """FC103 on the ``down_revision`` or ``depends_on`` line."""
    if problem.kind == "down_revision":
        add("FC103", rev.path, f"down_revision {problem.name!r} is not a revision of this "
            "service", rev.down_line, revision=rev.revision)
    else:
        add("FC103", rev.path, f"depends_on {problem.name!r} is neither a revision nor a "
            "branch label of this service", rev.depends_line or rev.down_line,
            revision=rev.revision)


def _cycle(problem: RevisionCycle, graph: RevisionGraph, by_path: Mapping[str, RevisionFile],
           add: _Add) -> None:
    """FC104 on every revision of the cycle, with the cycle as seen from it."""
    for rid in problem.members:
        path = problem.through(rid)
        rev = by_path[graph.revisions[rid].path]
        add("FC104", rev.path, f"revision {rid!r} descends from itself: {' -> '.join(path)}",
            rev.down_line, revision=rid, details=path)
