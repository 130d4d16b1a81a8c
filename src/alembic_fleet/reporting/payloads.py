"""The JSON shapes of the contract (DESIGN section 4), built from model values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from alembic_fleet.model.findings import Finding
from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    state_after,
)
from alembic_fleet.model.targets import Target
from alembic_fleet.redact import display

if TYPE_CHECKING:  # the check machinery loads only for fleet check
    from alembic_fleet.check.gate import CheckReport


def _target(target: Target, database: str | None = None) -> dict[str, Any]:
    """A target's fields; ``database`` as shown when the caller has it (:func:`_shown`)."""
    return {
        "service": target.service,
        "tenant": target.tenant,
        "schema": target.schema,
        "database": display(target.database) if database is None else database,
    }


def _summary(states: Iterable[TargetState]) -> dict[str, int]:
    counts = Counter(states)
    return {
        "targets": sum(n for state, n in counts.items() if state is not TargetState.ORPHAN),
        **{state.value: counts[state] for state in _SUMMARY_STATES},
    }


_SUMMARY_STATES = (TargetState.AT_HEAD, TargetState.BEHIND, TargetState.MISSING,
                   TargetState.AHEAD, TargetState.FAILED, TargetState.ORPHAN,
                   TargetState.UNREACHABLE)
"""The state counts of a summary, in the order the contract shows them."""


def _status_entry(status: TargetStatus, database: str) -> dict[str, Any]:
    """One target of ``fleet status --json``. The state is the :class:`TargetState`
    itself (a ``str``, written as its value): at 30,000 targets, ``.value`` (a property of
    every enum member) cost a tenth of the payload."""
    return {**_target(status.target, database), "current": list(status.current),
            "head": list(status.head), "pending": status.pending, "state": status.state}


def _shown(targets: Iterable[Target]) -> dict[str, str]:
    """Each database of ``targets`` as shown (password masked), computed once per database."""
    return {key: display(database) for key, database in
            {t.database.key: t.database for t in targets}.items()}


def status_payload(statuses: Sequence[TargetStatus]) -> dict[str, Any]:
    shown = _shown(s.target for s in statuses)
    targets = [_status_entry(s, shown[s.target.database.key]) for s in statuses]
    return {"targets": targets, "summary": _summary(s.state for s in statuses),
            "databases": databases_summary([(s.target, s.state) for s in statuses]),
            "services": services_summary(statuses)}


def services_summary(statuses: Sequence[TargetStatus]) -> dict[str, dict[str, Any]]:
    """Per service: its head, the lowest and highest revision its targets hold (``[]``: a
    target with no version yet) and how many are at head: what an application gate reads
    (``fleet wait --revision``). Lowest is the target with the most revisions pending;
    orphans and unreachable targets do not count."""
    grouped: dict[str, list[TargetStatus]] = {}
    for status in statuses:
        if status.state not in (TargetState.ORPHAN, TargetState.UNREACHABLE):
            grouped.setdefault(status.target.service, []).append(status)
    summary = {}
    for name, members in grouped.items():
        lowest = max(members, key=lambda s: s.pending)
        highest = min(members, key=lambda s: (s.pending, s.state is not TargetState.AHEAD))
        summary[name] = {"head": list(members[0].head), "lowest": list(lowest.current),
                         "highest": list(highest.current), "targets": len(members),
                         "at_head": sum(1 for s in members if s.state is TargetState.AT_HEAD)}
    return summary


def gate_payload(gates: dict[str, str], short: Sequence[TargetStatus]) -> dict[str, Any]:
    """``fleet wait --revision``: whether every target got there, and those that did not."""
    return {"ready": not short, "revisions": dict(gates),
            "short": [{**_target(s.target), "current": list(s.current), "state": s.state.value}
                      for s in short]}


def databases_summary(items: Sequence[tuple[Target, TargetState]]) -> dict[str, dict[str, int]]:
    """Per database (as displayed, password masked): the state counts of its targets."""
    shown = _shown(target for target, _ in items)
    grouped: dict[str, list[TargetState]] = {}
    for target, state in items:
        grouped.setdefault(shown[target.database.key], []).append(state)
    return {name: _summary(states) for name, states in grouped.items()}


def plan_payload(steps: Sequence[Step]) -> dict[str, Any]:
    payload = status_payload([s.status for s in steps])
    for entry, step in zip(payload["targets"], steps, strict=True):
        entry["action"] = "upgrade" if step.upgrade else "skip"
        entry["reason"] = step.reason
    payload["summary"]["to_migrate"] = sum(1 for s in steps if s.upgrade)
    return payload


def migrate_payload(results: Sequence[TargetResult], before: Sequence[TargetStatus]
                    ) -> dict[str, Any]:
    shown = _shown(r.target for r in results)
    targets = []
    states = []
    for result, status in zip(results, before, strict=True):
        state, pending = state_after(result, status)
        states.append(state)
        entry = {
            **_target(result.target, shown[result.target.database.key]),
            "current": list(result.to_revs),
            "head": list(status.head),
            "pending": pending,
            "state": state,
            "outcome": result.outcome,
            "from": list(result.from_revs),
            "to": list(result.to_revs),
            "seconds": round(result.seconds, 4),
            "error": result.error,
        }
        if result.hint:
            entry["hint"] = result.hint
        if result.note:
            entry["note"] = result.note
        if result.attempts > 1:
            entry["attempts"] = result.attempts
        if result.via:
            entry["via"] = result.via
        if result.sql is not None:
            entry["sql"] = result.sql
        targets.append(entry)
    summary = _summary(states)
    outcomes = Counter(r.outcome for r in results)
    summary.update({outcome.value: outcomes[outcome] for outcome in Outcome})
    databases = databases_summary([(r.target, st) for r, st in zip(results, states, strict=True)])
    per_database: dict[str, Counter[Outcome]] = {name: Counter() for name in databases}
    for result in results:
        per_database[shown[result.target.database.key]][result.outcome] += 1
    for name, counted in per_database.items():
        databases[name].update({outcome.value: counted[outcome] for outcome in Outcome})
    return {"targets": targets, "summary": summary, "databases": databases}


def results_payload(results: Sequence[TargetResult]) -> dict[str, Any]:
    """Results without a 'before' state (``--sql``, ``downgrade``): what ran, or would."""
    targets = []
    for result in results:
        entry = {
            **_target(result.target),
            "outcome": result.outcome.value,
            "from": list(result.from_revs),
            "to": list(result.to_revs),
            "seconds": round(result.seconds, 4),
            "error": result.error,
        }
        for key in ("hint", "note", "via", "sql"):
            if getattr(result, key) is not None:
                entry[key] = getattr(result, key)
        targets.append(entry)
    summary: dict[str, int] = {"targets": len(results)}
    for outcome in Outcome:
        summary[outcome.value] = sum(1 for r in results if r.outcome is outcome)
    return {"targets": targets, "summary": summary}


def history_payload(service: str, graph: RevisionGraph) -> dict[str, Any]:
    return {
        "service": service,
        "heads": list(graph.heads),
        "revisions": [
            {"revision": r.id, "down_revision": list(r.down), "message": r.message,
             "head": r.id in graph.heads, "path": r.path}
            for r in graph.ordered
        ],
    }


def error_payload(message: str, hint: str | None, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "hint": hint, "exit_code": code}}


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A database row with values JSON can carry (timestamps as ISO strings)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def run_payload(database: str, run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "database": database,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "user": run.user, "host": run.host, "command": run.command,
        "migrated": run.migrated, "failed": run.failed,
        "outcome": run.outcome if run.finished_at else "interrupted",
    }


def finding_payload(item: Finding) -> dict[str, Any]:
    return {
        "code": item.code,
        "rule": item.rule.name,
        "severity": item.effective_severity.value,
        "service": item.service,
        "file": item.file,
        "line": item.line,
        "revision": item.revision,
        "tenant": item.tenant,
        "schema": item.schema,
        "message": item.message,
        "statement": item.statement,
        "details": list(item.details),
        "hint": item.rule.hint,
        "accepted": item.accepted,
    }


def check_payload(report: CheckReport) -> dict[str, Any]:
    findings = report.findings
    return {
        "ok": not report.failed,
        "findings": [finding_payload(f) for f in findings],
        "checks": report.checks,
        "skipped": report.skipped,
        "scope": {service: {
            "mode": linted.scope.mode,
            "base": linted.scope.base,
            "merge_base": linted.scope.merge_base,
            "note": linted.scope.note,
            "revisions": linted.revisions,
            "total": linted.total,
            "unrendered": linted.unrendered,
        } for service, linted in report.scope.items()},
        "notes": report.notes,
        "summary": {
            "errors": sum(1 for f in findings if f.fails),
            "warnings": sum(1 for f in findings
                            if f.accepted is None and f.effective_severity.value == "warning"),
            "accepted": sum(1 for f in findings if f.accepted is not None),
        },
    }
