"""replace users.is_active with a status enum

Adds the ``user_status`` enum type and ``users.status``, backfills it from ``is_active``, then
drops ``is_active``. The downgrade restores ``is_active`` from the status.

Revision ID: a12b5d8e0f63
Revises: a11c7e2d9a42
Create Date: 2024-04-02 10:45:09.881734

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision: str = "a12b5d8e0f63"
down_revision: Union[str, Sequence[str], None] = "a11c7e2d9a42"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

user_status = postgresql.ENUM(
    "pending", "active", "suspended", "deactivated", name="user_status", create_type=False
)


# fleet: allow drop-column, set-not-null: contract step of an expand/contract change; the application stopped reading users.is_active one release earlier and users is small.
def upgrade() -> None:
    """Upgrade schema."""
    op.execute("CREATE TYPE user_status AS ENUM ('pending', 'active', 'suspended', 'deactivated')")
    op.add_column("users", sa.Column("status", user_status, nullable=True))
    op.execute(
        sa.text(
            "UPDATE users SET status = CASE WHEN is_active THEN 'active' ELSE 'deactivated' END"
            "::user_status"
        )
    )
    op.alter_column(
        "users", "status", existing_type=user_status, nullable=False, server_default="pending"
    )
    op.drop_column("users", "is_active")


def downgrade() -> None:
    """Downgrade schema."""
    op.add_column(
        "users",
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.execute(sa.text("UPDATE users SET is_active = (status = 'active')"))
    op.drop_column("users", "status")
    op.execute("DROP TYPE user_status")
