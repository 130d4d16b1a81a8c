"""Helpers for fault-injection tests: small projects, background runners, a private server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
from pathlib import Path

from tests.conftest import Project, script

REVISIONS = {
    "8000aaaa0001": ('create items', None, '''
        op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.Text, nullable=False))
        op.execute("INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 50) g")
     '''),
    "8000aaaa0002": ('add price', "8000aaaa0001", '''
        op.add_column("items", sa.Column("price", sa.Numeric(10, 2), server_default="0",
                                         nullable=False))
        op.execute("SELECT pg_sleep({sleep})")
     '''),
    "8000aaaa0003": ('create orders', "8000aaaa0002", '''
        op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id")))
        op.execute("SELECT pg_sleep({sleep})")
     '''),
    "8000aaaa0004": ('index orders', "8000aaaa0003", '''
        op.create_index("ix_orders_item", "orders", ["item_id"])
     '''),
}

TABLES_AT = {
    None: set(),
    "8000aaaa0001": {"items"},
    "8000aaaa0002": {"items"},
    "8000aaaa0003": {"items", "orders"},
    "8000aaaa0004": {"items", "orders"},
}
"""The tables (besides alembic_version) a schema must hold at each revision."""

HEAD = "8000aaaa0004"


def shop_project(root: Path, url: str, tenants: int, *, sleep: float = 0.0) -> Project:
    """A one-service project with four revisions and ``tenants`` tenants on ``url``."""
    versions = root / "shop" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "shop" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "shop" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    for rev, (message, down, body) in REVISIONS.items():
        (versions / f"{rev}.py").write_text(
            f'"""{message}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip().format(sleep=sleep), "    ")
            + "\n\n\ndef downgrade():\n    pass\n")
    names = ", ".join(f'"s{i:03d}"' for i in range(tenants))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\n\n'
        '[services.shop]\npath = "shop"\nschema = "shop_{tenant}"\n')
    return Project(root, {"DATABASE_URI": url}, url, url)


def start_fleet(project: Project, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.Popen[str]:
    """Start ``fleet`` in the background, in its own process group (killable as a pod)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    return subprocess.Popen([script("fleet"), *args], cwd=project.root,
                            env={**base, **project.env, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the runner and its workers, as when a pod is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
