"""Views of findings: ``fleet check`` tables, JSON and GitHub annotations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from alembic_fleet.redact import mask_urls
from alembic_fleet.reporting import payloads
from alembic_fleet.reporting.base import (
    ReporterBase,
    github_annotation,
    relative_path,
)
from alembic_fleet.wording import counted

if TYPE_CHECKING:  # commands imports heavy modules; the reporter only needs the type
    from alembic_fleet.check.gate import CheckReport

class FindingViews(ReporterBase):
    """What ``check`` and ``revision`` print."""

    # -- check ---------------------------------------------------------------------------
    def check(self, report: CheckReport, *, output_format: str = "table") -> None:
        """Findings as a table (people), one JSON object, or GitHub workflow annotations."""
        if self.json_mode or output_format == "json":
            self.json(payloads.check_payload(report))
            return
        if output_format == "github":
            for item in report.findings:
                self.out.file.write(mask_urls(github_annotation(item)) + "\n")
            self.out.file.flush()
        elif report.findings:
            rows = []
            styles = []
            for item in report.findings:
                where = relative_path(item.file) + (f":{item.line}" if item.line else "")
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
        self._scope(report)
        checked = ", ".join(f"{s} ({counted(len(c), 'check')})"
                            for s, c in report.checks.items())
        self.note(f"checked {checked}")
        self.line(f"{counted(summary['errors'], 'error')}, "
                  f"{counted(summary['warnings'], 'warning')}, "
                  f"{summary['accepted']} accepted" if report.findings else "no problems found",
                  style="bold red" if report.failed else "green")

    def _scope(self, report: CheckReport) -> None:
        """Which revisions were linted one by one: one line per base, each note once."""
        for note in report.notes:
            self.note(f"note: {note}; every revision is linted, as with --all")
        groups: dict[tuple, list[str]] = {}
        for service, linted in report.scope.items():
            scope = linted.scope
            groups.setdefault((scope.mode, scope.base, scope.merge_base), []).append(service)
        for (mode, base, merge_base), services in groups.items():
            count = sum(len(report.scope[s].revisions) for s in services)
            total = sum(report.scope[s].total for s in services)
            prefix = f"{', '.join(services)}: " if len(groups) > 1 else ""
            some = counted(count, "revision")
            if mode == "all":
                text = f"checking all {counted(total, 'revision')}"
            elif mode == "branch":
                text = (f"checking {some} new since {base} (merge-base {merge_base[:7]}); "
                        f"--all checks all {total}")
            elif mode == "since":
                text = f"checking {some} added since {base}; --all checks all {total}"
            else:
                text = (f"checking {some} not applied to any target yet; "
                        f"--all checks all {total}")
            self.note(prefix + text)
        for service, linted in report.scope.items():
            if linted.unrendered:
                self.note(f"{service}: upgrade() of {', '.join(linted.unrendered)} reads the "
                          "database; its SQL after that read cannot be rendered offline and "
                          "was not checked")

    def revision(self, files: Sequence[str], report: CheckReport) -> None:
        if self.json_mode:
            self.json({"files": list(files), **payloads.check_payload(report)})
            return
        for path in files:
            self.line(f"created {relative_path(path)}")
        if report.findings:
            self.check(report)
