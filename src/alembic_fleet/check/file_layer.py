"""Layer 1 of ``fleet check``: the files, no database.

Two checks per service, both on what is in the version folders: the revision files' rules
(:func:`alembic_fleet.check.scripts_lint.lint_service`, graph included), and the SQL each
*new* revision's ``upgrade()`` renders offline, against the unsafe-operation rules
(:mod:`alembic_fleet.check.unsafe`). Which revisions are new (``--all``, ``--since REF``,
``--database``, or by default those new on this git branch) is decided here too, since only
this layer needs it: the per-revision rules (:data:`~alembic_fleet.check.report.REVISION_CODES`
and FC5xx) look at those only; the graph rules always cover every file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic_fleet.alembic_bridge import scratch
from alembic_fleet.check.accept import acceptances
from alembic_fleet.check.git_scope import BranchScopes, files_at
from alembic_fleet.check.report import CheckedService, CheckOptions, RevisionScope
from alembic_fleet.check.revision_files import try_read_revision_file
from alembic_fleet.check.scripts_lint import lint_service
from alembic_fleet.check.unsafe import lint_statements
from alembic_fleet.model.findings import Finding, finding
from alembic_fleet.model.status import TargetStatus


def application_packages(subject: CheckedService) -> tuple[str, ...]:
    """The packages a revision must not import: configured, or the service folder's own
    top-level packages and modules (the migrations folder excepted)."""
    if subject.service.application_packages is not None:
        return subject.service.application_packages
    folder = subject.service.path
    migrations = subject.scripts.script_dir.resolve()
    names = set()
    for entry in folder.iterdir():
        if entry.resolve() == migrations or entry.name.startswith("."):
            continue
        if entry.suffix == ".py" and entry.is_file() and entry.stem != "env":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return tuple(sorted(names))


def lint_files(subject: CheckedService) -> list[Finding]:
    """The revision files' findings (FC1xx, FC201, FC202)."""
    return lint_service(
        subject.name, subject.scripts.version_dirs,
        revision_pattern=subject.service.revision_pattern,
        file_pattern=subject.service.file_pattern,
        application_packages=application_packages(subject),
    )


def revision_scope(subject: CheckedService, options: CheckOptions,
                   current: Sequence[TargetStatus], branches: BranchScopes) -> RevisionScope:
    """Which revisions the per-revision rules look at.

    ``--all``: every one. ``--since REF``: revision files that do not exist in git at REF.
    ``--database``: revisions not applied to any target yet (every one when the service has
    no target). Otherwise, in a git work tree: the files new or changed since the
    merge-base with the base branch (:mod:`alembic_fleet.check.git_scope`); without git or
    a base branch, every one, with a note saying why.
    """
    if options.all_revisions:
        return RevisionScope("all")
    if options.since:
        known = files_at(options.since, subject.scripts.version_dirs)
        return RevisionScope("since", frozenset(known), base=options.since)
    if options.database:
        mine = [s for s in current if s.target.service == subject.name]
        if not mine:
            return RevisionScope("all", note=f"--database: service '{subject.name}' has no "
                                 "target to compare with")
        graph = subject.scripts.graph
        applied = graph.ancestors(rev for s in mine for rev in s.current)
        return RevisionScope("database", frozenset(
            Path(graph.revisions[r].path).resolve() for r in applied if r in graph.revisions))
    return branches.scope(subject.scripts.version_dirs)


def new_revisions(subject: CheckedService, scope: RevisionScope) -> list[str]:
    """The revisions in ``scope``, oldest first."""
    graph = subject.scripts.graph
    return [r.id for r in reversed(graph.ordered) if scope.covers(graph.revisions[r.id].path)]


def lint_unsafe(subject: CheckedService, revisions: Sequence[str]
                ) -> tuple[list[Finding], list[str]]:
    """Unsafe operations (FC5xx) in the SQL each of ``revisions`` renders offline, and the
    revisions whose ``upgrade()`` could not be rendered to the end.

    A revision that reads the database while upgrading (``op.get_bind()`` then
    ``.scalar()``, ``inspect()``) is Python fleet cannot see through offline: what it emitted
    before the read is linted, the rest is not, and that is no finding (the caller says it
    once). FC590 is only for a statement PostgreSQL's parser rejects.
    """
    rendered = scratch.render_upgrades(subject.scripts, list(revisions))
    return (unsafe_findings(subject.name, rendered),
            [item.revision for item in rendered if item.error])


def unsafe_findings(service: str, rendered: Sequence[scratch.RenderedRevision]
                    ) -> list[Finding]:
    """The unsafe-operation findings (FC5xx) of revisions already rendered offline, with
    the ``# fleet: allow`` comments of their files (``fleet check`` and ``fleet plan``)."""
    findings = []
    for item in rendered:
        parsed = try_read_revision_file(item.path)
        line = parsed.upgrade_line if parsed else None
        accepted = acceptances(parsed.source) if parsed else {}
        where = {"file": item.path, "line": line, "revision": item.revision}
        for operation in lint_statements(item.statements):
            reason = accepted.get(operation.rule)
            findings.append(finding(
                operation.rule, service,
                f"revision {item.revision}: {operation.message}",
                statement=operation.statement,
                accepted=reason.reason if reason else None, **where))
    return findings
