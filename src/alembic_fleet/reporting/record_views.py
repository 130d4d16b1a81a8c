"""Views of records: tenants, the ledger's runs, revision histories and heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.redact import display
from alembic_fleet.reporting import payloads
from alembic_fleet.reporting.base import (
    ReporterBase,
    revs_text,
)

if TYPE_CHECKING:  # commands imports heavy modules; the reporter only needs the type
    from alembic_fleet.tenants import AddResult, RemoveResult, TenantRow

class RecordViews(ReporterBase):
    """What ``tenants``, ``log``, ``history`` and ``heads`` print."""

    def tenants(self, rows: Sequence[TenantRow]) -> None:
        if self.json_mode:
            self.json({"tenants": [
                {"tenant": r.tenant, "presence": r.presence,
                 **payloads.status_payload([r.status])["targets"][0]} for r in rows]})
            return
        self._table(["tenant", "service", "schema", "database", "presence", "state", "current"],
                    [(r.tenant, r.status.target.service, r.status.target.schema,
                      display(r.status.target.database), r.presence, r.status.state.value,
                      revs_text(r.status.current)) for r in rows],
                    ["yellow" if r.presence != "present" else None for r in rows])
        configured = sorted({r.tenant for r in rows if r.presence != "orphan"})
        orphans = sorted({r.tenant for r in rows if r.presence == "orphan"})
        self.line(f"{len(configured)} tenant(s) configured"
                  + (f", orphan schemas of: {', '.join(orphans)}" if orphans else ""))

    def tenants_added(self, result: AddResult) -> None:
        self.stop_progress()
        outcome = result.outcome
        if self.json_mode:
            told = [*result.warnings, *(outcome.warnings if outcome else ())]
            self.json({"recorded": result.recorded, "warnings": told,
                       "migration": payloads.results_payload(outcome.results) if outcome
                       else None})
            return
        for name, where in result.recorded.items():
            told = where if where == "already configured" else f"recorded in {where}"
            self.line(f"{name}: {told}")
        for warning in result.warnings:
            self.note(f"warning: {warning}")
        if outcome is not None:
            self.migrate(outcome)

    def tenants_removed(self, name: str, result: RemoveResult) -> None:
        for warning in result.warnings:
            self.note(f"warning: {warning}")
        if self.json_mode:
            self.json({"tenant": name, "dropped": result.dropped, "dumps": result.dumps,
                       "forgotten": result.forgotten or None})
            return
        for path in result.dumps:
            self.line(f"dumped to {path}")
        for item in result.dropped:
            self.line(f"dropped {item}")
        if result.forgotten:
            self.line(f"{name}: removed from {result.forgotten}")
        if not result.dropped:
            self.line(f"{name}: no schema to drop" if result.forgotten else
                      f"{name}: not a configured tenant, no schema of it: nothing to remove")

    # -- ledger ----------------------------------------------------------------------------
    def runs(self, runs: Sequence[tuple[str, Any]]) -> None:
        if self.json_mode:
            self.json({"runs": [payloads.run_payload(db, r) for db, r in runs]})
            return
        if not runs:
            self.line("no runs recorded yet (runs that migrate something are recorded)")
            return
        rows = []
        for database, run in runs:
            outcome = run.outcome if run.finished_at else "interrupted"
            rows.append((run.run_id[:8], f"{run.started_at:%Y-%m-%d %H:%M:%S}",
                         f"{run.user}@{run.host}", run.migrated, run.failed, outcome,
                         run.command, database))
        self._table(["run", "started", "by", "migrated", "failed", "outcome", "command",
                     "database"], rows,
                    ["red" if r[5] != "succeeded" else None for r in rows])

    def run_details(self, run_id: str, rows: Sequence[dict[str, Any]]) -> None:
        if self.json_mode:
            self.json({"run": run_id, "targets": [payloads.jsonable(r) for r in rows]})
            return
        if not rows:
            self.line(f"no run {run_id!r} in the ledger")
            return
        self._table(["service", "tenant", "schema", "from", "to", "seconds", "outcome",
                     "attempts", "error"],
                    [(r["service"], r["tenant"] or "-", r["schema_name"],
                      revs_text(r["from_revisions"]), revs_text(r["to_revisions"]),
                      f"{r['seconds']:.2f}", r["outcome"], r["attempts"], r["error"] or "")
                     for r in rows])

    # -- scripts ---------------------------------------------------------------------------
    def history(self, service: str, graph: RevisionGraph) -> None:
        if self.json_mode:
            self.json(payloads.history_payload(service, graph))
            return
        rows = [(r.id, revs_text(r.down) if r.down else "<base>", "head" if r.id in graph.heads
                 else "", r.message) for r in graph.ordered]
        self._table(["revision", "down_revision", "", "message"], rows)

    def heads(self, heads: dict[str, tuple[str, ...]]) -> None:
        if self.json_mode:
            self.json({"heads": {k: list(v) for k, v in heads.items()}})
            return
        self._table(["service", "heads"], [(k, revs_text(v)) for k, v in heads.items()])
