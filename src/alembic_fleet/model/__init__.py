"""The pure core model: values and decisions, no database, no Alembic, no printing."""

from alembic_fleet.model.identifiers import quote_ident, render_schema, validate_tenant
from alembic_fleet.model.revisions import Revision, RevisionGraph
from alembic_fleet.model.status import (
    Outcome,
    Step,
    TargetResult,
    TargetState,
    TargetStatus,
    classify,
    plan_step,
)
from alembic_fleet.model.targets import Database, Service, Target, targets_for

__all__ = [
    "Database",
    "Outcome",
    "Revision",
    "RevisionGraph",
    "Service",
    "Step",
    "Target",
    "TargetResult",
    "TargetState",
    "TargetStatus",
    "classify",
    "plan_step",
    "quote_ident",
    "render_schema",
    "targets_for",
    "validate_tenant",
]
