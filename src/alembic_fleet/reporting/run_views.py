"""Views of runs: status, plans, SQL, progress, migrate results, the dev loop, downgrade."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from alembic_fleet.execution.events import Event, RunStarted, TargetFinished, TargetStarted
from alembic_fleet.model.outcome import STOPPED_BY_BUDGET
from alembic_fleet.model.status import (
    Outcome,
    TargetResult,
    TargetStatus,
)
from alembic_fleet.redact import display, mask_urls, scrub
from alembic_fleet.reporting import payloads
from alembic_fleet.reporting.base import (
    STATE_STYLE,
    ReporterBase,
    revs_text,
)

if TYPE_CHECKING:  # commands imports heavy modules; the reporter only needs the type
    from alembic_fleet.devloop import UpResult
    from alembic_fleet.inventory import Inventory
    from alembic_fleet.model.outcome import RunOutcome
    from alembic_fleet.model.plan import Plan

class RunViews(ReporterBase):
    """What ``status``, ``migrate``, ``up`` and ``downgrade`` print."""

    # -- status ----------------------------------------------------------------------------
    def status(self, inventory: Inventory) -> None:
        if self.json_mode:
            payload = payloads.status_payload(inventory.everything)
            told = [*inventory.unreachable.values(), *inventory.warnings]
            if told:
                payload["warnings"] = told
            if inventory.unloadable:
                payload["errors"] = list(inventory.unloadable.values())
            self.json(payload)
            return
        self.statuses(inventory.everything)
        for problem in inventory.unloadable.values():
            self.err.text(scrub(f"error: {problem}"),
                          style="bold red" if self.err.is_terminal else None)
        for reason in inventory.unreachable.values():
            self.note(f"warning: {reason}; its targets are shown as unreachable")
        for warning in inventory.warnings:
            self.note(f"warning: {warning}")

    def statuses(self, statuses: Sequence[TargetStatus]) -> None:
        if self.json_mode:
            self.json(payloads.status_payload(statuses))
            return
        rows = [
            (s.target.service, s.target.tenant or "-", s.target.schema, revs_text(s.current),
             revs_text(s.head), s.pending, s.state.value)
            for s in statuses
        ]
        self._table(["service", "tenant", "schema", "current", "head", "pending", "state"],
                    rows, [STATE_STYLE[s.state] for s in statuses])
        payload = payloads.status_payload(statuses)
        if len(payload["databases"]) > 1:
            for name, counts in payload["databases"].items():
                self.line(f"{name}: {self._summary_text(counts)}")
        self.line(self._summary_text(payload["summary"]))

    def revision_gate(self, gates: dict[str, str], short: Sequence[TargetStatus]) -> None:
        """``fleet wait --revision``: ready, or the targets still short of their revision."""
        if self.json_mode:
            self.json(payloads.gate_payload(gates, short))
            return
        wanted = ", ".join(f"{service} at {revision}" for service, revision in gates.items())
        if not short:
            self.line(f"every target is there: {wanted} or later")
            return
        self._table(["service", "tenant", "schema", "current", "state"],
                    [(s.target.service, s.target.tenant or "-", s.target.schema,
                      revs_text(s.current), s.state.value) for s in short],
                    [STATE_STYLE[s.state] for s in short])
        self.line(f"{len(short)} target(s) not yet at {wanted}")

    @staticmethod
    def _summary_text(summary: dict[str, int]) -> str:
        parts = [f"{summary['targets']} target(s)"]
        parts += [f"{summary[k]} {k.replace('_', ' ')}" for k in
                  ("at_head", "behind", "missing", "ahead", "failed", "unreachable",
                   "orphan")
                  if summary.get(k)]
        return ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]

    # -- migrate ---------------------------------------------------------------------------
    def plan(self, plan: Plan) -> None:
        steps = plan.steps
        if self.json_mode:
            self.json(payloads.plan_payload(steps))
            return
        rows = [
            (s.target.service, s.target.tenant or "-", s.target.schema,
             revs_text(s.status.current), revs_text(s.status.head),
             "upgrade" if s.upgrade else "skip", s.reason)
            for s in steps
        ]
        self._table(["service", "tenant", "schema", "current", "to", "action", "why"], rows,
                    ["yellow" if s.upgrade else "dim" for s in steps])
        count = sum(1 for s in steps if s.upgrade)
        self.line(f"dry run: {count} of {len(steps)} target(s) would be migrated; "
                  "nothing was executed")

    def sql(self, results: Sequence[TargetResult]) -> None:
        if self.json_mode:
            self.json(payloads.results_payload(results))
            return
        for result in results:
            target = result.target
            if result.sql is None:
                self.out.file.write(f"-- {target.label}: {result.note}\n")
                continue
            self.out.file.write(
                f"-- {target.label} on {scrub(display(target.database))}: "
                f"{revs_text(result.from_revs)} -> {revs_text(result.to_revs)}\n"
            )
            self.out.file.write(mask_urls(result.sql).rstrip() + "\n\n")
        self.out.file.flush()

    def event(self, event: Event) -> None:
        """Progress while migrating: a live bar on a terminal, a line per target otherwise."""
        if isinstance(event, RunStarted):
            if self.rich and event.to_migrate:
                from rich.progress import (  # a terminal's only: 8 ms of every start-up
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                self._progress = Progress(
                    TextColumn("[bold]migrating"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]}"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=self.err.console,
                    transient=True,
                )
                self._task = self._progress.add_task("migrate", total=event.total,
                                                     failed="", rate="")
                self._progress.start()
            return
        if isinstance(event, TargetStarted):
            return
        if isinstance(event, TargetFinished):
            result = event.result
            if result.outcome is Outcome.FAILED:
                self._failures += 1
            if self._progress is not None:
                task = self._progress.tasks[0]
                elapsed = task.elapsed or 0.0
                done = task.completed + 1
                self._progress.update(
                    self._task, advance=1,
                    failed=f"[red]{self._failures} failed" if self._failures else "",
                    rate=f"{done / elapsed:.1f}/s" if elapsed > 0 else "",
                )
                if task.completed >= task.total:
                    self._progress.stop()
                    self._progress = None
            elif not self.json_mode and not self.rich and result.outcome is not Outcome.SKIPPED:
                self.line(self._result_line(result))  # piped: a line per target that ran

    @staticmethod
    def _result_line(result: TargetResult) -> str:
        text = (f"{result.outcome.value:<8} {result.target.label}  "
                f"{revs_text(result.from_revs)} -> {revs_text(result.to_revs)}")
        if result.outcome is Outcome.MIGRATED:
            text += f"  ({result.seconds:.2f}s{_attempts(result)})"
        if result.error:
            text += f"  error: {result.error}"
        return text

    def migrate(self, outcome: RunOutcome) -> None:
        self._migrate(outcome.results, outcome.before, end=outcome.end,
                      warnings=outcome.warnings, detail=outcome.stop_detail)
        for warning in outcome.warnings:
            self.note(f"warning: {warning}")

    def _migrate(self, results: Sequence[TargetResult], before: Sequence[TargetStatus], *,
                 end: str = "completed", warnings: Sequence[str] = (),
                 detail: str | None = None) -> None:
        stopped = end in STOPPED_BY_BUDGET
        interrupted = end != "completed" and not stopped
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.json_mode:
            payload = payloads.migrate_payload(results, before)
            if interrupted:
                payload["interrupted"] = True
                payload["end"] = end
            if stopped:
                payload["end"] = end
                payload["stopped"] = {"reason": end.removeprefix("stopped_"),
                                      "detail": detail}
            if warnings:
                payload["warnings"] = list(warnings)
            self.json(payload)
            return
        if interrupted:
            self.err.text(f"{end}: the targets in flight were rolled back",
                          style="bold red" if self.err.is_terminal else None)
        pending = [r for r in results if r.outcome is Outcome.PENDING]
        if stopped:
            self.err.text(f"the run {detail}; the targets in flight finished, "
                          f"{len(pending)} target(s) not started are pending: run "
                          "'fleet migrate' again to resume",
                          style="bold yellow" if self.err.is_terminal else None)
        migrated = [r for r in results if r.outcome is Outcome.MIGRATED]
        failed = [r for r in results if r.outcome is Outcome.FAILED]
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        if migrated and self.rich and len(migrated) <= self.MAX_TABLE_ROWS:
            self._table(["service", "tenant", "schema", "from", "to", "seconds"],
                        [(r.target.service, r.target.tenant or "-", r.target.schema,
                          revs_text(r.from_revs), revs_text(r.to_revs),
                          f"{r.seconds:.2f}{_attempts(r)}")
                         for r in migrated])
        for result in failed:
            tenant = f" (tenant {result.target.tenant})" if result.target.tenant else ""
            self.line(f"FAILED {result.target.label}{tenant}: {result.error}", style="red")
            if result.hint:
                self.line(f"  hint: {result.hint}")
        if not migrated and not failed and not pending:
            self.line(f"nothing to do: all {len(skipped)} target(s) skipped "
                      "(already at the wanted revision)")
            return
        self.line(f"{len(results)} target(s): {len(migrated)} migrated, {len(skipped)} skipped, "
                  f"{len(failed)} failed" + (f", {len(pending)} pending" if pending else ""),
                  style="red" if failed else "yellow" if pending else "green")
        if failed:
            self.line("fix the error above and run 'fleet migrate' again: only failed and "
                      "pending targets run")

    def up(self, result: UpResult, *, skipped: bool, exports: bool = True) -> None:
        """``fleet up``: remarks on stderr, ``export NAME=URL`` lines on stdout (for eval).

        The exports must work when evaluated (``eval "$(fleet up)"``), so when stdout is
        a pipe they carry the real URLs, passwords included; at a terminal, where a person
        reads them, passwords are masked and a note says how to get the real lines.
        """
        self.stop_progress()
        outcome = result.outcome
        reveal = not self.out.is_terminal
        if self.json_mode:
            payload = {
                "embedded": result.embedded,
                "migrations": "skipped" if skipped else "up_to_date" if outcome is None
                else payloads.migrate_payload(outcome.results, outcome.before),
                "exports": result.exports if reveal else {
                    k: mask_urls(v) for k, v in result.exports.items()},
            }
            text = json.dumps(payload)
            self.out.file.write((text if reveal else mask_urls(text)) + "\n")
            self.out.file.flush()
            return
        if result.embedded:
            self.note("embedded PostgreSQL is running")
        if skipped:
            self.note("migrations skipped (--skip-migrations / SKIP_MIGRATIONS)")
        elif outcome is None:
            count = len(result.plan.steps) if result.plan else 0
            self.note(f"migrations: nothing pending ({count} target(s) at head)")
        else:
            failed = [r for r in outcome.results if r.outcome is Outcome.FAILED]
            migrated = sum(1 for r in outcome.results if r.outcome is Outcome.MIGRATED)
            self.note(f"migrations: {migrated} migrated, {len(failed)} failed")
            for item in failed:
                self.err.text(scrub(f"FAILED {item.target.label}: {item.error}"))
        if not exports:
            return
        lines = [f"export {name}={shlex.quote(url)}" for name, url in result.exports.items()]
        if reveal:
            self.out.file.write("".join(line + "\n" for line in lines))
            self.out.file.flush()
            return
        for line in lines:
            self.line(line)
        if any(mask_urls(line) != line for line in lines):
            self.note("passwords masked on a terminal: eval \"$(fleet up)\" sets the real URLs")

    def downgrade(self, result: TargetResult) -> None:
        if self.json_mode:
            self.json(payloads.results_payload([result]))
            return
        if result.outcome is Outcome.FAILED:
            self.line(f"FAILED {result.target.label}: {result.error}", style="red")
            return
        if result.outcome is Outcome.SKIPPED:
            self.line(f"{result.target.label}: {result.note}")
            return
        self.line(f"downgraded {result.target.label}: {revs_text(result.from_revs)} -> "
                  f"{revs_text(result.to_revs)}", style="green")


def _attempts(result: TargetResult) -> str:
    """``, after 3 attempts`` for a target that needed more than one (lock timeouts, a lost
    connection), else nothing."""
    return f", after {result.attempts} attempts" if result.attempts > 1 else ""
