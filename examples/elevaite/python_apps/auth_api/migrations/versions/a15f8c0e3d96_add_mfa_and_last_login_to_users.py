"""add mfa_enabled and last_login_at to users

Revision ID: a15f8c0e3d96
Revises: a14d2f6b8c35
Create Date: 2024-06-17 08:54:02.317560

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "a15f8c0e3d96"
down_revision: Union[str, Sequence[str], None] = "a14d2f6b8c35"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "users",
        sa.Column("mfa_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("users", sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("users", "last_login_at")
    op.drop_column("users", "mfa_enabled")
