"""Revision files against the checksums the ledger recorded when they were applied.

Alembic stores only ``version_num``: an applied revision edited afterwards goes unnoticed,
and the targets migrated before and after the edit end up different. The ledger keeps the
SHA-256 of every revision file as it was applied; this module compares them with the files.
``fleet migrate`` refuses to run on a changed revision (as Flyway's ``validate`` does) and
``fleet check --database`` reports them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic_fleet.check.accept import without_acceptances
from alembic_fleet.ledger.store import Ledger
from alembic_fleet.model.revisions import RevisionGraph


def checksum(path: str) -> str:
    """The SHA-256 of a revision file, as the ledger records it: without its
    ``# fleet: allow`` comments (see :func:`~alembic_fleet.check.accept.without_acceptances`;
    the same bytes, so the same digest, for a file that has none)."""
    return hashlib.sha256(without_acceptances(Path(path).read_bytes())).hexdigest()


def matches(path: str, recorded: str) -> bool:
    """Whether the file is still the one recorded: by :func:`checksum`, or by the digest of
    all its bytes, which rows written before comments were set aside hold."""
    return recorded in (checksum(path), hashlib.sha256(Path(path).read_bytes()).hexdigest())


@dataclass(frozen=True)
class AppliedDrift:
    """An applied revision whose file changed since (``changed``) or is gone (``unknown``)."""

    service: str
    revision: str
    kind: str
    schemas: int
    example_schema: str
    last_applied: datetime
    recorded: str
    actual: str | None = None
    path: str | None = None


def applied_drift(connection: Any, ledger_schema: str, service: str, graph: RevisionGraph
                  ) -> list[AppliedDrift]:
    """Every applied revision of ``service`` whose file no longer matches its record.

    The distinct (revision, checksum) pairs recorded come first (a walk of an index: the
    cost does not grow with the number of schemas); rows are counted only for the pairs
    that do not match their file, which a run then refuses."""
    ledger = Ledger(ledger_schema)
    files: dict[str, str] = {}

    def drifted(revision: str, recorded: str) -> bool:
        known = graph.revisions.get(revision)
        if known is None:
            return True
        if known.path not in files:
            files[known.path] = checksum(known.path)
        return files[known.path] != recorded and not matches(known.path, recorded)

    pairs = ledger.applied_pairs(connection, service)
    if pairs is None:  # an older ledger, without the index: every row, grouped
        records = ledger.applied_checksums(connection, [service])
    else:
        suspect = [(revision, recorded) for revision, recorded in pairs
                   if drifted(revision, recorded)]
        records = ledger.applied_checksums(connection, [service], suspect) if suspect else []
    found = []
    for record in records:
        if not drifted(record.revision, record.checksum):
            continue
        known = graph.revisions.get(record.revision)
        if known is None:
            found.append(AppliedDrift(service, record.revision, "unknown", record.schemas,
                                      record.example_schema, record.last_applied,
                                      record.checksum))
            continue
        found.append(AppliedDrift(service, record.revision, "changed", record.schemas,
                                  record.example_schema, record.last_applied,
                                  record.checksum, files[known.path], known.path))
    return found
