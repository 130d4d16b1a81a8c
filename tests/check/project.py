"""Small, whole service projects on disk for ``fleet check`` tests.

A clean project has one per-tenant service ``shop`` with three revisions (create ``items``,
add ``items.price``, add an index on ``items.name``) and models that match them exactly.
Each test then breaks one thing, the way a developer would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
path_separator = os
"""

ENV_PY = """\
from alembic_fleet.env import run_migrations
from shop.models import Base

run_migrations(target_metadata=Base.metadata)
"""

SCRIPT_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''

MODELS = """\
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), nullable=False, index=True)
    price = sa.Column(sa.Numeric(10, 2), nullable=True)
"""

REVISIONS = {
    "aa0000000001_create_items.py": '''\
        """create items"""
        from alembic import op
        import sqlalchemy as sa

        revision = "aa0000000001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.create_table(
                "items",
                sa.Column("id", sa.Integer(), primary_key=True),
                sa.Column("name", sa.String(100), nullable=False),
            )


        def downgrade() -> None:
            op.drop_table("items")
        ''',
    "aa0000000002_add_price.py": '''\
        """add price"""
        from alembic import op
        import sqlalchemy as sa

        revision = "aa0000000002"
        down_revision = "aa0000000001"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.add_column("items", sa.Column("price", sa.Numeric(10, 2), nullable=True))


        def downgrade() -> None:
            op.drop_column("items", "price")
        ''',
    "aa0000000003_index_name.py": '''\
        """index items.name"""
        from alembic import op

        revision = "aa0000000003"
        down_revision = "aa0000000002"
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            with op.get_context().autocommit_block():
                op.create_index("ix_items_name", "items", ["name"], postgresql_concurrently=True)


        def downgrade() -> None:
            with op.get_context().autocommit_block():
                op.drop_index("ix_items_name", table_name="items", postgresql_concurrently=True)
        ''',
}


def make_project(root: Path, *, extra_service_keys: str = "") -> Path:
    """Write the clean project under ``root`` and return the versions folder."""
    service = root / "shop_service"
    versions = service / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "fleet.toml").write_text(textwrap.dedent(f"""\
        database = "${{DATABASE_URI:-}}"
        tenants = ["acme", "globex"]

        [services.shop]
        path = "shop_service"
        schema = "shop_{{tenant}}"
        {extra_service_keys}
        """))
    (service / "alembic.ini").write_text(ALEMBIC_INI)
    (service / "migrations" / "env.py").write_text(ENV_PY)
    (service / "migrations" / "script.py.mako").write_text(SCRIPT_MAKO)
    (service / "shop").mkdir()
    (service / "shop" / "__init__.py").write_text("")
    (service / "shop" / "models.py").write_text(MODELS)
    for name, text in REVISIONS.items():
        write_revision(versions, name, text)
    return versions


def write_revision(versions: Path, name: str, text: str) -> Path:
    path = versions / name
    path.write_text(textwrap.dedent(text))
    return path


def revision_file(revision: str, down: str | None, upgrade: str, downgrade: str | None,
                  *, header: str = "") -> str:
    """The text of a revision file (``downgrade`` None: the function is missing)."""
    body = textwrap.indent(textwrap.dedent(upgrade).strip(), "    ")
    text = f'''"""revision {revision}"""
from alembic import op
import sqlalchemy as sa
{header}
revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}
'''
    if downgrade is not None:
        text += "\n\ndef downgrade() -> None:\n" + textwrap.indent(
            textwrap.dedent(downgrade).strip(), "    ") + "\n"
    return text
