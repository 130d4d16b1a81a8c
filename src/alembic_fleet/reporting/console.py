"""The reporter every command prints through: one class made of its views."""

from __future__ import annotations

from alembic_fleet.reporting.finding_views import FindingViews
from alembic_fleet.reporting.plan_views import PlanViews
from alembic_fleet.reporting.record_views import RecordViews
from alembic_fleet.reporting.run_views import RunViews


class Reporter(RunViews, RecordViews, FindingViews, PlanViews):
    """Writes one command's output in the mode the user asked for (see ReporterBase)."""
