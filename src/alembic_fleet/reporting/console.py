"""Human and machine output. Rich tables and a live progress bar on a terminal, plain
lines when piped, one JSON object with ``--json``. Every string passes through
:func:`alembic_fleet.redact.scrub` on its way out.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from alembic_fleet.databases import display
from alembic_fleet.execution.events import Event, RunStarted, TargetFinished, TargetStarted
from alembic_fleet.model.findings import Finding
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.status import (
    Outcome,
    TargetResult,
    TargetState,
    TargetStatus,
)
from alembic_fleet.redact import scrub
from alembic_fleet.reporting import payloads

if TYPE_CHECKING:  # commands imports heavy modules; the reporter only needs the type
    from alembic_fleet.check.gate import CheckReport
    from alembic_fleet.devloop import UpResult
    from alembic_fleet.inventory import Inventory
    from alembic_fleet.model.outcome import RunOutcome
    from alembic_fleet.model.plan import Plan
    from alembic_fleet.tenants import AddResult, RemoveResult, TenantRow

_STATE_STYLE = {
    TargetState.AT_HEAD: "green",
    TargetState.BEHIND: "yellow",
    TargetState.MISSING: "yellow",
    TargetState.AHEAD: "magenta",
    TargetState.FAILED: "red",
    TargetState.ORPHAN: "cyan",
}
_OUTCOME_STYLE = {Outcome.MIGRATED: "green", Outcome.SKIPPED: "dim", Outcome.FAILED: "red"}


def _relative(path: str | None) -> str:
    """``path`` relative to the working directory when it is below it."""
    if not path:
        return ""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def _annotation(item: Finding) -> str:
    """A GitHub Actions workflow command: shows the finding on the pull request's diff."""
    level = "notice" if item.accepted else item.effective_severity.value
    parts = [f"file={_relative(item.file)}"] if item.file else []
    if item.line:
        parts.append(f"line={item.line}")
    parts.append(f"title={item.code} {item.rule.name} ({item.service})")
    body = item.message
    if item.statement:
        body += f"\n{item.statement}"
    body += "".join(f"\n{d}" for d in item.details)
    body += f"\naccepted: {item.accepted}" if item.accepted else f"\nhint: {item.rule.hint}"

    def escape_property(text: str) -> str:
        return (text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
                .replace(":", "%3A").replace(",", "%2C"))

    data = body.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{level} " + ",".join(
        k + "=" + escape_property(v) for k, v in (p.split("=", 1) for p in parts)) + f"::{data}"


def _revs(revs: Sequence[str]) -> str:
    return ",".join(revs) if revs else "-"


class Reporter:
    """Writes one command's output in the mode the user asked for."""

    MAX_TABLE_ROWS = 50
    """Above this many migrated targets the terminal gets the summary only (--json has all)."""

    def __init__(self, *, json_mode: bool = False, out: Any = None, err: Any = None) -> None:
        self.json_mode = json_mode
        self.out = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=err or sys.stderr, highlight=False, soft_wrap=True)
        self.rich = self.out.is_terminal and not json_mode
        self._progress: Progress | None = None
        self._task: Any = None
        self._failures = 0

    # -- low level -------------------------------------------------------------------------
    def line(self, text: str = "", *, style: str | None = None) -> None:
        """A plain line on stdout (markup-free; secrets scrubbed)."""
        self.out.print(escape(scrub(text)), style=style if self.rich else None)

    def note(self, text: str) -> None:
        """A remark for people on stderr (never in the way of JSON or piped data)."""
        if not self.json_mode:
            self.err.print(escape(scrub(text)), style="dim" if self.err.is_terminal else None)

    def json(self, payload: dict[str, Any]) -> None:
        """One JSON object: indented for a person at a terminal, compact for programs."""
        indent = 2 if self.out.is_terminal else None
        self.out.file.write(scrub(json.dumps(payload, indent=indent)) + "\n")
        self.out.file.flush()

    def _table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]],
               styles: Sequence[str | None] | None = None) -> None:
        if self.rich:
            table = Table(*headers, header_style="bold")
            for index, row in enumerate(rows):
                style = styles[index] if styles else None
                table.add_row(*(escape(scrub(str(c))) for c in row), style=style)
            self.out.print(table)
            return
        widths = [max([len(h), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(headers)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        self.line(fmt.format(*headers).rstrip())
        for row in rows:
            self.line(fmt.format(*(str(c) for c in row)).rstrip())

    # -- status ----------------------------------------------------------------------------
    def status(self, inventory: Inventory) -> None:
        self.statuses(inventory.everything)
        for reason in inventory.unreachable.values():
            self.note(f"warning: {reason}; its targets are shown as failed")

    def statuses(self, statuses: Sequence[TargetStatus]) -> None:
        if self.json_mode:
            self.json(payloads.status_payload(statuses))
            return
        rows = [
            (s.target.service, s.target.tenant or "-", s.target.schema, _revs(s.current),
             _revs(s.head), s.pending, s.state.value)
            for s in statuses
        ]
        self._table(["service", "tenant", "schema", "current", "head", "pending", "state"],
                    rows, [_STATE_STYLE[s.state] for s in statuses])
        payload = payloads.status_payload(statuses)
        if len(payload["databases"]) > 1:
            for name, counts in payload["databases"].items():
                self.line(f"{name}: {self._summary_text(counts)}")
        self.line(self._summary_text(payload["summary"]))

    @staticmethod
    def _summary_text(summary: dict[str, int]) -> str:
        parts = [f"{summary['targets']} target(s)"]
        parts += [f"{summary[k]} {k.replace('_', ' ')}" for k in
                  ("at_head", "behind", "missing", "ahead", "failed", "orphan")
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
             _revs(s.status.current), _revs(s.status.head),
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
                f"{_revs(result.from_revs)} -> {_revs(result.to_revs)}\n"
            )
            self.out.file.write(scrub(result.sql).rstrip() + "\n\n")
        self.out.file.flush()

    def event(self, event: Event) -> None:
        """Progress while migrating: a live bar on a terminal, a line per target otherwise."""
        if isinstance(event, RunStarted):
            if self.rich and event.to_migrate:
                self._progress = Progress(
                    TextColumn("[bold]migrating"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]}"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=self.err,
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
            elif not self.json_mode and not self.rich:  # piped: one line per target
                self.line(self._result_line(result))

    @staticmethod
    def _result_line(result: TargetResult) -> str:
        text = (f"{result.outcome.value:<8} {result.target.label}  "
                f"{_revs(result.from_revs)} -> {_revs(result.to_revs)}")
        if result.outcome is Outcome.MIGRATED:
            text += f"  ({result.seconds:.2f}s)"
        if result.error:
            text += f"  error: {result.error}"
        return text

    def migrate(self, outcome: RunOutcome) -> None:
        self._migrate(outcome.results, outcome.before, interrupted=outcome.end != "completed")
        for warning in outcome.warnings:
            self.note(f"warning: {warning}")

    def _migrate(self, results: Sequence[TargetResult], before: Sequence[TargetStatus], *,
                 interrupted: bool = False) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.json_mode:
            payload = payloads.migrate_payload(results, before)
            if interrupted:
                payload["interrupted"] = True
            self.json(payload)
            return
        if interrupted:
            self.err.print("interrupted: the targets in flight were rolled back",
                           style="bold red" if self.err.is_terminal else None)
        migrated = [r for r in results if r.outcome is Outcome.MIGRATED]
        failed = [r for r in results if r.outcome is Outcome.FAILED]
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        if migrated and self.rich and len(migrated) <= self.MAX_TABLE_ROWS:
            self._table(["service", "tenant", "schema", "from", "to", "seconds"],
                        [(r.target.service, r.target.tenant or "-", r.target.schema,
                          _revs(r.from_revs), _revs(r.to_revs), f"{r.seconds:.2f}")
                         for r in migrated])
        for result in failed:
            tenant = f" (tenant {result.target.tenant})" if result.target.tenant else ""
            self.line(f"FAILED {result.target.label}{tenant}: {result.error}", style="red")
            if result.hint:
                self.line(f"  hint: {result.hint}")
        if not migrated and not failed:
            self.line(f"nothing to do: all {len(skipped)} target(s) skipped "
                      "(already at the wanted revision)")
            return
        self.line(f"{len(results)} target(s): {len(migrated)} migrated, {len(skipped)} skipped, "
                  f"{len(failed)} failed", style="red" if failed else "green")
        if failed:
            self.line("fix the error above and run 'fleet migrate' again: only failed and "
                      "pending targets run")

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def up(self, result: UpResult, *, skipped: bool, exports: bool = True) -> None:
        """``fleet up``: remarks on stderr, ``export NAME=URL`` lines on stdout (for eval).

        Passwords are masked like everywhere else: a URL with a password came from the
        environment, where the variable is already set.
        """
        self.stop_progress()
        outcome = result.outcome
        if self.json_mode:
            self.json({
                "embedded": result.embedded,
                "migrations": "skipped" if skipped else "up_to_date" if outcome is None
                else payloads.migrate_payload(outcome.results, outcome.before),
                "exports": result.exports,
            })
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
                self.err.print(escape(scrub(f"FAILED {item.target.label}: {item.error}")))
        if exports:
            for name, url in result.exports.items():
                self.line(f"export {name}={shlex.quote(url)}")

    def tenants(self, rows: Sequence[TenantRow]) -> None:
        if self.json_mode:
            self.json({"tenants": [
                {"tenant": r.tenant, "presence": r.presence,
                 **payloads.status_payload([r.status])["targets"][0]} for r in rows]})
            return
        self._table(["tenant", "service", "schema", "database", "presence", "state", "current"],
                    [(r.tenant, r.status.target.service, r.status.target.schema,
                      display(r.status.target.database), r.presence, r.status.state.value,
                      _revs(r.status.current)) for r in rows],
                    ["yellow" if r.presence != "present" else None for r in rows])
        configured = sorted({r.tenant for r in rows if r.presence != "orphan"})
        orphans = sorted({r.tenant for r in rows if r.presence == "orphan"})
        self.line(f"{len(configured)} tenant(s) configured"
                  + (f", orphan schemas of: {', '.join(orphans)}" if orphans else ""))

    def tenants_added(self, result: AddResult) -> None:
        self.stop_progress()
        outcome = result.outcome
        if self.json_mode:
            self.json({"recorded": result.recorded, "warnings": result.warnings,
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
            self.line(f"{name}: no schema to drop")

    def downgrade(self, result: TargetResult) -> None:
        if self.json_mode:
            self.json(payloads.results_payload([result]))
            return
        if result.outcome is Outcome.FAILED:
            self.line(f"FAILED {result.target.label}: {result.error}", style="red")
            return
        self.line(f"downgraded {result.target.label}: {_revs(result.from_revs)} -> "
                  f"{_revs(result.to_revs)}", style="green")

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
                      _revs(r["from_revisions"]), _revs(r["to_revisions"]),
                      f"{r['seconds']:.2f}", r["outcome"], r["attempts"], r["error"] or "")
                     for r in rows])

    # -- scripts ---------------------------------------------------------------------------
    def history(self, service: str, graph: RevisionGraph) -> None:
        if self.json_mode:
            self.json(payloads.history_payload(service, graph))
            return
        rows = [(r.id, _revs(r.down) if r.down else "<base>", "head" if r.id in graph.heads
                 else "", r.message) for r in graph.ordered]
        self._table(["revision", "down_revision", "", "message"], rows)

    def heads(self, heads: dict[str, tuple[str, ...]]) -> None:
        if self.json_mode:
            self.json({"heads": {k: list(v) for k, v in heads.items()}})
            return
        self._table(["service", "heads"], [(k, _revs(v)) for k, v in heads.items()])

    # -- check ---------------------------------------------------------------------------
    def check(self, report: CheckReport, *, output_format: str = "table") -> None:
        """Findings as a table (people), one JSON object, or GitHub workflow annotations."""
        if self.json_mode or output_format == "json":
            self.json(payloads.check_payload(report))
            return
        if output_format == "github":
            for item in report.findings:
                self.out.file.write(scrub(_annotation(item)) + "\n")
            self.out.file.flush()
        elif report.findings:
            rows = []
            styles = []
            for item in report.findings:
                where = _relative(item.file) + (f":{item.line}" if item.line else "")
                text = item.message
                if item.statement:
                    text += f"\n  {item.statement}"
                text += "".join(f"\n  {d}" for d in item.details)
                text += (f"\n  accepted: {item.accepted}" if item.accepted
                         else f"\n  hint: {item.rule.hint}")
                rows.append((item.code, item.rule.name, item.service,
                             where or (item.schema or ""), text))
                styles.append(None if item.accepted else
                              "red" if item.fails else "yellow")
            self._table(["code", "rule", "service", "where", "finding"], rows, styles)
        summary = payloads.check_payload(report)["summary"]
        for service, skipped in report.skipped.items():
            for reason in skipped:
                self.note(f"{service}: skipped {reason}")
        checked = ", ".join(f"{s} ({len(c)} checks)" for s, c in report.checks.items())
        self.note(f"checked {checked}")
        self.line(f"{summary['errors']} errors, {summary['warnings']} warnings, "
                  f"{summary['accepted']} accepted" if report.findings else "no problems found",
                  style="bold red" if report.failed else "green")

    def revision(self, files: Sequence[str], report: CheckReport) -> None:
        if self.json_mode:
            self.json({"files": list(files), **payloads.check_payload(report)})
            return
        for path in files:
            self.line(f"created {_relative(path)}")
        if report.findings:
            self.check(report)

    # -- errors ----------------------------------------------------------------------------
    def error(self, message: str, hint: str | None, code: int) -> None:
        if self.json_mode:
            self.json(payloads.error_payload(scrub(message), scrub(hint) if hint else None, code))
            return
        self.err.print(escape(scrub(f"error: {message}")),
                       style="bold red" if self.err.is_terminal else None)
        if hint:
            self.err.print(escape(scrub(f"hint: {hint}")))

    def crash(self, error: BaseException, *, debug: bool) -> None:
        """An unexpected exception: one line, or the scrubbed traceback with --debug."""
        if debug:
            text = "".join(traceback.format_exception(error))
            self.err.file.write(scrub(text))
        self.error(f"internal error: {type(error).__name__}: {error}",
                   None if debug else "run again with --debug to see the traceback", 1)
