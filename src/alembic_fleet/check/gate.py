"""``fleet check``: run every check on every selected service and collect the findings.

Three layers, cheapest first, each skipped when an earlier one makes it meaningless:

1. the files (no database): the revision graph, each *new* revision's code and the SQL it
   renders offline (:mod:`alembic_fleet.check.file_layer`; new: on this git branch by
   default, see :mod:`alembic_fleet.check.git_scope`);
2. a scratch schema on a scratch database (the embedded PostgreSQL unless a URL is given):
   upgrade one revision at a time, compare head with the models, downgrade to base and
   upgrade again, comparing catalog descriptions at every step
   (:mod:`alembic_fleet.check.scratch_layer`);
3. with ``database=True``, the real databases: checksums of applied revisions against the
   files, and every tenant schema against a reference schema built from the migrations at
   that tenant's revision (:mod:`alembic_fleet.check.database_layer`).

This module only orders the layers. It is also the import path of what the façade, the
reporters and the tests use: the shared values (:mod:`.report`), ``create_revision``
(:mod:`.revision_command`) and ``changed_revisions`` (:mod:`.database_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from alembic_fleet.check.database_layer import changed_revisions, database_checks
from alembic_fleet.check.file_layer import (
    lint_files,
    lint_unsafe,
    new_revisions,
    revision_scope,
)
from alembic_fleet.check.git_scope import BranchScopes
from alembic_fleet.check.report import (
    GRAPH_CODES,
    REVISION_CODES,
    CheckedService,
    CheckOptions,
    CheckReport,
    LintedRevisions,
    RevisionScope,
)
from alembic_fleet.check.revision_command import create_revision
from alembic_fleet.check.scratch_layer import scratch_checks, scratch_connection
from alembic_fleet.databases import Databases
from alembic_fleet.model.findings import Finding, sort_key
from alembic_fleet.model.status import TargetStatus

__all__ = [
    "GRAPH_CODES",
    "CheckOptions",
    "CheckReport",
    "CheckedService",
    "changed_revisions",
    "create_revision",
    "run_checks",
]


def run_checks(subjects: Sequence[CheckedService], options: CheckOptions,
               statuses: Callable[[Sequence[str]], list[TargetStatus]] | None,
               databases: Databases, *, ledger_schema: str | None = "fleet") -> CheckReport:
    """Run the checks and return the report (sorted findings).

    What each layer covers: the graph rules (FC101-FC104, FC107, FC108), the scratch round
    trip and model drift, and the database checks look at the whole history by nature (one
    bad parent breaks every later revision; the round trip runs every migration; an applied
    revision can be edited or a schema altered at any age). The per-revision rules (FC105,
    FC106, FC201, FC202 and the unsafe operations, FC5xx) look only at the revisions in
    scope: new on this branch by default, ``--since REF``, not applied with ``--database``,
    or ``--all`` (:func:`~alembic_fleet.check.file_layer.revision_scope`).
    """
    report = CheckReport()
    branches = BranchScopes()
    linted: dict[str, list[Finding]] = {}
    loadable = []
    for subject in subjects:
        findings = linted[subject.name] = lint_files(subject)
        report.ran(subject.name, "files")
        if any(f.code in GRAPH_CODES for f in findings):
            for check in ("unsafe", "scratch", "database"):
                report.skip(subject.name, check, "the revision graph is broken")
        else:
            loadable.append(subject)
    current = _current_statuses(loadable, options, statuses)
    loads = {subject.name for subject in loadable}
    for subject in subjects:
        if subject.name in loads or not options.database:
            scope = revision_scope(subject, options, current, branches)
        else:
            scope = RevisionScope("all")  # applied revisions need a graph Alembic can load
        report.findings.extend(f for f in linted[subject.name]
                               if f.code not in REVISION_CODES or not f.file
                               or scope.covers(f.file))
        if scope.note and scope.note not in report.notes:
            report.notes.append(scope.note)
        if subject.name not in loads:
            continue
        new = new_revisions(subject, scope)
        findings, unrendered = lint_unsafe(subject, new)
        report.findings.extend(findings)
        report.scope[subject.name] = LintedRevisions(
            scope, new, len(subject.scripts.graph.revisions), unrendered)
        report.ran(subject.name, f"unsafe ({len(new)} new revisions)")
    if options.scratch and loadable:
        with scratch_connection(databases, options.scratch_url) as connection:
            for subject in loadable:
                scratch_checks(subject, connection, report)
    elif loadable:
        for subject in loadable:
            report.skip(subject.name, "scratch", "--no-scratch")
    if options.database:
        for subject in loadable:
            database_checks(subject, current, databases.connect, report, ledger_schema)
    report.findings.sort(key=sort_key)
    return report


def _current_statuses(subjects: Sequence[CheckedService], options: CheckOptions,
                      statuses: Callable[[Sequence[str]], list[TargetStatus]] | None
                      ) -> list[TargetStatus]:
    if not options.database or statuses is None or not subjects:
        return []
    return statuses([s.name for s in subjects])
