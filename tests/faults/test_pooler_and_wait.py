"""A transaction-pooling PgBouncer is refused; waiting for a database."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import private_tmp, run, schemas, version
from tests.faults.conftest import HEAD, shop_project

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer"
                                          if Path("/usr/sbin/pgbouncer").exists() else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_pgbouncer(db_url: str, mode: str, folder: Path) -> tuple[subprocess.Popen, str]:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    host = info.get("host") or "127.0.0.1"
    target = f"host={host} port={info.get('port') or 5432}"
    port = _free_port()
    folder.chmod(0o755)
    (folder / "users.txt").write_text('"postgres" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = {target}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
        f"listen_port = {port}\nauth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        f"pool_mode = {mode}\nunix_socket_dir =\nlogfile = {folder / 'pgbouncer.log'}\n"
        "max_client_conn = 50\ndefault_pool_size = 10\n")
    for path in folder.iterdir():
        path.chmod(0o644)
    command = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        owner = Path(host).owner() if host.startswith("/") else "postgres"
        account = pwd.getpwnam(owner)
        os.chown(folder, account.pw_uid, account.pw_gid)  # for its log file
        command = ["runuser", "-u", owner, "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    url = f"postgresql://postgres@127.0.0.1:{port}/{info['dbname']}"
    return process, url


@pytest.mark.slow
@pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed")
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_pgbouncer_transaction_pooling_is_refused(tmp_path: Path, db_url: str, mode: str
                                                  ) -> None:
    folder = private_tmp("fleet-test-pgbouncer-")
    process, url = _start_pgbouncer(db_url, mode, folder)
    try:
        project = shop_project(tmp_path / "p", url, 3)
        result = project.fleet("migrate")
        if mode == "transaction":
            assert result.returncode == 2, result.stdout + result.stderr
            assert "transaction-pooling" in result.stderr
            assert not schemas(db_url, "shop_%")
        else:
            assert result.returncode == 0, result.stdout + result.stderr
            assert version(db_url, "shop_s002") == [HEAD]
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_wait_for_an_unreachable_database(tmp_path: Path) -> None:
    project = shop_project(tmp_path / "p", "postgresql://postgres:pw@127.0.0.1:9/none", 1)
    started = time.monotonic()
    waited = project.fleet("migrate", "--wait-for-db", "1.5")
    assert waited.returncode == 2
    assert "still not accepting connections after 1.5s" in waited.stderr
    # It did wait: a lower bound only, which a loaded machine cannot break.
    assert time.monotonic() - started >= 1.4
    assert "pw@" not in waited.stderr
    alone = project.fleet("wait", "--timeout", "0.5")
    assert alone.returncode == 2 and "127.0.0.1:9" in alone.stderr


@pytest.mark.slow
def test_wait_for_a_reachable_database(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 2)
    assert project.fleet("wait", "--timeout", "5").returncode == 0
    result = project.fleet("migrate", "--wait-for-db", "5")
    assert result.returncode == 0, result.stderr
    assert run(["fleet", "status"], cwd=project.root, env=project.env).returncode == 0
