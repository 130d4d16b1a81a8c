"""The ingestion service's tables, exactly as the migrations leave them at head.

This service keeps a single schema (``public`` of its own database); like the other services
its models and migrations name no schema at all.
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


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = (sa.Index("ix_sources_name", "name", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    name: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(50))
    uri: Mapped[str] = mapped_column(sa.Text)
    config: Mapped[dict[str, Any]] = mapped_column(postgresql.JSONB, server_default=_empty_json())
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    jobs: Mapped[list[IngestionJob]] = relationship(back_populates="source")
    documents: Mapped[list[Document]] = relationship(back_populates="source")


class IngestionJob(Base):
    __tablename__ = "ingestion_jobs"
    __table_args__ = (sa.Index("ix_ingestion_jobs_source_id_status", "source_id", "status"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    source_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(
        sa.Enum(
            JobStatus,
            name="ingestion_job_status",
            values_callable=lambda members: [m.value for m in members],
        ),
        server_default=JobStatus.QUEUED.value,
    )
    documents_seen: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    documents_failed: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    attempt: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("1"))
    max_attempts: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("3"))
    triggered_by: Mapped[str | None] = mapped_column(sa.String(100))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    source: Mapped[Source] = relationship(back_populates="jobs")


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (sa.UniqueConstraint("source_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    source_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("ingestion_jobs.id", ondelete="SET NULL"), index=True
    )
    external_id: Mapped[str] = mapped_column(sa.String(512))
    title: Mapped[str | None] = mapped_column(sa.String(500))
    mime_type: Mapped[str] = mapped_column(sa.String(127))
    content_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    language: Mapped[str] = mapped_column(sa.String(16), server_default="und")
    properties: Mapped[dict[str, Any]] = mapped_column(
        postgresql.JSONB, server_default=_empty_json()
    )
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    source: Mapped[Source] = relationship(back_populates="documents")
    chunks: Mapped[list[Chunk]] = relationship(
        back_populates="document", order_by="Chunk.chunk_index"
    )


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        sa.Index("ix_chunks_document_id_chunk_index", "document_id", "chunk_index", unique=True),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("documents.id", ondelete="CASCADE")
    )
    chunk_index: Mapped[int] = mapped_column(sa.Integer)
    content: Mapped[str] = mapped_column(sa.Text)
    token_count: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    document: Mapped[Document] = relationship(back_populates="chunks")
