"""The image's virtual environment starts from bytecode.

The Dockerfile builds its venv with ``deploy/image/build-venv.sh`` and runs ``fleet`` with
``PYTHONDONTWRITEBYTECODE=1``, as a non-root user: a module without valid bytecode there is
compiled again at every start of every command (1.2 s of imports instead of 0.4 s on the
machine that found it). The script is run here as the Dockerfile runs it, the sources' file
times are then changed (as a build that rewrites them does), and a migration and a status
of a small project run on the venv's ``fleet`` with the import system's verbose log: every
module loaded from the venv must come from its bytecode, and none may be written.
A source replaced afterwards (as a derived image may patch one) must run as it now reads.
(No Docker daemon is needed: the base image's standard library, compiled by the Dockerfile's
runtime stage, is not covered here.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import helper_service, script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "image" / "build-venv.sh"
SOURCE_FROM_SOURCE = re.compile(r"^# code object from (?P<path>/\S+\.py)$", re.MULTILINE)
"""A verbose import log's line for a module compiled from its source (a module loaded from
bytecode is logged as ``# code object from '<path>.pyc'``, quoted)."""


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The venv as the Dockerfile's build stage makes it, from a copy of the source tree
    (only what .dockerignore lets in), the sources' file times changed afterwards; removed
    at the end (110 MB)."""
    work = tmp_path_factory.mktemp("image")
    tree = work / "src-tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns(
        "__pycache__", "*.py[cod]", "*.egg-info"))
    venv = work / "venv"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1",
           "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    built = subprocess.run(["sh", str(SCRIPT), str(venv)], cwd=tree, env=env,
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, ("building the image's venv needs pip and the package "
                                   "index:\n" + built.stdout[-3000:] + built.stderr[-3000:])
    for path in venv.rglob("*.py"):
        os.utime(path, (946684800, 946684800))  # 2000-01-01: not what the bytecode saw
    yield venv
    shutil.rmtree(work, ignore_errors=True)


def test_every_module_of_the_image_venv_has_bytecode_checked_against_its_source(
        image_venv: Path) -> None:
    """All of them, not only what one command imports: telemetry (OpenTelemetry, the
    Prometheus client) is loaded only where a platform configures it."""
    sources = [p for p in image_venv.rglob("*.py") if "__pycache__" not in p.parts]
    assert len(sources) > 1000
    kinds: dict[str, list[str]] = {}
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        flags = (int.from_bytes(cached.read_bytes()[4:8], "little") if cached.exists()
                 else None)
        kind = {None: "none", 0: "time-stamped", 1: "unchecked hash", 3: "checked hash"
                }.get(flags, f"flags {flags}")
        kinds.setdefault(kind, []).append(str(source.relative_to(image_venv)))
    assert set(kinds) == {"checked hash"}, {k: (len(v), v[:5]) for k, v in kinds.items()}


def _bytecode_files(venv: Path) -> set[Path]:
    return set(venv.rglob("*.pyc"))


def _env(db_url: str, **extra: str) -> dict[str, str]:
    """This environment for a run of ``fleet`` on ``db_url``, without what would point it
    elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URI", "TENANTS", "FLEET_CONFIG", "PYTHONPATH")}
    return {**env, "DATABASE_URI": db_url, **extra}


def _reads_history(fleet: str, project: Path, env: dict[str, str]) -> bool:
    """Whether a ``fleet status`` read the history through Alembic (its kept reading was
    not used): the import log then shows ``alembic.script``."""
    done = subprocess.run([fleet, "status", "--json"], cwd=project,
                          env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 3), done.stderr[-3000:]
    return re.search(r"\| +alembic\.script$", done.stderr, re.MULTILINE) is not None


def _project(root: Path) -> Path:
    """A service of one revision, two tenants."""
    project = root / "project"
    versions = helper_service(project / "svc")
    (versions / "a1_first.py").write_text(textwrap.dedent("""\
        import sqlalchemy as sa
        from alembic import op

        revision = "a1"
        down_revision = None


        def upgrade():
            op.create_table("item", sa.Column("id", sa.BigInteger, primary_key=True))
        """))
    (project / "fleet.toml").write_text(
        'database = "${DATABASE_URI}"\ntenants = ["acme", "globex"]\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    return project


def test_every_module_fleet_imports_from_the_image_venv_is_bytecode(
        image_venv: Path, tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path)
    before = _bytecode_files(image_venv)
    env = _env(db_url, PYTHONDONTWRITEBYTECODE="1", PYTHONVERBOSE="1",
               PATH=os.pathsep.join([str(image_venv / "bin"), os.environ.get("PATH", "")]))
    fleet = str(image_venv / "bin" / "fleet")
    for argv in (["migrate", "--json"], ["status", "--json"]):
        done = subprocess.run([fleet, *argv], cwd=project, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        targets = json.loads(done.stdout)["targets"]
        assert len(targets) == 2
        compiled = sorted({m["path"] for m in SOURCE_FROM_SOURCE.finditer(done.stderr)
                           if Path(m["path"]).is_relative_to(image_venv)})
        assert compiled == [], f"fleet {argv[0]} compiled from source: {compiled[:20]}"
        loaded = [m for m in re.findall(r"^# code object from '(/\S+\.pyc)'$", done.stderr,
                                        re.MULTILINE) if Path(m).is_relative_to(image_venv)]
        assert len(loaded) > 100, "the verbose log shows no module of the venv loaded"
    assert _bytecode_files(image_venv) == before

    # A derived image that replaces a source (a patched module) runs what it holds now,
    # not the bytecode compiled from the old one.
    module = next((image_venv / "lib").glob("python3*/site-packages/alembic_fleet/exit_codes.py"))
    original = module.read_text()
    module.write_text(original + '\nimport sys\nsys.stderr.write("patched exit_codes\\n")\n')
    try:
        done = subprocess.run([fleet, "status", "--json"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        module.write_text(original)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "patched exit_codes" in done.stderr


def test_two_installs_of_fleet_keep_their_own_reading_of_a_history(
        image_venv: Path, tmp_path: Path, db_url: str) -> None:
    """A developer's fleet and another install of it (here the image's venv) run in turn on
    one project with one cache folder: each keeps its own reading of the revisions, instead
    of replacing the other's and reading the files through Alembic again at every run."""
    project = _project(tmp_path)
    env = _env(db_url, FLEET_CACHE_DIR=str(tmp_path / "cache"))
    installs = {"this": script("fleet"), "image": str(image_venv / "bin" / "fleet")}
    for round_ in range(2):
        for name, fleet in installs.items():
            read = _reads_history(fleet, project, env)
            assert read is (round_ == 0), (
                f"round {round_ + 1}, the {name} install: the history was "
                + ("read through Alembic again" if read else "not read at first"))


@pytest.mark.parametrize("given", ["existing", "build/../existing", "notyet/../existing",
                                   "dangling", "fresh"])
def test_the_script_never_builds_into_or_removes_what_it_did_not_make(
        tmp_path: Path, given: str) -> None:
    """The venv's directory must be new: a path that names something already there, even
    through a folder that the build itself would make (``build/``, which ``pip wheel``
    leaves in the tree), is refused before anything runs, and nothing of it is removed.
    ``fresh`` is new, but its ``.wheels`` folder is there: refused too, the venv's folder
    not left behind."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "existing").mkdir()
    (tree / "existing" / "data.txt").write_text("keep")
    (tree / "dangling").symlink_to(tree / "nowhere")
    (tree / "fresh.wheels").mkdir()
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    done = subprocess.run(["sh", str(SCRIPT), given], cwd=tree, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "give" in done.stderr or "remove it" in done.stderr
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before
    assert (tree / "existing" / "data.txt").read_text() == "keep"
    assert (tree / "dangling").is_symlink()


def test_a_fleet_reinstalled_at_the_same_version_reads_the_history_again(
        image_venv: Path, tmp_path: Path, db_url: str) -> None:
    """Installs of two commits of fleet share a version number (pip install from a Git URL,
    an editable checkout switched to another branch): a kept reading is trusted only by the
    install that wrote it, so the files of the fleet that reads revisions, rewritten by the
    new install, make the next run read the history through Alembic again."""
    project = _project(tmp_path)
    env = _env(db_url, FLEET_CACHE_DIR=str(tmp_path / "cache"))
    fleet = str(image_venv / "bin" / "fleet")
    package = next((image_venv / "lib").glob("python3*/site-packages/alembic_fleet"))

    assert _reads_history(fleet, project, env) is True
    assert _reads_history(fleet, project, env) is False
    # What reads a history: the scripts' reader, what reads it in a service's own
    # interpreter, and the names it reads by.
    for name in ("alembic_bridge/scripts.py", "remote.py", "model/identifiers.py"):
        reader = package / name
        original = reader.read_text()
        reader.write_text(original + "\n# another commit\n")
        try:
            assert _reads_history(fleet, project, env) is True, (
                f"{name} changed: a reading kept by another install of the same version "
                "was used")
            assert _reads_history(fleet, project, env) is False
        finally:
            reader.write_text(original)
        assert _reads_history(fleet, project, env) is True


def test_a_hint_never_names_the_wheel_the_venv_was_built_from(image_venv: Path,
                                                                tmp_path: Path,
                                                                db_url: str) -> None:
    """pip records where it installed fleet from (``direct_url.json``), and fleet's hints
    say how to install an extra again from there; the image's venv came from a wheel that
    the build removed, so a hint naming it sends the user to a file that is not there."""
    project = _project(tmp_path)
    recorded = next((image_venv / "lib").glob(
        "python3*/site-packages/alembic_fleet-*.dist-info/direct_url.json"))
    wheel = json.loads(recorded.read_text())["url"]
    assert wheel.startswith("file://") and wheel.endswith(".whl")
    assert not Path(wheel.removeprefix("file://")).exists()
    fleet = str(image_venv / "bin" / "fleet")
    asyncpg = db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    done = subprocess.run([fleet, "migrate", "--json"], cwd=project, env=_env(asyncpg),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    hint = json.loads(done.stdout)["error"]["hint"]
    assert "alembic-fleet[asyncpg]==" in hint, hint
    assert ".whl" not in hint and "file:" not in hint, hint
