"""add retry tracking to ingestion_jobs

Revision ID: c34d3f5c6b84
Revises: c33c0e2b4a73
Create Date: 2024-06-11 16:22:13.094607

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "c34d3f5c6b84"
down_revision: Union[str, Sequence[str], None] = "c33c0e2b4a73"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "ingestion_jobs",
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column(
        "ingestion_jobs",
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
    )
    op.add_column(
        "ingestion_jobs", sa.Column("triggered_by", sa.String(length=100), nullable=True)
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("ingestion_jobs", "triggered_by")
    op.drop_column("ingestion_jobs", "max_attempts")
    op.drop_column("ingestion_jobs", "attempt")
