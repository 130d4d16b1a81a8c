"""The revision graph kept between runs (``alembic_bridge.graph_cache``), through the
installed ``fleet`` against real PostgreSQL.

What a user sees: a command that runs no revision does not execute the revision files again
while they are unchanged (a revision with a side effect on import shows it), and any change
to the files, the alembic.ini or the env.py is seen at once, as if there were no cache. A
cache folder that cannot be used changes nothing but the speed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.conftest import Project, helper_service, version

REVISION = '''\
"""{message}"""
import pathlib

pathlib.Path({marker!r}).open("a").write("{rev}\\n")

from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("t_{rev}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("t_{rev}")
'''


def _project(tmp_path: Path, db_url: str) -> tuple[Project, Path, Path]:
    root = tmp_path / "proj"
    versions = helper_service(root / "svc")
    (root / "fleet.toml").write_text(textwrap.dedent('''\
        database = "${DATABASE_URI}"
        tenants = ["a", "b"]

        [services.svc]
        path = "svc"
        schema = "svc_{tenant}"
        '''))
    marker = tmp_path / "imported.txt"
    cache = tmp_path / "cache"
    for number in (1, 2):
        _write(versions, number, marker)
    return Project(root, {"DATABASE_URI": db_url, "FLEET_CACHE_DIR": str(cache)},
                   db_url, db_url), marker, cache


def _write(versions: Path, number: int, marker: Path, message: str = "") -> Path:
    rev = f"9c{number:010d}"
    down = f"9c{number - 1:010d}" if number > 1 else None
    path = versions / f"{rev}_r{number}.py"
    path.write_text(REVISION.format(rev=rev, down=down, marker=str(marker),
                                    message=message or f"revision {number}"))
    return path


def _status(project: Project) -> dict:
    result = project.fleet("status", "--json")
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return json.loads(result.stdout)


def _imports(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_an_unchanged_history_is_not_executed_again(tmp_path: Path, db_url: str) -> None:
    project, marker, cache = _project(tmp_path, db_url)
    result = project.fleet("migrate")
    assert result.returncode == 0, result.stdout + result.stderr
    after_migrate = _imports(marker)
    assert after_migrate >= 2  # each revision file ran at least once
    assert len(list((cache / "graphs").glob("*.json"))) == 1

    for _ in range(2):
        payload = _status(project)
        assert payload["summary"]["at_head"] == 2
        noop = project.fleet("migrate", "--json")
        assert noop.returncode == 0, noop.stdout + noop.stderr
        assert {t["outcome"] for t in json.loads(noop.stdout)["targets"]} == {"skipped"}
    assert _imports(marker) == after_migrate  # nothing was executed again
    assert version(db_url, "svc_a") == ["9c0000000002"]


def test_a_changed_history_is_read_again_at_once(tmp_path: Path, db_url: str) -> None:
    project, marker, _cache = _project(tmp_path, db_url)
    versions = project.root / "svc" / "migrations" / "versions"
    assert project.fleet("migrate").returncode == 0
    assert _status(project)["services"]["svc"]["head"] == ["9c0000000002"]

    third = _write(versions, 3, marker)  # a new file
    payload = _status(project)
    assert payload["services"]["svc"]["head"] == ["9c0000000003"]
    assert {t["pending"] for t in payload["targets"]} == {1}

    third.unlink()  # removed again
    assert _status(project)["services"]["svc"]["head"] == ["9c0000000002"]

    _write(versions, 2, marker, message="renamed in place")  # same name, new content
    history = project.fleet("history", "svc")
    assert history.returncode == 0, history.stdout + history.stderr
    assert "renamed in place" in history.stdout

    # The alembic.ini moves the versions elsewhere: the other folder's history is read.
    other = project.root / "svc" / "other_versions"
    other.mkdir()
    _write(other, 1, marker, message="only one here")
    (project.root / "svc" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\n"
        "version_locations = %(here)s/other_versions\n")
    payload = _status(project)
    assert payload["services"]["svc"]["head"] == ["9c0000000001"]
    assert {t["state"] for t in payload["targets"]} == {"ahead"}


def test_a_cache_folder_that_cannot_be_used_changes_nothing_but_speed(tmp_path: Path,
                                                                      db_url: str) -> None:
    project, _marker, cache = _project(tmp_path, db_url)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (str(blocker), str(blocker / "below")):
        result = project.fleet("migrate", "--json", env={"FLEET_CACHE_DIR": folder})
        assert result.returncode == 0, result.stdout + result.stderr
        assert _status(project)["summary"]["at_head"] == 2
    assert blocker.read_text() == "not a folder"

    # A damaged entry is read as no entry.
    assert project.fleet("status").returncode == 0
    [entry] = (cache / "graphs").glob("*.json")
    for damage in ("{not json", json.dumps({"format": 1}), "[]", ""):
        entry.write_text(damage)
        assert _status(project)["services"]["svc"]["head"] == ["9c0000000002"]


def test_an_empty_cache_setting_turns_it_off(tmp_path: Path, db_url: str) -> None:
    project, marker, cache = _project(tmp_path, db_url)
    off = {"FLEET_CACHE_DIR": ""}
    assert project.fleet("migrate", env=off).returncode == 0
    before = _imports(marker)
    assert project.fleet("status", env=off).returncode == 0
    assert _imports(marker) > before  # read through Alembic again
    assert not cache.exists()


def test_revisions_run_after_a_kept_graph_import_what_env_py_puts_on_the_path(
        tmp_path: Path, db_url: str) -> None:
    """A graph from the cache loaded no revision; the first command that runs one loads
    them as plain alembic does, after env.py's own ``sys.path.insert``."""
    project, _marker, _cache = _project(tmp_path, db_url)
    service = project.root / "svc"
    (service / "src" / "shapes").mkdir(parents=True)
    (service / "src" / "shapes" / "__init__.py").write_text("WIDTH = 11\n")
    (service / "migrations" / "env.py").write_text(
        "import os\nimport sys\n\n"
        "sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'src'))\n\n"
        "from alembic_fleet.env import run_migrations  # noqa: E402\n\nrun_migrations()\n")
    versions = service / "migrations" / "versions"
    third = _write(versions, 3, tmp_path / "imported.txt")
    third.write_text(third.read_text().replace(
        "from alembic import op", "from shapes import WIDTH\nfrom alembic import op").replace(
        'sa.Column("id", sa.Integer, primary_key=True)',
        'sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.String(WIDTH))'))
    first = project.fleet("migrate", env={"TENANTS": "a"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert _status(project)["services"]["svc"]["head"] == ["9c0000000003"]  # kept
    for args in (("migrate", "--json"), ("check", "--json"), ("migrate", "--sql")):
        result = project.fleet(*args)
        assert result.returncode in (0, 3), (args, result.stdout, result.stderr)
    assert version(db_url, "svc_b") == ["9c0000000003"]
