"""``fleet plan``: a table for people, Markdown for a pull-request comment, one JSON object.

The Markdown is plain GitHub-flavoured Markdown (headings, tables, ``<details>`` per
service), no ANSI, and stays under GitHub's 65,536-character limit for a comment: when the
details of every service do not fit, the last ones are cut down to their summary line. Its
first line is the HTML comment ``<!-- fleet-plan -->``, which a workflow can look for to
update its comment instead of adding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alembic_fleet.redact import mask_urls
from alembic_fleet.reporting.base import ReporterBase, relative_path
from alembic_fleet.reporting.payloads import finding_payload
from alembic_fleet.wording import counted

if TYPE_CHECKING:  # the review machinery (pglast) loads only for fleet plan
    from alembic_fleet.review.locks import Effect
    from alembic_fleet.review.report import (
        CopySize,
        Estimate,
        PlannedEffect,
        PlannedRevision,
        PlanReport,
        ServicePlan,
        StartingPoint,
    )

MARKER = "<!-- fleet-plan -->"
"""The first line of the Markdown: lets a CI job find and update its own comment."""

MARKDOWN_LIMIT = 60_000
"""Characters of Markdown at most (GitHub refuses comments over 65,536)."""

STATEMENT_WIDTH = 160
"""Characters of a statement shown in a table (the JSON has every statement in full)."""


class PlanViews(ReporterBase):
    """What ``plan`` prints."""

    def review_plan(self, report: PlanReport, *, output_format: str = "text") -> None:
        if self.json_mode or output_format == "json":
            self.json(plan_review_payload(report))
            return
        if output_format == "markdown":
            self.out.file.write(mask_urls(plan_markdown(report)))
            self.out.file.flush()
            return
        self._plan_text(report)

    def _plan_text(self, report: PlanReport) -> None:
        for warning in report.warnings:
            self.note(f"warning: {warning}")
        for database, reason in report.unreachable.items():
            self.note(f"warning: {database} could not be read ({reason}); its targets are "
                      "not planned")
        if not report.services:
            self.line(_nothing(report), style="green")
            return
        for service in report.services:
            self.line(f"{service.service}: {_service_line(service)}", style="bold")
            rows = []
            styles = []
            for revision in service.revisions:
                first = True
                label = f"{revision.revision} ({revision.targets})"
                for number, statement in enumerate(revision.statements, 1):
                    analysis = statement.analysis
                    effects = statement.effects or (None,)
                    for effect in effects:
                        rows.append((
                            label if first else "", number if effect is effects[0] else "",
                            _short(analysis.sql, 70) if effect is effects[0] else "",
                            _lock_text(effect.effect) if effect else "-",
                            effect.effect.relation.display if effect else "-",
                            _work_text(effect.effect) if effect else "",
                            _copy_text(effect) if effect else ""))
                        styles.append(_style(effect.effect) if effect else None)
                        first = False
                if revision.unrendered or not revision.statements:
                    rows.append((label if first else "", "", _unrendered_text(revision)
                                 if revision.unrendered else "(no SQL)", "", "", "", ""))
                    styles.append("yellow" if revision.unrendered else "dim")
            self._table(["revision (targets)", "#", "statement", "lock", "relation", "work",
                         "largest copy"], rows, styles)
            for revision in service.revisions:
                for statement in revision.statements:
                    for note in statement.analysis.notes:
                        self.line(f"  note ({revision.revision}): {note}")
                for item in revision.findings:
                    state = f"accepted: {item.accepted}" if item.accepted else item.rule.hint
                    self.line(f"  {item.code} {item.rule.name}: {item.message} ({state})",
                              style="dim" if item.accepted else "red")
        self.line(_total_line(report), style="bold")


# --- JSON ------------------------------------------------------------------------------------


def plan_review_payload(report: PlanReport) -> dict[str, Any]:
    """``fleet plan --format json``: one object (fields in the README's ``fleet plan``)."""
    return {
        "services": [_service_payload(s) for s in report.services],
        "summary": {
            "services": len(report.services),
            "targets": report.targets,
            "revisions": sum(len(s.revisions) for s in report.services),
            "statements": sum(len(r.statements) for s in report.services for r in s.revisions),
            "rewrites": sum(s.work("rewrite") for s in report.services),
            "may_rewrite": sum(s.work("may rewrite") for s in report.services),
            "scans": sum(s.work("scan") for s in report.services),
            "unsafe": sum(1 for s in report.services for f in s.findings if not f.accepted),
            "accepted": sum(1 for s in report.services for f in s.findings if f.accepted),
            "unrendered": sum(len(s.unrendered) for s in report.services),
            "at_head": report.at_head,
            "ahead": report.ahead,
            "unreachable": report.unreachable_targets,
            "jobs": report.jobs,
            "estimate_seconds": _round(report.estimate_seconds),
            "estimate_partial": report.estimate_partial,
        },
        "unreachable": dict(report.unreachable),
        "warnings": list(report.warnings),
    }


def _service_payload(service: ServicePlan) -> dict[str, Any]:
    return {
        "service": service.service,
        "targets": service.targets,
        "starting_points": [_point_payload(p) for p in service.starting_points],
        "revisions": [_revision_payload(r) for r in service.revisions],
        "tables": [{
            **_relation_payload(t.relation), "lock": t.lock.label, "blocks": t.lock.blocks,
            "work": t.work.value if t.work else None, "revision": t.revision,
            "largest": _copy_payload(t.largest)} for t in service.tables],
        "strongest_lock": service.strongest.label if service.strongest else None,
        "estimate": _estimate_payload(service.estimate),
    }


def _point_payload(point: StartingPoint) -> dict[str, Any]:
    return {"current": list(point.current), "targets": len(point.targets),
            "tenants": [t.tenant for t in point.targets],
            "schemas": [t.schema for t in point.targets], "pending": list(point.pending)}


def _revision_payload(revision: PlannedRevision) -> dict[str, Any]:
    return {
        "revision": revision.revision,
        "message": revision.message,
        "file": revision.path,
        "targets": revision.targets,
        "rendered": revision.unrendered is None,
        "unrendered": revision.unrendered,
        "statements": [{
            "sql": s.analysis.sql,
            "kind": s.analysis.kind,
            "error": s.analysis.error,
            "notes": list(s.analysis.notes),
            "strongest_lock": s.analysis.strongest.label if s.analysis.strongest else None,
            "locks": [_effect_payload(e) for e in s.effects],
        } for s in revision.statements],
        "findings": [finding_payload(f) for f in revision.findings],
    }


def _relation_payload(relation: Any) -> dict[str, Any]:
    return {"relation": relation.name, "schema": relation.schema, "kind": relation.kind}


def _effect_payload(planned: PlannedEffect) -> dict[str, Any]:
    effect = planned.effect
    return {
        **_relation_payload(effect.relation),
        "lock": effect.lock.label if effect.lock else None,
        "blocks": effect.lock.blocks if effect.lock else None,
        "work": effect.work.value if effect.work else None,
        "why": list(effect.why),
        "created": effect.created,
        "copies": planned.copies,
        "largest": _copy_payload(planned.largest),
    }


def _copy_payload(copy: CopySize | None) -> dict[str, Any] | None:
    return None if copy is None else {"schema": copy.schema, "rows": copy.rows,
                                      "bytes": copy.bytes}


def _estimate_payload(estimate: Estimate) -> dict[str, Any]:
    return {"seconds": _round(estimate.seconds), "median_seconds_per_target":
            _round(estimate.median), "samples": estimate.samples, "jobs": estimate.jobs,
            "waves": estimate.waves}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- Markdown ---------------------------------------------------------------------------------


def plan_markdown(report: PlanReport, limit: int = MARKDOWN_LIMIT) -> str:
    """The plan as a pull-request comment."""
    head = [MARKER, "## Migration plan", ""]
    if not report.services:
        head += [_nothing(report), ""]
    else:
        head += [_total_line(report), ""]
    for warning in report.warnings:
        head.append(f"> ⚠️ {_inline(warning)}")
    for database, reason in report.unreachable.items():
        head.append(f"> ⚠️ `{_code(database)}` could not be read ({_inline(reason)}): its "
                    "targets are not in this plan")
    if report.warnings or report.unreachable:
        head.append("")
    if not report.services:
        return "\n".join(head).rstrip() + "\n"
    head += ["| service | targets | revisions | strongest lock | rewrites | scans | unsafe "
             "| estimate |", "|---|--:|--:|---|--:|--:|--:|---|"]
    for service in report.services:
        strongest = service.strongest
        head.append(
            f"| **{_inline(service.service)}** | {service.targets} | {len(service.revisions)} "
            f"| {_badge(strongest) if strongest else '—'} "
            f"| {service.work('rewrite') + service.work('may rewrite')} "
            f"| {service.work('scan')} "
            f"| {sum(1 for f in service.findings if not f.accepted)} "
            f"| {_estimate_text(service.estimate)} |")
    head.append("")
    text = "\n".join(head) + "\n"
    sections = [_service_markdown(s) for s in report.services]
    tail = ("\n<sub>Locks are PostgreSQL's table-level lock modes; each target runs its "
            "pending revisions in one transaction and holds every lock until it commits. "
            "Rows are the catalog's estimate (`reltuples`), sizes include indexes and "
            "TOAST. Generated by `fleet plan`.</sub>\n")
    shorts = [_service_summary_markdown(s) for s in report.services]
    for index, section in enumerate(sections):
        rest = sum(len(short) for short in shorts[index + 1:])
        text += shorts[index] if len(text) + len(section) + rest + len(tail) > limit \
            else section
    return text + tail


def _service_markdown(service: ServicePlan) -> str:
    lines = [f"<details>\n<summary><b>{_html(service.service)}</b>: "
             f"{_html(_service_line(service))}</summary>", ""]
    lines.append("Starting points: " + "; ".join(
        _point_text(p, markdown=True) for p in service.starting_points) + ".")
    lines.append("")
    if service.tables:
        lines += ["**Locks each target holds until it commits**", "",
                  "| relation | lock | blocks | work | largest copy | strongest in |",
                  "|---|---|---|---|---|---|"]
        for table in service.tables:
            lines.append(
                f"| `{_code(table.relation.display)}` | {_badge(table.lock)} "
                f"| {table.lock.blocks} | {table.work.value if table.work else '—'} "
                f"| {_copy_markdown(table.largest, None)} | `{table.revision}` |")
        lines.append("")
    for revision in service.revisions:
        lines += _revision_markdown(revision)
    lines += ["</details>", ""]
    return "\n".join(lines) + "\n"


def _service_summary_markdown(service: ServicePlan) -> str:
    return (f"<details>\n<summary><b>{_html(service.service)}</b>: "
            f"{_html(_service_line(service))}</summary>\n\nThe details did not fit in one "
            f"comment: run `fleet plan {service.service} --format markdown`.\n\n</details>\n\n")


def _revision_markdown(revision: PlannedRevision) -> list[str]:
    title = f"`{revision.revision}`" + (f" {_inline(revision.message)}" if revision.message
                                        else "")
    lines = [f"#### {title}", "",
             f"Runs on {_count(revision.targets, 'target')}; file "
             f"`{_code(relative_path(revision.path))}`.", ""]
    if revision.unrendered:
        lines += [f"> ⚠️ {_inline(_unrendered_text(revision))}", ""]
    if revision.statements:
        lines += ["| # | statement | lock | relation | what it does | largest copy |",
                  "|--:|---|---|---|---|---|"]
        for number, statement in enumerate(revision.statements, 1):
            sql = f"`{_code(_short(statement.analysis.sql, STATEMENT_WIDTH))}`"
            if statement.analysis.error:
                lines.append(f"| {number} | {sql} | — | — | unparsable: "
                             f"{_inline(statement.analysis.error)} | |")
                continue
            if not statement.effects:
                lines.append(f"| {number} | {sql} | — | — | — | |")
            for position, planned in enumerate(statement.effects):
                effect = planned.effect
                lines.append(
                    f"| {number if position == 0 else ''} | {sql if position == 0 else ''} "
                    f"| {_badge(effect.lock) if effect.lock else 'none (new)'} "
                    f"| `{_code(effect.relation.display)}` "
                    f"| {_work_markdown(effect)} | {_copy_markdown(planned.largest, planned)} |")
        lines.append("")
    elif not revision.unrendered:
        lines += ["No SQL (an empty upgrade(), or a merge).", ""]
    notes = [note for s in revision.statements for note in s.analysis.notes]
    for note in dict.fromkeys(notes):
        lines.append(f"- note: {_inline(note)}")
    for item in revision.findings:
        state = (f"accepted: {_inline(item.accepted)}" if item.accepted
                 else _inline(item.rule.hint))
        mark = "☑️" if item.accepted else "❌"
        lines.append(f"- {mark} **{item.code} {item.rule.name}**: {_inline(item.message)} "
                     f"({state})")
    if notes or revision.findings:
        lines.append("")
    return lines


def _badge(lock: Any) -> str:
    mark = {"reads and writes": "🔴", "writes": "🟠"}.get(lock.blocks, "🟢")
    return f"{mark} {lock.label}"


def _work_markdown(effect: Effect) -> str:
    if effect.created:
        return "new, empty"
    why = "; ".join(effect.why)
    if effect.work is None:
        return _inline(why) if why else "—"
    return f"**{effect.work.value}**" + (f": {_inline(why)}" if why else "")


def _copy_markdown(copy: CopySize | None, planned: PlannedEffect | None) -> str:
    if copy is None:
        if planned is not None and planned.effect.created:
            return "—"
        return "not there yet"
    return f"`{_code(copy.schema)}`: {_rows(copy.rows)}, {_bytes(copy.bytes)}" + (
        f" (largest of {planned.copies})" if planned is not None and planned.copies > 1 else "")


# --- shared wording ---------------------------------------------------------------------------


def _nothing(report: PlanReport) -> str:
    others = []
    if report.ahead:
        others.append(f"{_count(report.ahead, 'target')} ahead of the scripts")
    if report.unreachable_targets:
        others.append(f"{_count(report.unreachable_targets, 'target')} not read "
                      "(unreachable database)")
    return (f"Nothing to migrate: {_count(report.at_head, 'target')} at head"
            + (", " + ", ".join(others) if others else "") + ".")


def _total_line(report: PlanReport) -> str:
    revisions = sum(len(s.revisions) for s in report.services)
    seconds = report.estimate_seconds
    if seconds is None:
        estimate = "no history in the ledger for an estimate"
    else:
        estimate = (f"estimated {_duration(seconds)} with {_count(report.jobs, 'job')} (from "
                    "the ledger"
                    + ("; services without history not counted" if report.estimate_partial
                       else "") + ")")
    rest = f"; {report.at_head} at head" if report.at_head else ""
    if report.ahead:
        rest += f"; {report.ahead} ahead of the scripts"
    if report.unreachable_targets:
        rest += f"; {report.unreachable_targets} not read (database unreachable)"
    return (f"{_count(report.targets, 'target')} to migrate in "
            f"{_count(len(report.services), 'service')}, "
            f"{_count(revisions, 'pending revision')}{rest}; {estimate}.")


def _service_line(service: ServicePlan) -> str:
    strongest = service.strongest
    parts = [f"{_count(len(service.revisions), 'revision')} on "
             f"{_count(service.targets, 'target')}"]
    if strongest is not None:
        top = [t.relation.display for t in service.tables if t.lock == strongest]
        parts.append(f"{strongest.label} on {', '.join(top[:3])}"
                     + (f" and {len(top) - 3} more" if len(top) > 3 else ""))
    findings = sum(1 for f in service.findings if not f.accepted)
    if findings:
        parts.append(_count(findings, "unsafe finding"))
    if service.unrendered:
        parts.append(f"{_count(len(service.unrendered), 'revision')} not rendered")
    parts.append(_estimate_text(service.estimate))
    return ", ".join(parts)


def _point_text(point: StartingPoint, *, markdown: bool = False) -> str:
    where = ", ".join(f"`{r}`" if markdown else r for r in point.current) or "base"
    return f"{_count(len(point.targets), 'target')} at {where}, {len(point.pending)} to run"


def _estimate_text(estimate: Estimate) -> str:
    if estimate.median is None:
        return "no history"
    return (f"~{_duration(estimate.seconds or 0.0)} (median {estimate.median:.2f} s per "
            f"target of the last {estimate.samples} migrated, {_count(estimate.jobs, 'job')})")


def _unrendered_text(revision: PlannedRevision) -> str:
    shown = len(revision.statements)
    return (f"upgrade() needs a live connection ({revision.unrendered}): "
            f"{_count(shown, 'statement')} rendered before that point "
            f"{'are' if shown != 1 else 'is'} shown; what follows depends on the database "
            "and cannot be planned offline")


def _lock_text(effect: Effect) -> str:
    return effect.lock.label if effect.lock else "none (new)"


def _work_text(effect: Effect) -> str:
    if effect.created:
        return "new, empty"
    return effect.work.value if effect.work else "-"


def _copy_text(planned: PlannedEffect) -> str:
    copy = planned.largest
    if copy is None:
        return "-" if planned.effect.created else "not there yet"
    return f"{copy.schema}: {_rows(copy.rows)}, {_bytes(copy.bytes)}"


def _style(effect: Effect) -> str | None:
    if effect.lock is None or effect.created:
        return "dim"
    if effect.lock.blocks == "reads and writes":
        return "red"
    return "yellow" if effect.lock.blocks == "writes" else None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _rows(rows: int | None) -> str:
    return "? rows (not analysed yet)" if rows is None else f"~{counted(rows, 'row')}"


def _bytes(size: int | None) -> str:
    if size is None:
        return "size unknown (locked)"
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _inline(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _code(text: str) -> str:
    """Text safe inside an inline code span in a table cell (no backticks, no pipes)."""
    return " ".join(str(text).split()).replace("`", "'").replace("|", "\\|")


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__: Sequence[str] = ["MARKER", "PlanViews", "plan_markdown", "plan_review_payload"]
