"""The auth API's tables, exactly as the migrations leave them at head.

No schema is named anywhere: each tenant has its own schema (``auth_<tenant>``), chosen at run
time through ``search_path``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address

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


class UserStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (sa.Index("ix_organizations_slug", "slug", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    name: Mapped[str] = mapped_column(sa.String(255))
    slug: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    users: Mapped[list[User]] = relationship(back_populates="organization")
    roles: Mapped[list[Role]] = relationship(back_populates="organization")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    full_name: Mapped[str | None] = mapped_column(sa.String(255))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[UserStatus] = mapped_column(
        sa.Enum(
            UserStatus,
            name="user_status",
            values_callable=lambda members: [m.value for m in members],
        ),
        server_default=UserStatus.PENDING.value,
    )
    mfa_enabled: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    last_login_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )

    organization: Mapped[Organization] = relationship(back_populates="users")
    roles: Mapped[list[Role]] = relationship(secondary="user_roles", back_populates="users")
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="user")
    sessions: Mapped[list[Session]] = relationship(back_populates="user")


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str | None] = mapped_column(sa.Text)

    organization: Mapped[Organization] = relationship(back_populates="roles")
    users: Mapped[list[User]] = relationship(secondary="user_roles", back_populates="roles")


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    granted_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (sa.Index("ix_api_keys_key_hash", "key_hash", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(100))
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(128))
    scopes: Mapped[list[str]] = mapped_column(
        postgresql.ARRAY(sa.String(64)), server_default=sa.text("'{}'::varchar[]")
    )
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="api_keys")


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (sa.Index("ix_sessions_token_hash", "token_hash", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, server_default=_uuid())
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(128))
    ip_address: Mapped[IPv4Address | IPv6Address | None] = mapped_column(postgresql.INET)
    user_agent: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=_now()
    )
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="sessions")
