"""Helpers for fault-injection tests: small projects, background runners, a private server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg

from tests.conftest import Project, query, script

REVISIONS = {
    "8000aaaa0001": ('create items', None, '''
        op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.Text, nullable=False))
        op.execute("INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 50) g")
     '''),
    "8000aaaa0002": ('add price', "8000aaaa0001", '''
        op.add_column("items", sa.Column("price", sa.Numeric(10, 2), server_default="0",
                                         nullable=False))
        op.execute("SELECT pg_sleep({sleep})"){gate}
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

GATE = 8000
"""Class id of the advisory locks ``(GATE, NNN)`` that hold tenant ``sNNN`` of a gated shop
project in the middle of revision 2 while a test keeps them (see :func:`closed_gates`)."""

GATE_SQL = f"""
op.execute("SELECT pg_advisory_xact_lock({GATE}, substr(current_schema(), 7)::int)")"""


def shop_project(root: Path, url: str, tenants: int, *, sleep: float = 0.0, gate: bool = False
                 ) -> Project:
    """A one-service project with four revisions and ``tenants`` tenants on ``url``. With
    ``gate``, revision 2 of tenant ``sNNN`` first waits for the advisory lock (GATE, NNN)."""
    versions = root / "shop" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "shop" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "shop" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    for rev, (message, down, body) in REVISIONS.items():
        body = textwrap.dedent(body).strip().format(sleep=sleep, gate=GATE_SQL if gate else "")
        (versions / f"{rev}.py").write_text(
            f'"""{message}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n"
            + textwrap.indent(body, "    ")
            + "\n\n\ndef downgrade():\n    pass\n")
    names = ", ".join(f'"s{i:03d}"' for i in range(tenants))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\n\n'
        '[services.shop]\npath = "shop"\nschema = "shop_{tenant}"\n')
    return Project(root, {"DATABASE_URI": url}, url, url)


def default_sigint() -> None:
    """``preexec_fn`` of a child that must react to Ctrl-C as in a terminal.

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    across fork and exec: under ``pytest &`` (or CI started that way) the child would never
    see the SIGINT a test sends, and Python installs its KeyboardInterrupt handler only when
    SIGINT is at its default. Restored here, in the child, between fork and exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_fleet(project: Project, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.Popen[str]:
    """Start ``fleet`` in the background, in its own process group (killable as a pod), with
    SIGINT at its default whatever this process inherited."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    return subprocess.Popen([script("fleet"), *args], cwd=project.root,
                            env={**base, **project.env, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=default_sigint)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the runner and its workers, as when a pod is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


@contextlib.contextmanager
def closed_gates(url: str, tenants: Iterable[int]) -> Iterator[psycopg.Connection]:
    """Keep the gates of these tenants (of a gated shop project) closed until the block ends:
    their targets stop in the middle of revision 2, inside their transactions, until then."""
    holder = psycopg.connect(url, autocommit=True)
    try:
        for tenant in tenants:
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (GATE, tenant))
        yield holder
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()


def wait_until_mid_run(url: str, runner: subprocess.Popen[str], *, done: int, waiting: int,
                       timeout: float = 120) -> None:
    """Block until ``runner`` stands in the middle of its work on ``url``: ``done`` targets
    committed (their ``alembic_version`` tables are visible) and ``waiting`` targets held at a
    closed gate inside their transactions. Synchronises on the database's state, never on a
    guess of how long anything takes on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert runner.poll() is None, "fleet ended before the test could catch it mid-run"
        committed, held = query(url, """
            SELECT (SELECT count(*) FROM pg_tables
                    WHERE tablename = 'alembic_version' AND schemaname LIKE 'shop\\_%%'),
                   (SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND NOT granted AND classid = %s
                      AND database = (SELECT oid FROM pg_database
                                      WHERE datname = current_database()))""", (GATE,))[0]
        if committed >= done and held >= waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"fleet did not reach {done} done and {waiting} waiting in {timeout} s")


def advisory_locks(url: str) -> int:
    """Advisory locks held in ``url``'s database. pg_locks lists the whole server's locks, and
    other tests (other xdist workers, other people's runs) hold theirs in their databases."""
    return query(url, """
        SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""")[0][0]


def wait_no_advisory_locks(url: str, timeout: float = 30) -> None:
    """The advisory locks of a runner that died are gone once the server noticed: its backend
    ends when it sees the closed connection, which takes a moment."""
    deadline = time.monotonic() + timeout
    while advisory_locks(url):
        if time.monotonic() > deadline:
            raise AssertionError("advisory locks still held after the runner ended")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The direct children of process ``pid`` (a runner's workers), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def kill_runner_or_a_worker(runner: subprocess.Popen[str], victim: str) -> int:
    """Kill the whole runner (``victim`` starting with ``runner``) or one of its workers,
    then wait for the runner to end; returns how many processes were killed."""
    if victim.startswith("runner"):
        kill_group(runner)
        return 1
    killed = 0
    deadline = time.monotonic() + 10  # a loaded machine may start the pool late
    while not children(runner.pid) and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in children(runner.pid)[:1]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    runner.communicate(timeout=300)
    return killed
