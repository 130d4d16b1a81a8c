"""The workflow engine's tables, exactly as the migrations leave them at head.

No schema is named anywhere: each tenant has its own schema (``workflow_<tenant>``), chosen at
run time through ``search_path``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> sa.TextClause:
    return sa.text("now()")


def _uuid() -> sa.TextClause:
    return sa.text("gen_random_uuid()")


def _empty_json() -> sa.TextClause:
    return sa.text("'{}'::jsonb")


class ExecutionStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (sa.Index("ix_workflows_slug", "slug", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    name: Mapped[str] = mapped_column(sa.String(255))
    slug: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str | None] = mapped_column(sa.Text)
    definition: Mapped[dict[str, Any]] = mapped_column(
        postgresql.JSONB, server_default=_empty_json()
    )
    version: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("1"))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    steps: Mapped[list[WorkflowStep]] = relationship(
        back_populates="workflow", order_by="WorkflowStep.position"
    )
    executions: Mapped[list[Execution]] = relationship(back_populates="workflow")
    schedules: Mapped[list[WorkflowSchedule]] = relationship(back_populates="workflow")


class WorkflowStep(Base):
    __tablename__ = "workflow_steps"
    __table_args__ = (sa.UniqueConstraint("workflow_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("workflows.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(sa.Integer)
    name: Mapped[str] = mapped_column(sa.String(255))
    step_type: Mapped[str] = mapped_column(sa.String(50))
    config: Mapped[dict[str, Any]] = mapped_column(postgresql.JSONB, server_default=_empty_json())
    timeout_seconds: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("300"))

    workflow: Mapped[Workflow] = relationship(back_populates="steps")


class WorkflowSchedule(Base):
    __tablename__ = "workflow_schedules"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    cron_expression: Mapped[str] = mapped_column(sa.String(100))
    timezone: Mapped[str] = mapped_column(sa.String(64), server_default="UTC")
    enabled: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())
    next_run_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    workflow: Mapped[Workflow] = relationship(back_populates="schedules")


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (sa.Index("ix_executions_workflow_id_status", "workflow_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("workflows.id", ondelete="CASCADE")
    )
    status: Mapped[ExecutionStatus] = mapped_column(
        sa.Enum(
            ExecutionStatus,
            name="execution_status",
            values_callable=lambda members: [m.value for m in members],
        ),
        server_default=ExecutionStatus.PENDING.value,
    )
    input: Mapped[dict[str, Any]] = mapped_column(postgresql.JSONB, server_default=_empty_json())
    output: Mapped[dict[str, Any] | None] = mapped_column(postgresql.JSONB)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    workflow: Mapped[Workflow] = relationship(back_populates="executions")
    logs: Mapped[list[ExecutionLog]] = relationship(
        back_populates="execution", order_by="ExecutionLog.id"
    )


class ExecutionLog(Base):
    __tablename__ = "execution_logs"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("workflow_steps.id", ondelete="SET NULL")
    )
    level: Mapped[str] = mapped_column(sa.String(10), server_default="info")
    message: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    execution: Mapped[Execution] = relationship(back_populates="logs")
