"""Generate the benchmark platform: three schema-per-tenant services, 15 revisions each.

The revisions are what real services accumulate: tables, foreign keys, indexes, an enum, a
data migration, added and altered columns, constraints. Each service gets two env.py files:
``env.py`` (three lines, fleet's helper) and ``env_legacy.py`` (what platforms write
without fleet: schema and URL from ALEMBIC_SCHEMA and DATABASE_URI), used for the
one-process-per-schema baseline.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

SERVICES = {"accounts": "acc", "orders": "ord", "catalog": "cat"}

HELPER_ENV = """\
from alembic_fleet.env import run_migrations

run_migrations()
"""

LEGACY_ENV = """\
import os

from alembic import context
from sqlalchemy import create_engine, pool, text

schema = os.environ["ALEMBIC_SCHEMA"]
url = os.environ["DATABASE_URI"].replace("postgresql://", "postgresql+psycopg://", 1)
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET search_path TO "{schema}"'))
    connection.commit()
    context.configure(connection=connection, version_table_schema=schema)
    with context.begin_transaction():
        context.run_migrations()
"""

INI = """\
[alembic]
script_location = %(here)s/migrations
"""


def _revisions(p: str) -> list[tuple[str, str, str]]:
    """(message, upgrade body, downgrade body) for 15 revisions of a service with prefix p."""
    return [
        ("create parents", f"""
            op.create_table("{p}_parent",
                sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("name", sa.String(200), nullable=False),
                sa.Column("created_at", sa.DateTime(timezone=True),
                          server_default=sa.text("now()"), nullable=False))
         """, f'op.drop_table("{p}_parent")'),
        ("create items", f"""
            op.create_table("{p}_item",
                sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("parent_id", sa.BigInteger,
                          sa.ForeignKey("{p}_parent.id", ondelete="CASCADE"), nullable=False),
                sa.Column("title", sa.Text, nullable=False))
            op.create_index("ix_{p}_item_parent", "{p}_item", ["parent_id"])
         """, f'op.drop_table("{p}_item")'),
        ("add parent email", f"""
            op.add_column("{p}_parent", sa.Column("email", sa.String(320)))
         """, f'op.drop_column("{p}_parent", "email")'),
        ("status enum", f"""
            op.execute("CREATE TYPE {p}_status AS ENUM ('new', 'active', 'closed')")
            op.add_column("{p}_item", sa.Column("status",
                sa.Enum("new", "active", "closed", name="{p}_status", create_type=False),
                server_default="new", nullable=False))
         """, f'op.drop_column("{p}_item", "status")\n    op.execute("DROP TYPE {p}_status")'),
        ("unique email", f"""
            op.create_index("ux_{p}_parent_email", "{p}_parent", ["email"], unique=True)
         """, f'op.drop_index("ux_{p}_parent_email", table_name="{p}_parent")'),
        ("create events", f"""
            op.create_table("{p}_event",
                sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("item_id", sa.BigInteger, sa.ForeignKey("{p}_item.id")),
                sa.Column("payload", sa.dialects.postgresql.JSONB, nullable=False),
                sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()")))
         """, f'op.drop_table("{p}_event")'),
        ("backfill titles", f"""
            op.execute("UPDATE {p}_item SET title = btrim(title) WHERE title <> btrim(title)")
         """, "pass"),
        ("add quantity", f"""
            op.add_column("{p}_item", sa.Column("quantity", sa.Integer, server_default="1",
                                                 nullable=False))
         """, f'op.drop_column("{p}_item", "quantity")'),
        ("quantity check", f"""
            op.create_check_constraint("ck_{p}_item_quantity", "{p}_item", "quantity > 0")
         """, f'op.drop_constraint("ck_{p}_item_quantity", "{p}_item")'),
        ("events index", f"""
            op.create_index("ix_{p}_event_item_at", "{p}_event", ["item_id", "at"])
         """, f'op.drop_index("ix_{p}_event_item_at", table_name="{p}_event")'),
        ("create tags", f"""
            op.create_table("{p}_tag",
                sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
                sa.Column("label", sa.String(64), nullable=False, unique=True))
            op.create_table("{p}_item_tag",
                sa.Column("item_id", sa.BigInteger, sa.ForeignKey("{p}_item.id"),
                          primary_key=True),
                sa.Column("tag_id", sa.Integer, sa.ForeignKey("{p}_tag.id"), primary_key=True))
         """, f'op.drop_table("{p}_item_tag")\n    op.drop_table("{p}_tag")'),
        ("widen name", f"""
            op.alter_column("{p}_parent", "name", type_=sa.String(400))
         """, f'op.alter_column("{p}_parent", "name", type_=sa.String(200))'),
        ("seed tags", f"""
            op.execute("INSERT INTO {p}_tag (label) VALUES ('urgent'), ('later')")
         """, f'op.execute("DELETE FROM {p}_tag")'),
        ("soft delete", f"""
            op.add_column("{p}_parent", sa.Column("deleted_at", sa.DateTime(timezone=True)))
            op.create_index("ix_{p}_parent_live", "{p}_parent", ["id"],
                            postgresql_where=sa.text("deleted_at IS NULL"))
         """, f'op.drop_index("ix_{p}_parent_live", table_name="{p}_parent")\n'
              f'    op.drop_column("{p}_parent", "deleted_at")'),
        ("audit table", f"""
            op.create_table("{p}_audit",
                sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                sa.Column("actor", sa.Text, nullable=False),
                sa.Column("action", sa.Text, nullable=False),
                sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()")))
         """, f'op.drop_table("{p}_audit")'),
    ]


def revision_source(message: str, revision: str, previous: str | None, up: str,
                    down: str) -> str:
    """A revision file as ``alembic revision`` writes one, ``up`` and ``down`` its bodies."""
    return textwrap.dedent(f'''\
        """{message}

        Revision ID: {revision}
        Revises: {previous or ""}
        """
        import sqlalchemy as sa
        from alembic import op
        from sqlalchemy.dialects import postgresql  # noqa: F401

        revision = "{revision}"
        down_revision = {previous!r}
        branch_labels = None
        depends_on = None


        def upgrade():
        ''') + textwrap.indent(textwrap.dedent(up).strip(), "    ") + (
        "\n\n\ndef downgrade():\n    " + down + "\n")


def build(root: Path, tenants: int, *, legacy: bool = False) -> Path:
    """Write the platform under ``root`` with ``tenants`` tenants; return its fleet.toml."""
    for name, prefix in SERVICES.items():
        folder = root / name
        versions = folder / "migrations" / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        (folder / "alembic.ini").write_text(INI)
        (folder / "migrations" / "env.py").write_text(LEGACY_ENV if legacy else HELPER_ENV)
        previous = None
        for number, (message, up, down) in enumerate(_revisions(prefix), start=1):
            revision = f"{prefix}{number:09d}"
            body = revision_source(message, revision, previous, up, down)
            (versions / f"{revision}_{message.replace(' ', '_')}.py").write_text(body)
            previous = revision
    names = ", ".join(f'"t{i:05d}"' for i in range(tenants))
    services = "".join(
        f'\n[services.{name}]\npath = "{name}"\nschema = "{prefix}_{{tenant}}"\n'
        for name, prefix in SERVICES.items())
    config = root / "fleet.toml"
    config.write_text(f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\n{services}')
    return config
