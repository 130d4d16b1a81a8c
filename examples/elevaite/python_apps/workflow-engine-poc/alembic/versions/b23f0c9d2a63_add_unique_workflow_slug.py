"""add a unique workflows.slug, backfilled from the name

Revision ID: b23f0c9d2a63
Revises: b22d6a1b7e52
Create Date: 2024-04-15 11:16:48.903372

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "b23f0c9d2a63"
down_revision: Union[str, Sequence[str], None] = "b22d6a1b7e52"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


# fleet: allow set-not-null, create-index-not-concurrently: workflows holds a few hundred rows per tenant; the lock lasts milliseconds.
def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("workflows", sa.Column("slug", sa.String(length=120), nullable=True))
    # "Nightly Report (v2)" -> "nightly-report-v2-1a2b3c4d": the id prefix keeps slugs unique
    # when two workflows share a name.
    op.execute(
        sa.text(
            "UPDATE workflows SET slug = "
            "left(trim(both '-' from regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g')), 110)"
            " || '-' || left(id::text, 8)"
        )
    )
    op.alter_column("workflows", "slug", existing_type=sa.String(length=120), nullable=False)
    op.create_index(op.f("ix_workflows_slug"), "workflows", ["slug"], unique=True)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_workflows_slug"), table_name="workflows")
    op.drop_column("workflows", "slug")
