"""Write a run into the ledger of every database it touches, as results come in."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from alembic_fleet.databases import Databases, display
from alembic_fleet.exceptions import FleetError
from alembic_fleet.execution.events import Event, TargetFinished
from alembic_fleet.ledger.store import Ledger, RunInfo, TargetRecord
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.status import Outcome, Step, TargetResult
from alembic_fleet.redact import scrub

FLUSH_EVERY = 200
FLUSH_SECONDS = 2.0


class LedgerError(FleetError):
    """The ledger could not be created or written at the start of a run."""

    exit_code = 2


def checksum(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class LedgerRecorder:
    """Starts a run row per database, buffers target rows, flushes in batches."""

    databases: Databases
    ledger: Ledger
    info: RunInfo
    graphs: dict[str, RevisionGraph]
    warnings: list[str] = field(default_factory=list)
    _connections: dict[str, Any] = field(default_factory=dict)
    _ledgers: dict[str, Ledger] = field(default_factory=dict)
    _buffers: dict[str, list[TargetRecord]] = field(default_factory=dict)
    _counts: dict[str, list[int]] = field(default_factory=dict)
    _checksums: dict[str, str] = field(default_factory=dict)
    _last_flush: float = field(default_factory=time.monotonic)

    def start(self, steps: Sequence[Step]) -> None:
        """Create the ledger where needed and a run row per database with work to do."""
        for step in steps:
            if not step.upgrade or step.target.database.key in self._connections:
                continue
            database = step.target.database
            ledger = Ledger(self.ledger.schema)  # one per database: each checks its own
            try:
                connection = self.databases.connect(database)
                ledger.start_run(connection, self.info)
            except DBAPIError as exc:
                raise LedgerError(
                    f"cannot write the run ledger (schema '{self.ledger.schema}') in "
                    f"{display(database)}: {scrub(str(getattr(exc, 'orig', exc)).strip())}",
                    hint="grant CREATE on the database to this user, or set ledger = false",
                ) from None
            self._connections[database.key] = connection
            self._ledgers[database.key] = ledger
            self._buffers[database.key] = []
            self._counts[database.key] = [0, 0]

    def observe(self, event: Event) -> None:
        if not isinstance(event, TargetFinished):
            return
        result = event.result
        key = result.target.database.key
        if result.outcome is Outcome.SKIPPED or key not in self._buffers:
            return
        self._buffers[key].append(self._record(result))
        self._counts[key][0 if result.outcome is Outcome.MIGRATED else 1] += 1
        pending = sum(len(b) for b in self._buffers.values())
        if pending >= FLUSH_EVERY or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        for key, buffer in self._buffers.items():
            if not buffer:
                continue
            try:
                self._ledgers[key].record(self._connections[key], self.info.run_id, buffer)
            except Exception as exc:  # history must never break a migration
                self._warn(f"could not write the ledger: {exc}")
                self._reset(key)
            buffer.clear()

    def finish(self, outcome: str) -> None:
        self.flush()
        for key, connection in self._connections.items():
            migrated, failed = self._counts[key]
            try:
                self._ledgers[key].finish_run(connection, self.info.run_id, migrated, failed,
                                              outcome)
            except Exception as exc:
                self._warn(f"could not close the run in the ledger: {exc}")
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        self._connections.clear()

    def _record(self, result: TargetResult) -> TargetRecord:
        target = result.target
        applied: tuple[tuple[str, str], ...] = ()
        if result.outcome is Outcome.MIGRATED:
            graph = self.graphs[target.service]
            new = graph.ancestors(result.to_revs) - graph.ancestors(result.from_revs)
            applied = tuple((rev, self._checksum(graph.revisions[rev].path))
                            for rev in sorted(new))
        return TargetRecord(target.service, target.tenant, target.schema, result.from_revs,
                            result.to_revs, result.seconds, result.outcome.value,
                            scrub(result.error) if result.error else None,
                            max(1, result.attempts), applied)

    def _checksum(self, path: str) -> str:
        if path not in self._checksums:
            self._checksums[path] = checksum(path)
        return self._checksums[path]

    def _reset(self, key: str) -> None:
        with contextlib.suppress(Exception):
            self._connections[key].rollback()

    def _warn(self, message: str) -> None:
        text = scrub(message.splitlines()[0])
        if text not in self.warnings:
            self.warnings.append(text)
