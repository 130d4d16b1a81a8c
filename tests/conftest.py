"""Shared fixtures: a real PostgreSQL for every test that needs one.

``FLEET_TEST_DATABASE_URL`` names a server to use (any database on it; tests create their
own). Without it the embedded PostgreSQL is started once per session in a temporary folder.
Each test gets fresh databases, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "elevaite"

DDL_LOG = """
CREATE TABLE public.fleet_test_ddl_log (
    id bigserial PRIMARY KEY,
    command_tag text NOT NULL,
    object_identity text,
    schema_name text
);
CREATE FUNCTION public.fleet_test_log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO public.fleet_test_ddl_log (command_tag, object_identity, schema_name)
        VALUES (r.command_tag, r.object_identity, r.schema_name);
    END LOOP;
END $$;
CREATE EVENT TRIGGER fleet_test_ddl ON ddl_command_end
    EXECUTE FUNCTION public.fleet_test_log_ddl();
"""


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Run in parallel by default: ``-n auto --dist worksteal`` unless ``-n`` was given.

    Set here rather than in ``addopts`` so that ``-p no:xdist`` (and a run without
    pytest-xdist installed) still works: ``addopts = -n auto`` would make those a usage
    error. Runs before xdist's own hook, which turns these options into workers; xdist
    workers themselves (``workerinput``) and ``--pdb`` sessions are left alone."""
    if (not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput")
            or config.getoption("usepdb", False)):
        return
    if config.getoption("numprocesses", None) is None:
        config.option.numprocesses = "auto"
        if config.getoption("dist", "no") == "no":
            config.option.dist = "worksteal"


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, port, user and query)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    parts = []
    user = info.get("user") or "postgres"
    password = info.get("password")
    auth = user + (f":{password}" if password else "")
    host = info.get("host") or ""
    if host.startswith("/"):
        port = f"&port={info['port']}" if info.get("port") else ""
        return f"postgresql://{auth}@/{name}?host={host}{port}"
    port = f":{info['port']}" if info.get("port") else ""
    parts.append(f"postgresql://{auth}@{host}{port}/{name}")
    return parts[0]


def private_tmp(prefix: str) -> Path:
    """A temporary folder outside pytest's own: pytest resets its base folder to mode 0700
    whenever another session starts, which would lock out an embedded server running as
    its own OS user (as it does when the tests run as root)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


THROWAWAY_SERVER = (
    # The session's embedded server is deleted afterwards: no need to survive a crash. These
    # make CREATE / DROP DATABASE (whose checkpoint waits for fsync) cheap.
    "ALTER SYSTEM SET fsync = off",
    "ALTER SYSTEM SET full_page_writes = off",
    "ALTER SYSTEM SET synchronous_commit = off",
    "SELECT pg_reload_conf()",
)


@pytest.fixture(scope="session", autouse=True)
def graph_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The commands the tests run keep their revision graphs in a folder of this session
    (each test's project is a new path: a developer's ~/.cache would collect thousands of
    entries), unless FLEET_CACHE_DIR is set already."""
    if "FLEET_CACHE_DIR" in os.environ:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLEET_CACHE_DIR", str(tmp_path_factory.mktemp("graph-cache")))
        yield


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A superuser URL of the test server (its maintenance database).

    Under pytest-xdist this is one server per worker: each worker starts its own embedded
    server, in its own temporary folder (the data and the Unix socket live there, so two
    workers never share a port or a socket)."""
    configured = os.environ.get("FLEET_TEST_DATABASE_URL")
    if configured:
        yield _with_database(configured, "postgres")
        return
    from alembic_fleet.embedded import EmbeddedServer

    folder = private_tmp("fleet-test-pg-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        url = server.url("postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in THROWAWAY_SERVER:
                conn.execute(statement)
        yield url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


class Dropper:
    """Drops the tests' databases in a background thread.

    ``DROP DATABASE`` waits for a checkpoint: seconds on a busy shared server, which every
    test used to spend in its teardown. A dropped database is never used again, so the test
    goes on at once, and drops that are due together run at once and share checkpoints.
    Every drop is done (or reported) before the session ends."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.failures: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fleet-test-dropper",
                                        daemon=True)
        self._thread.start()

    def drop(self, names: list[str]) -> None:
        for name in names:
            self._queue.put(name)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            names = [name for name in batch if name is not None]
            if names:
                with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                    list(pool.map(self._drop, names))
            if None in batch:
                return

    def _drop(self, name: str) -> None:
        try:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
        except psycopg.Error as exc:
            self.failures.append(f"{name}: {exc}")


@pytest.fixture(scope="session")
def dropper(server_url: str) -> Iterator[Dropper]:
    dropper = Dropper(server_url)
    try:
        yield dropper
    finally:
        dropper.close()
    assert not dropper.failures, f"test databases not dropped: {dropper.failures}"


@dataclass
class DatabaseFactory:
    """Creates uniquely named databases on the test server; they are dropped after the test
    (in the background, see :class:`Dropper`)."""

    server_url: str
    created: list[str]

    def create(self, prefix: str = "fleet_t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return _with_database(self.server_url, name)


@pytest.fixture
def databases(server_url: str, dropper: Dropper) -> Iterator[DatabaseFactory]:
    dbs = DatabaseFactory(server_url, [])
    try:
        yield dbs
    finally:
        dropper.drop(dbs.created)


@pytest.fixture
def db_url(databases: DatabaseFactory) -> str:
    """A fresh, empty database with a DDL event trigger logging every DDL command."""
    url = databases.create()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DDL_LOG)
    return url


def query(url: str, text: str, params: tuple = ()) -> list[tuple]:
    """Run one query on ``url`` and return its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text, params or None)
        return cur.fetchall() if cur.description else []


def ddl_count(url: str) -> int:
    return query(url, "SELECT count(*) FROM public.fleet_test_ddl_log")[0][0]


def schemas(url: str, like: str = "%") -> set[str]:
    rows = query(url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (like,))
    return {r[0] for r in rows}


def tables(url: str, schema: str) -> set[str]:
    rows = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {r[0] for r in rows}


def version(url: str, schema: str, table: str = "alembic_version") -> list[str]:
    rows = query(url, sql.SQL("SELECT version_num FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)).as_string(None))
    return sorted(r[0] for r in rows)


@dataclass
class Project:
    """A copy of a project on disk, with the environment that points it at test databases."""

    root: Path
    env: dict[str, str]
    db_url: str
    ingestion_url: str

    def fleet(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the installed ``fleet`` command as a user would."""
        return run(["fleet", *args], cwd=cwd or self.root, env={**self.env, **(env or {})},
                   input=input)

    def alembic(self, service_dir: str, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        """Run plain ``alembic`` inside a service folder."""
        return run(["alembic", *args], cwd=self.root / service_dir,
                   env={**self.env, **(env or {})})


def helper_service(folder: Path) -> Path:
    """A service folder whose ``env.py`` is fleet's three lines (``alembic.ini`` with its
    ``script_location``); returns its empty ``versions`` folder."""
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (folder / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    return versions


def script(name: str) -> str:
    """Path of an installed console script (fleet, alembic) of this interpreter."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed next to {sys.executable}")
    return found


def run(argv: list[str], *, cwd: Path, env: dict[str, str], input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URI", "DATABASE_URL", "INGESTION_DATABASE_URL", "TENANTS",
                         "ALEMBIC_SCHEMA", "FLEET_CONFIG", "FLEET_SCRATCH_DATABASE_URL")}
    # As in an activated environment: this interpreter's scripts (fleet, alembic) come first.
    base["PATH"] = os.pathsep.join([str(Path(script("fleet")).parent), base.get("PATH", "")])
    command = argv[0]
    if command in ("fleet", "alembic"):
        command = script(command)
    return subprocess.run([command, *argv[1:]], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, input=input, timeout=300)


def copy_example(root: Path) -> None:
    """The bundled example platform copied to ``root``, without what running it left there
    (its embedded server's data, the workflow service's own .venv, build output)."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(
        ".fleet", "__pycache__", ".venv", "build", "*.egg-info"))


@pytest.fixture
def example(tmp_path: Path, db_url: str, databases: DatabaseFactory) -> Project:
    """The bundled example platform, copied, pointed at a fresh database (and a second
    database for the ingestion service)."""
    root = tmp_path / "elevaite"
    copy_example(root)
    ingestion = databases.create("fleet_ing")
    with psycopg.connect(ingestion, autocommit=True) as conn:
        conn.execute(DDL_LOG)
    env = {"DATABASE_URI": db_url, "INGESTION_DATABASE_URL": ingestion}
    return Project(root, env, db_url, ingestion)


@contextlib.contextmanager
def temporary_role(db_url: str, prefix: str, options: str = "") -> Iterator[str]:
    """A role of its own, ``CREATE ROLE name options`` (roles are cluster-wide: it is
    dropped afterwards, with what it owns in ``db_url``'s database)."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    query(db_url, f"CREATE ROLE {role} {options}".strip())
    try:
        yield role
    finally:
        query(db_url, f"DROP OWNED BY {role} CASCADE")
        query(db_url, f"DROP ROLE IF EXISTS {role}")
