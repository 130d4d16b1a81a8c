"""backfill chunks.token_count and make it required; add documents.language

Revision ID: c33c0e2b4a73
Revises: c32b7d0a9f62
Create Date: 2024-05-14 13:06:45.571829

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "c33c0e2b4a73"
down_revision: Union[str, Sequence[str], None] = "c32b7d0a9f62"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# A lightweight description of the table as of this revision (never import the models here).
chunks = sa.table(
    "chunks",
    sa.column("content", sa.Text()),
    sa.column("token_count", sa.Integer()),
)


# fleet: allow set-not-null: chunks is written only by the ingestion worker, which is stopped during this deployment; the backfill above leaves no NULL behind.
def upgrade() -> None:
    """Upgrade schema."""
    # Rough estimate for chunks written before the tokenizer stored counts: ~4 chars per token.
    op.execute(
        chunks.update()
        .where(chunks.c.token_count.is_(None))
        .values(token_count=sa.func.greatest(1, sa.func.length(chunks.c.content) // 4))
    )
    op.alter_column("chunks", "token_count", existing_type=sa.Integer(), nullable=False)
    op.add_column(
        "documents",
        sa.Column("language", sa.String(length=16), server_default="und", nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("documents", "language")
    op.alter_column("chunks", "token_count", existing_type=sa.Integer(), nullable=True)
