"""A full disk in the middle of a run: targets fail cleanly, the ledger stays complete.

The test database lives in a tablespace on a 6 MB tmpfs, so the migrations run out of
space part way. Every target must end either migrated (at head, with its ledger rows) or
rolled back (no schema, no rows); once there is room again a rerun completes, and the
ledger agrees with the version tables. Needs root (to mount) and a server on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import private_tmp, query, version
from tests.faults.conftest import HEAD, shop_project
from tests.faults.test_ledger_agreement import _assert_ledger_agrees

pytestmark = pytest.mark.slow


def _tmpfs(prefix: str, size: str) -> Path:
    """A new folder with a tmpfs of ``size`` mounted on it (skips without root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = Path(f"/tmp/{prefix}-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        mount.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    return mount


@pytest.fixture
def tiny_database():
    """A database in a tablespace on a 6 MB tmpfs, on a private embedded server: a full
    tablespace makes the server's checkpoints fail, which must not disturb other tests."""
    mount = _tmpfs("fleet-tiny", "6M")
    folder = private_tmp("fleet-test-disk-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        admin = server.url("postgres")
        data_dir = query(admin, "SHOW data_directory")[0][0]
        owner = os.stat(data_dir)
        location = mount / "ts"
        location.mkdir()
        os.chown(location, owner.st_uid, owner.st_gid)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE tiny LOCATION '{location}'")
            conn.execute("CREATE DATABASE tiny TABLESPACE tiny")
        yield server.url("tiny"), mount
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_fails_targets_cleanly_and_keeps_the_ledger(tiny_database, tmp_path: Path
                                                                ) -> None:
    url, mount = tiny_database
    tenants = 40
    project = shop_project(tmp_path / "p", url, tenants)
    first = project.fleet("migrate", "--json", "--jobs", "2", "--retries", "0")
    payload = json.loads(first.stdout)
    if "error" in payload:  # full before the run could even record itself: nothing ran
        assert first.returncode == 2 and "ledger" in payload["error"]["message"]
    else:
        outcomes = {t["outcome"] for t in payload["targets"]}
        assert "failed" in outcomes, "the disk never filled: make the tmpfs smaller"
        assert first.returncode == 1
        for target in payload["targets"]:
            if target["outcome"] == "migrated":
                assert version(url, target["schema"]) == [HEAD]
    _assert_ledger_agrees(url, tenants)
    subprocess.run(["mount", "-o", "remount,size=256M", str(mount)], check=True)
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert all(version(url, f"shop_s{i:03d}") == [HEAD] for i in range(tenants))
    _assert_ledger_agrees(url, tenants)


def test_a_full_disk_while_recording_a_tenant_is_said_and_changes_nothing(
        tmp_path: Path, db_url: str) -> None:
    """fleet.toml on a full filesystem: 'tenants add' said "internal error ... this is a
    bug"; it says the disk is full, and the file is as it was."""
    mount = _tmpfs("fleet-full", "1M")
    try:
        project = shop_project(mount / "p", db_url, 1)
        before = (project.root / "fleet.toml").read_text()
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(filler, b"x" * 4096)
        os.close(filler)
        result = project.fleet("tenants", "add", "x", "--no-migrate",
                               env={"FLEET_CACHE_DIR": ""})
        assert result.returncode == 1, result.stdout + result.stderr
        assert "No space left on device" in result.stderr, result.stderr
        assert "bug" not in result.stderr and "Traceback" not in result.stderr
        assert (project.root / "fleet.toml").read_text() == before
        assert not list(project.root.glob(".fleet.toml.*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)
