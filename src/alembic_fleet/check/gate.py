"""``fleet check``: run every check on every selected service and collect the findings.

Three layers, cheapest first, each skipped when an earlier one makes it meaningless:

1. the files (no database): the revision graph and each revision's code, and the SQL each
   *new* revision renders offline (:mod:`alembic_fleet.check.file_layer`);
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
from alembic_fleet.check.file_layer import lint_files, lint_unsafe, new_revisions
from alembic_fleet.check.report import (
    GRAPH_CODES,
    CheckedService,
    CheckOptions,
    CheckReport,
)
from alembic_fleet.check.revision_command import create_revision
from alembic_fleet.check.scratch_layer import scratch_checks, scratch_connection
from alembic_fleet.databases import Databases
from alembic_fleet.model.findings import sort_key
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
               databases: Databases) -> CheckReport:
    """Run the checks and return the report (sorted findings)."""
    report = CheckReport()
    loadable = []
    for subject in subjects:
        findings = lint_files(subject)
        report.findings.extend(findings)
        report.ran(subject.name, "files")
        if any(f.code in GRAPH_CODES for f in findings):
            for check in ("unsafe", "scratch", "database"):
                report.skip(subject.name, check, "the revision graph is broken")
        else:
            loadable.append(subject)
    current = _current_statuses(loadable, options, statuses)
    for subject in loadable:
        new = new_revisions(subject, options, current)
        report.findings.extend(lint_unsafe(subject, new))
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
            database_checks(subject, current, databases.connect, report)
    report.findings.sort(key=sort_key)
    return report


def _current_statuses(subjects: Sequence[CheckedService], options: CheckOptions,
                      statuses: Callable[[Sequence[str]], list[TargetStatus]] | None
                      ) -> list[TargetStatus]:
    if not options.database or statuses is None or not subjects:
        return []
    return statuses([s.name for s in subjects])
