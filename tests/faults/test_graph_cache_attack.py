"""Attacks on the revision graph kept between runs (``alembic_bridge.graph_cache``).

The promise: the cache changes nothing but speed. Each test builds a small project, lets
fleet keep its graph, changes something a plain Alembic reading would see, and checks that
the installed ``fleet`` reports what it reports with the cache turned off
(``FLEET_CACHE_DIR=""``), against a real PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Project, script
from tests.integration.test_graph_cache import _project, _write

OFF = {"FLEET_CACHE_DIR": ""}


def _status(project: Project, **kwargs: object) -> dict:
    result = project.fleet("status", "--json", **kwargs)  # type: ignore[arg-type]
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def _head(project: Project, **kwargs: object) -> list[str]:
    return _status(project, **kwargs)["services"]["svc"]["head"]


def _ini(project: Project, text: str) -> None:
    (project.root / "svc" / "alembic.ini").write_text("[alembic]\n" + text)


def test_a_relative_script_location_through_a_switched_link_is_read_again(
        tmp_path: Path, db_url: str) -> None:
    """``script_location = migrations`` (the form older ``alembic init`` wrote) where
    ``migrations`` is a link switched from one release's folder to the next: plain alembic
    reads the new release; the kept graph named the old folder, still there, unchanged."""
    project, marker, _cache = _project(tmp_path, db_url)
    service = project.root / "svc"
    os.rename(service / "migrations", service / "release-1")
    (service / "release-2").mkdir()
    (service / "release-2" / "env.py").write_text((service / "release-1" / "env.py").read_text())
    (service / "release-2" / "versions").mkdir()
    for number in (1, 2, 3):
        _write(service / "release-2" / "versions", number, marker)
    os.symlink("release-1", service / "migrations")
    _ini(project, "script_location = migrations\n")
    assert _head(project) == ["9c0000000002"]

    os.unlink(service / "migrations")
    os.symlink("release-2", service / "migrations")
    assert _head(project, env=OFF) == ["9c0000000003"]
    assert _head(project) == ["9c0000000003"]


def test_relative_version_locations_follow_the_working_directory_as_without_cache(
        tmp_path: Path, db_url: str) -> None:
    """Alembic reads a relative ``version_locations`` from the working directory: a graph
    kept by a run elsewhere must not answer for a run from the service folder."""
    project, _marker, _cache = _project(tmp_path, db_url)
    _ini(project, "script_location = %(here)s/migrations\n"
                  "version_locations = migrations/versions\n")
    service = project.root / "svc"
    first = _head(project)  # from the project folder
    assert _head(project, cwd=service, env=OFF) == ["9c0000000002"]
    assert first == []
    assert _head(project, cwd=service) == ["9c0000000002"]
    assert _head(project) == first


def test_a_project_below_a_folder_whose_name_is_not_utf8_is_read(tmp_path: Path,
                                                                 db_url: str) -> None:
    """A folder name that is not UTF-8 (an old archive, another locale): fleet works with
    the cache off, and must work with it on (it crashed: 'surrogates not allowed')."""
    odd = tmp_path / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    project, _marker, cache = _project(odd, db_url)
    for _ in range(2):
        result = project.fleet("status", "--json")
        assert result.returncode in (0, 3), result.stdout + result.stderr
        assert json.loads(result.stdout)["services"]["svc"]["head"] == ["9c0000000002"]
    assert _head(project, env=OFF) == ["9c0000000002"]
    assert len(list((cache / "graphs").glob("*.json"))) == 1  # and it is kept


def test_sourceless_spelled_in_capitals_is_never_cached(tmp_path: Path, db_url: str) -> None:
    """Alembic's option names ignore case: ``Sourceless = true`` loads revisions shipped as
    ``__pycache__`` files only, which the cache does not look at."""
    project, marker, _cache = _project(tmp_path, db_url)
    _ini(project, "script_location = %(here)s/migrations\nSourceless = true\n")
    assert _head(project) == ["9c0000000002"]

    versions = project.root / "svc" / "migrations" / "versions"
    third = _write(versions, 3, marker)
    compiled = importlib.util.cache_from_source(str(third))
    py_compile.compile(str(third), cfile=compiled, doraise=True)
    third.unlink()  # shipped compiled only
    assert _head(project, env=OFF) == ["9c0000000003"]
    assert _head(project) == ["9c0000000003"]


def test_a_revision_id_read_from_another_module_is_not_kept(tmp_path: Path,
                                                            db_url: str) -> None:
    """A revision whose ``down_revision`` comes from a module of the service: changing that
    module changes the graph plain Alembic reads, without touching a version file."""
    project, marker, _cache = _project(tmp_path, db_url)
    service = project.root / "svc"
    _ini(project, "script_location = %(here)s/migrations\nprepend_sys_path = .\n")
    (service / "chain.py").write_text("PARENT = '9c0000000002'\n")
    third = _write(service / "migrations" / "versions", 3, marker)
    third.write_text(third.read_text().replace(
        "down_revision = '9c0000000002'", "from chain import PARENT\ndown_revision = PARENT"))
    assert _head(project) == ["9c0000000003"]

    (service / "chain.py").write_text("PARENT = '9c0000000001'\n")  # a branch now
    expected = sorted(_head(project, env=OFF))
    assert expected == ["9c0000000002", "9c0000000003"]
    assert sorted(_head(project)) == expected


def test_a_package_version_location_follows_the_package_found_now(tmp_path: Path,
                                                                   db_url: str) -> None:
    """``version_locations = releases:versions``: the package is found through the path
    (here ``PYTHONPATH``, as an editable install switched to another checkout would): the
    kept graph named the first checkout's folder, still there, unchanged."""
    project, marker, _cache = _project(tmp_path, db_url)
    checkouts = []
    for count in (2, 3):
        checkout = tmp_path / f"checkout-{count}"
        versions = checkout / "releases" / "versions"
        versions.mkdir(parents=True)
        (checkout / "releases" / "__init__.py").write_text("")
        for number in range(1, count + 1):
            _write(versions, number, marker)
        checkouts.append(str(checkout))
    _ini(project, "script_location = %(here)s/migrations\nversion_locations = releases:versions\n")
    assert _head(project, env={"PYTHONPATH": checkouts[0]}) == ["9c0000000002"]

    now = {"PYTHONPATH": checkouts[1]}
    assert _head(project, env={**now, **OFF}) == ["9c0000000003"]
    assert _head(project, env=now) == ["9c0000000003"]


def _alembic_in(venv_python: Path, *, recursive: bool) -> None:
    """An Alembic installed in a service's own environment (its site-packages, as pip
    puts it there); ``recursive=False``: as Alembic before 1.10 read version folders, not
    looking into subfolders whatever ``recursive_version_locations`` says."""
    import alembic

    purelib = next(venv_python.parent.parent.glob("lib/python*/site-packages"))
    target = purelib / "alembic"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(alembic.__file__).parent, target, copy_function=shutil.copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    if not recursive:
        init = target / "__init__.py"
        init.write_text(init.read_text().replace(f'"{alembic.__version__}"', '"1.9.4"'))
        base = target / "script" / "base.py"
        text = base.read_text()
        old = "if not scriptdir.recursive_version_locations:\n                break"
        assert old in text
        base.write_text(text.replace(old, "if True:\n                break"))


def test_an_alembic_upgraded_in_a_service_interpreter_is_seen(tmp_path: Path,
                                                              db_url: str) -> None:
    """A service with its own environment reads its graph there: upgrading the Alembic of
    that environment (to one that reads subfolders) changes the graph, and fleet must see
    it as it sees an upgrade of its own Alembic."""
    from tests.integration.test_real_projects import _own_venv

    project, marker, _cache = _project(tmp_path, db_url)
    service = project.root / "svc"
    python = _own_venv(service, "unused_mod", "1")  # used by default: svc/.venv
    _alembic_in(python, recursive=False)
    _ini(project, "script_location = %(here)s/migrations\n"
                  "recursive_version_locations = true\n")
    (service / "migrations" / "versions" / "later").mkdir()
    _write(service / "migrations" / "versions" / "later", 3, marker)
    assert _head(project) == ["9c0000000002"]  # that Alembic does not look into 'later'

    _alembic_in(python, recursive=True)  # pip install -U alembic in the service's venv
    assert _head(project, env=OFF) == ["9c0000000003"]
    assert _head(project) == ["9c0000000003"]
    executed = len(marker.read_text().splitlines())
    assert _head(project) == ["9c0000000003"]
    assert len(marker.read_text().splitlines()) == executed  # still kept, for the same


def _free_uid() -> int:
    import pwd

    for uid in range(23456, 23556):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.skip("no free user id")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run fleet as a user without a home")
def test_no_home_writes_no_cache_into_the_working_directory(db_url: str) -> None:
    """Run as a user id without a passwd entry and without ``HOME`` (``env -i``, a cron
    job, a container started with an arbitrary id): ``~`` cannot be expanded, and fleet
    wrote ``./~/.cache/alembic-fleet/`` into the project it was run in."""
    top = Path(tempfile.mkdtemp(prefix="fleet-nohome-"))  # pytest's folders are private
    try:
        top.chmod(0o777)  # the revisions append to a file there
        project, _marker, _cache = _project(top, db_url)
        project.root.chmod(0o777)  # a project the user may write to
        for env_name in ("FLEET_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
            project.env.pop(env_name, None)
        before = sorted(p.name for p in project.root.iterdir())
        uid = _free_uid()
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("HOME", "XDG_CACHE_HOME", "FLEET_CACHE_DIR")}
        result = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             script("fleet"), "heads", "--json"], cwd=project.root,
            env={**environment, **project.env}, capture_output=True, text=True, timeout=300)
        # heads reads the graph and no database (the embedded server's socket is not this
        # user's to open)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["heads"]["svc"] == ["9c0000000002"]
        assert sorted(p.name for p in project.root.iterdir()) == before
    finally:
        shutil.rmtree(top, ignore_errors=True)
