"""The values every layer of ``fleet check`` shares: what to check, what was found.

Kept apart from the layers so that each of them (:mod:`.file_layer`, :mod:`.scratch_layer`,
:mod:`.database_layer`, :mod:`.revision_command`) and the orchestration in :mod:`.gate` can
use them without importing one another. Re-exported by :mod:`alembic_fleet.check.gate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.model.findings import Finding
from alembic_fleet.model.targets import Service

GRAPH_CODES = frozenset({"FC101", "FC102", "FC103", "FC104", "FC107", "FC108"})
"""Findings after which Alembic cannot load the service: later layers are skipped."""


@dataclass(frozen=True)
class CheckOptions:
    """What to check beyond the files."""

    scratch: bool = True
    scratch_url: str | None = None
    database: bool = False
    since: str | None = None


@dataclass
class CheckReport:
    """Every finding, and which checks ran (so a skipped check is visible, never silent)."""

    findings: list[Finding] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(f.fails for f in self.findings)

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
