"""A small per-tenant service ``crm`` on disk, for the search_path and baseline tests.

``make_crm`` writes fleet.toml (tenants ``acme`` and ``globex``, extra service keys as
given), alembic.ini, an env.py using the helper, models and the given revisions.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg

from tests.check.project import ALEMBIC_INI, SCRIPT_MAKO, revision_file

ENV_PY = """\
from alembic_fleet.env import run_migrations
from crm.models import Base

run_migrations(target_metadata=Base.metadata)
"""

CONTACTS_MODELS = """\
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import CITEXT
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    id = sa.Column(sa.Integer, primary_key=True)
    email = sa.Column(CITEXT(), nullable=False)
"""

CONTACTS = revision_file(
    "cc0000000001", None,
    'op.create_table("contacts", sa.Column("id", sa.Integer(), primary_key=True), '
    'sa.Column("email", postgresql.CITEXT(), nullable=False))',
    'op.drop_table("contacts")', header="from sqlalchemy.dialects import postgresql\n")


def make_crm(root: Path, *, keys: str = "", top: str = "",
             revisions: dict[str, str] | None = None, models: str = CONTACTS_MODELS,
             files: dict[str, str] | None = None) -> Path:
    """Write the project under ``root``; returns the service folder."""
    service = root / "crm_service"
    versions = service / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "fleet.toml").write_text(textwrap.dedent(f"""\
        database = "${{DATABASE_URI:-}}"
        tenants = ["acme", "globex"]
        {top}

        [services.crm]
        path = "crm_service"
        schema = "crm_{{tenant}}"
        {keys}
        """))
    (service / "alembic.ini").write_text(ALEMBIC_INI)
    (service / "migrations" / "env.py").write_text(ENV_PY)
    (service / "migrations" / "script.py.mako").write_text(SCRIPT_MAKO)
    (service / "crm").mkdir()
    (service / "crm" / "__init__.py").write_text("")
    (service / "crm" / "models.py").write_text(models)
    for name, text in (revisions if revisions is not None
                       else {"cc0000000001_contacts.py": CONTACTS}).items():
        (versions / name).write_text(text)
    for name, text in (files or {}).items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(textwrap.dedent(text))
    return service


def install_citext(url: str, schema: str = "extensions") -> None:
    """The shared schema with the citext extension in it, as an operator sets it up."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE EXTENSION citext SCHEMA "{schema}"')


def set_keys(root: Path, old: str, new: str) -> None:
    """Edit fleet.toml in place."""
    path = root / "fleet.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
