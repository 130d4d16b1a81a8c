"""What a worker writes to the ledger for one target, inside that target's transaction.

Django records a migration in the same schema-editor transaction that applies it; so do
we. The Alembic gateway calls a :class:`TargetLedger` while the target's transaction is
open: each applied (or downgraded) revision as Alembic applies it, and the target's run row
just before the commit. The revisions' checksum rows are gathered and written in one
statement with the target's row (one round trip per revision was a fifth of a target's time
on a long history), or with whatever commits the transaction earlier (an
``autocommit_block()``; see :meth:`TargetLedger.on_commit`). The rows therefore commit or
roll back with the revisions they record, whatever dies when: a committed migration has its
rows, a rolled-back one none.

Paths that cannot write inside the transaction (a legacy ``env.py`` run as a subprocess,
``transaction_per_migration``) write the target row right after the commit: a worker killed
in that instant leaves the revisions' rows without the target's row, which the parent
settles from the version table (see :mod:`alembic_fleet.execution.pool`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from alembic_fleet.catalog.versions import read_in_transaction
from alembic_fleet.ledger.checksums import checksum
from alembic_fleet.ledger.store import Ledger, TargetRecord
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.status import RevisionTiming
from alembic_fleet.model.targets import Target
from alembic_fleet.redact import scrub


@dataclass
class RunLedger:
    """One run's ledger as a worker sees it: where to write, under which run id."""

    ledger: Ledger
    run_id: str
    read_before: float = 0.0
    """How many seconds before its run row began the run read its tenant list (plus a
    margin): a removal recorded since then is one the run's plan may not have seen."""
    _checksums: dict[str, str] = field(default_factory=dict)

    def checksum(self, path: str) -> str:
        if path not in self._checksums:
            self._checksums[path] = checksum(path)
        return self._checksums[path]

    def for_target(self, target: Target, version_table: str, graph: RevisionGraph,
                   from_revs: tuple[str, ...], started: float, attempts: int,
                   outcome: str = "migrated", heads: tuple[str, ...] | None = None
                   ) -> TargetLedger:
        return TargetLedger(self, target, version_table, graph, from_revs, started, attempts,
                            outcome, heads)

    def failed(self, connection: Any, target: Target, from_revs: tuple[str, ...],
               seconds: float, error: str, attempts: int,
               reached: tuple[str, ...] | None = None) -> None:
        """A failed target's row, in its own transaction after the rollback; ``reached``:
        where the target stands when revisions committed before the failure."""
        record = TargetRecord(target.service, target.tenant, target.schema, from_revs,
                              from_revs if reached is None else reached, seconds, "failed",
                              scrub(error), max(1, attempts))
        with connection.begin():
            self.ledger.write_target(connection, self.run_id, record)


@dataclass
class TargetLedger:
    """The gateway's listener for one target's migration (see the module docstring)."""

    run: RunLedger
    target: Target
    version_table: str
    graph: RevisionGraph
    from_revs: tuple[str, ...]
    started: float
    attempts: int
    outcome: str = "migrated"
    heads: tuple[str, ...] | None = None
    """Where the target is going: a row written short of it, when each revision commits on
    its own, says ``running`` (a runner killed between two revisions did not migrate it)."""
    wrote_target: bool = False
    versions: tuple[str, ...] | None = None
    """The version table as the transaction that wrote the target's row left it."""
    each_revision: bool = False
    """Set by the gateway when every revision commits on its own: the target's row is then
    written in each revision's transaction, so a kill between two leaves it true."""
    timings: list[RevisionTiming] = field(default_factory=list)
    """Each revision applied, timed (for metrics and traces; see :meth:`_time`)."""
    _pending: dict[str, str] = field(default_factory=dict)
    """Revisions applied in this transaction whose checksum rows are not written yet."""
    _mark: float = field(default_factory=time.time)
    _starts: dict[str, float] = field(default_factory=dict)
    _timing: bool = True

    def revision_started(self, revision: str) -> None:
        """Told by the replayer before each revision's statements (it reports a stretch of
        revisions as applied only once the whole stretch ran)."""
        self._starts[revision] = time.time()

    def _time(self, revision: str) -> None:
        """Time an applied revision: from its own start when the replayer told it, else
        from the previous revision's end (Alembic calls :meth:`revision_applied` right
        after each revision), to the next revision's start, else now."""
        if not self._timing:
            return
        now = time.time()
        start = self._starts.get(revision, self._mark)
        end = min((t for t in self._starts.values() if t > start), default=now)
        self.timings.append(RevisionTiming(revision, start, max(0.0, end - start)))
        self._mark = now

    def revision_applied(self, connection: Any, revision: str) -> None:
        self._time(revision)
        known = self.graph.revisions.get(revision)
        if known is not None:
            self._pending[revision] = self.run.checksum(known.path)
        if self.each_revision:
            self.before_commit(connection)

    def revision_unapplied(self, connection: Any, revision: str) -> None:
        self._flush(connection)  # in order: a revision applied, then removed, is gone
        self.run.ledger.forget_applied(connection, self.target.service, self.target.schema,
                                       revision)

    def on_commit(self, connection: Any) -> None:
        """Registered for the connection's ``commit`` event (SQLAlchemy calls it before the
        COMMIT is sent): whatever commits the transaction before :meth:`before_commit`
        (an ``autocommit_block()``, which commits the revisions before it, or a revision's
        own ``commit()``) commits the checksum rows of the revisions it commits too."""
        self._flush(connection)

    def on_rollback(self, connection: Any) -> None:
        """Registered for the connection's ``rollback`` event: the revisions gathered so far
        were rolled back with their transaction, and their rows must not ride on the next
        commit of the connection."""
        self._pending.clear()

    def _flush(self, connection: Any) -> None:
        """Write the gathered checksum rows, in the caller's transaction."""
        if self._pending:
            self.run.ledger.write_applied_many(connection, self.run.run_id,
                                               self.target.service, self.target.schema,
                                               list(self._pending.items()))
            self._pending.clear()

    def before_commit(self, connection: Any) -> None:
        """The revisions' checksum rows and the target's row, with the revisions its
        version table holds now."""
        self._flush(connection)
        now = read_in_transaction(connection, self.target.schema, self.version_table)
        self.versions = now
        outcome = self.outcome
        if self.each_revision and self.heads is not None and sorted(now) != sorted(self.heads):
            outcome = "running"
        record = TargetRecord(self.target.service, self.target.tenant, self.target.schema,
                              self.from_revs, now, time.perf_counter() - self.started,
                              outcome, None, max(1, self.attempts))
        self.run.ledger.write_target(connection, self.run.run_id, record)
        self.wrote_target = True

    def after_commit(self, connection: Any, applied_between: bool) -> None:
        """For paths that could not write inside the transaction: the rows right after.

        ``applied_between``: also write the checksum rows of every revision between the
        old and the new version (a legacy subprocess could not report them one by one).
        """
        if self.wrote_target:
            return
        self._timing = False  # all at once, after the fact: no revision's own time
        with connection.begin():
            if applied_between:
                now = read_in_transaction(connection, self.target.schema, self.version_table)
                new = self.graph.ancestors(now) - self.graph.ancestors(self.from_revs)
                for revision in sorted(new):
                    self.revision_applied(connection, revision)
            self.before_commit(connection)
