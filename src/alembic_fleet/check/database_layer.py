"""Layer 3 of ``fleet check`` (``--database``): the real databases against the files.

Two checks per service, read-only for the targets: the checksum of each applied revision
against its file (FC401, or FC403 when no file has it), and every tenant schema against a
reference schema built from the migrations at that tenant's revision (FC402). Fingerprints
are compared first, for all schemas in one query; only the schemas that differ are
described line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from alembic_fleet.alembic_bridge import runner
from alembic_fleet.catalog.fingerprints import describe, difference, fingerprints
from alembic_fleet.check.report import CheckedService, CheckReport
from alembic_fleet.check.scratch_layer import drop_schema, scratch_schema
from alembic_fleet.ledger.checksums import applied_drift
from alembic_fleet.model.findings import Finding, finding
from alembic_fleet.model.status import TargetState, TargetStatus
from alembic_fleet.model.targets import Database


def database_checks(subject: CheckedService, current: Sequence[TargetStatus],
                    connect: Callable[[Any], Connection], report: CheckReport,
                    ledger_schema: str | None = "fleet") -> None:
    """Applied checksums (in ``ledger_schema``; None: no ledger, none to compare), then
    schema drift, on every database holding the service's targets: the service's own,
    and that of each tenant placed on its own server (each schema is compared on its own
    database, with a reference built there)."""
    mine = [s for s in current if s.target.service == subject.name
            and s.state is not TargetState.UNREACHABLE]
    groups: dict[str, tuple[Database, list[TargetStatus]]] = {
        subject.service.database.key: (subject.service.database, [])}
    for status in mine:
        groups.setdefault(status.target.database.key, (status.target.database, []))[1].append(
            status)
    for database, statuses in groups.values():
        with connect(database) as connection:
            if ledger_schema is not None:
                report.findings.extend(changed_revisions(subject, connection, ledger_schema))
            if not subject.scripts.uses_helper:
                continue
            report.findings.extend(_tenant_drift(subject, connection, statuses))
    report.ran(subject.name, f"applied checksums ({len(groups)} database(s))")
    if not subject.scripts.uses_helper:
        report.skip(subject.name, "schema drift",
                    "env.py does not use alembic_fleet.env (legacy mode)")
        return
    report.ran(subject.name, f"schema drift ({len(mine)} targets)")


def changed_revisions(subject: CheckedService, connection: Connection,
                      ledger_schema: str = "fleet") -> list[Finding]:
    """Applied revisions whose file changed since (FC401) or no longer exists (FC403)."""
    findings = []
    for drift in applied_drift(connection, ledger_schema, subject.name, subject.scripts.graph):
        if drift.kind == "unknown":
            findings.append(finding(
                "unknown-applied-revision", subject.name,
                f"revision {drift.revision} was applied to {drift.schemas} schema(s) "
                f"(e.g. {drift.example_schema}) but no file has it",
                revision=drift.revision, schema=drift.example_schema))
            continue
        findings.append(finding(
            "changed-applied-revision", subject.name,
            f"revision {drift.revision} changed after it was applied to "
            f"{drift.schemas} schema(s) (e.g. {drift.example_schema}, last on "
            f"{drift.last_applied:%Y-%m-%d %H:%M})",
            file=drift.path, line=1, revision=drift.revision, schema=drift.example_schema,
            details=(f"recorded sha256 {drift.recorded[:12]}…, "
                     f"file sha256 {(drift.actual or '')[:12]}…",)))
    return findings


def _tenant_drift(subject: CheckedService, connection: Connection,
                  statuses: Sequence[TargetStatus]) -> list[Finding]:
    """Each target against a reference built at its revision: fingerprints first, then the
    detailed difference only for the targets whose fingerprint differs."""
    table = subject.service.version_table
    comparable = [s for s in statuses
                  if s.state in (TargetState.AT_HEAD, TargetState.BEHIND, TargetState.FAILED)
                  and len(s.current) == 1]
    if not comparable:
        return []
    actual = fingerprints(connection, [s.target.schema for s in comparable],
                          exclude_tables=[table])
    connection.rollback()
    references: dict[str, tuple[str, frozenset[str]]] = {}
    findings = []
    for status in comparable:
        revision = status.current[0]
        if revision not in references:
            references[revision] = _reference(subject, connection, revision)
        expected, shape = references[revision]
        if actual.get(status.target.schema) == expected:
            continue
        found = describe(connection, status.target.schema, exclude_tables=[table])
        connection.rollback()
        findings.append(finding(
            "tenant-drift", subject.name,
            f"schema {status.target.schema} differs from the migrations at {revision}",
            schema=status.target.schema, tenant=status.target.tenant, revision=revision,
            details=difference(shape, found)))
    return findings


def _reference(subject: CheckedService, connection: Connection, revision: str
               ) -> tuple[str, frozenset[str]]:
    """Fingerprint and shape of a schema built from the migrations up to ``revision``.

    Built in the checked database (same server version, same extensions, so the catalog
    text compares equal) under a name of this process, and dropped right after. It cannot
    be a rolled-back transaction: ``autocommit_block()`` revisions commit on their own.
    """
    schema = scratch_schema(subject.name) + "_ref"
    table = subject.service.version_table
    drop_schema(connection, schema)
    try:
        runner.upgrade(subject.scripts, connection, schema, revision)
        fingerprint = fingerprints(connection, [schema], exclude_tables=[table])[schema]
        shape = describe(connection, schema, exclude_tables=[table])
    finally:
        drop_schema(connection, schema)
    return fingerprint, shape
