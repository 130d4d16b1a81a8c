"""add workflows.is_active and workflow_steps.timeout_seconds

Revision ID: b25b8d3f6a85
Revises: b24a5e7c1f74
Create Date: 2024-06-03 10:09:57.362480

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "b25b8d3f6a85"
down_revision: Union[str, Sequence[str], None] = "b24a5e7c1f74"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "workflows",
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column(
        "workflow_steps",
        sa.Column("timeout_seconds", sa.Integer(), server_default=sa.text("300"), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("workflow_steps", "timeout_seconds")
    op.drop_column("workflows", "is_active")
