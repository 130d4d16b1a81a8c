"""The values every layer of ``fleet check`` shares: what to check, what was found.

Kept apart from the layers so that each of them (:mod:`.file_layer`, :mod:`.scratch_layer`,
:mod:`.database_layer`, :mod:`.revision_command`) and the orchestration in :mod:`.gate` can
use them without importing one another. Re-exported by :mod:`alembic_fleet.check.gate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.model.findings import Finding, sort_key
from alembic_fleet.model.targets import Service

GRAPH_CODES = frozenset({"FC101", "FC102", "FC103", "FC104", "FC107", "FC108"})
"""Findings after which Alembic cannot load the service: later layers are skipped."""

REVISION_CODES = frozenset({"FC105", "FC106", "FC201", "FC202"})
"""File rules about one revision's own code, reported only for the revisions in scope (like
the unsafe-operation rules, FC5xx): an old revision was applied long ago and is not fixed by
editing it. The graph rules (FC101-FC104) and what stops Alembic from loading the files at
all (FC107, FC108) always cover every file."""


@dataclass(frozen=True)
class CheckOptions:
    """What to check beyond the files."""

    scratch: bool = True
    scratch_url: str | None = None
    database: bool = False
    since: str | None = None
    all_revisions: bool = False
    """``--all``: lint every revision, not only the new ones."""


@dataclass(frozen=True)
class RevisionScope:
    """Which revisions the per-revision rules look at, and how that was decided.

    ``mode``: ``branch`` (new or changed since the merge-base of HEAD with a base branch,
    the default in a git work tree), ``since`` (added since git ``--since REF``),
    ``database`` (not applied to any target yet, with ``--database``) or ``all``.
    """

    mode: str
    old: frozenset[Path] = frozenset()
    """Resolved paths of the revision files left out: unchanged since the base."""
    base: str | None = None
    """The git ref compared with: ``--since REF`` or the base branch found."""
    merge_base: str | None = None
    """The commit the branch forked from (``branch`` mode)."""
    note: str | None = None
    """Why every revision is linted although no ``--all`` was given (no git, no base)."""

    def covers(self, path: str | Path) -> bool:
        return Path(path).resolve() not in self.old


@dataclass
class LintedRevisions:
    """One service's revisions in scope, for the report."""

    scope: RevisionScope
    revisions: list[str]
    """The ids linted one by one, oldest first."""
    total: int
    unrendered: list[str] = field(default_factory=list)
    """Revisions whose ``upgrade()`` reads the database (``op.get_bind()``): their SQL after
    that read could not be rendered offline, so it was not linted."""


@dataclass
class CheckReport:
    """Every finding, and which checks ran (so a skipped check is visible, never silent)."""

    findings: list[Finding] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    scope: dict[str, LintedRevisions] = field(default_factory=dict)
    """Per service (whose graph loads): which revisions the per-revision rules looked at."""
    notes: list[str] = field(default_factory=list)
    """Said once per run: why every revision was linted although ``--all`` was not given."""

    @property
    def failed(self) -> bool:
        return any(f.fails for f in self.findings)

    def merge(self, other: CheckReport) -> None:
        """Add another run's report (a service checked by its own interpreter), keeping
        findings in report order."""
        self.findings = sorted([*self.findings, *other.findings], key=sort_key)
        self.checks.update(other.checks)
        self.skipped.update(other.skipped)
        self.scope.update(other.scope)
        self.notes.extend(note for note in other.notes if note not in self.notes)

    def ran(self, service: str, check: str) -> None:
        self.checks.setdefault(service, []).append(check)

    def skip(self, service: str, check: str, reason: str) -> None:
        self.skipped.setdefault(service, []).append(f"{check}: {reason}")


@dataclass
class CheckedService:
    """One service under check: its configuration and loaded scripts."""

    service: Service
    scripts: ServiceScripts

    @property
    def name(self) -> str:
        return self.service.name
