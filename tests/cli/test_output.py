"""Small truths at the interface: what is printed says what happened, no more."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Project

pytestmark = pytest.mark.slow


def test_a_piped_noop_run_prints_a_summary_not_a_line_per_target(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    again = example.fleet("migrate")
    assert again.returncode == 0
    assert again.stdout.strip().splitlines() == [
        "nothing to do: all 7 target(s) skipped (already at the wanted revision)"]


def test_orphans_are_listed_but_not_counted_as_targets(example: Project) -> None:
    assert example.fleet("migrate", env={"TENANTS": "default toshiba iopex gone"}).returncode == 0
    status = example.fleet("status", "--json")
    assert status.returncode == 0
    payload = json.loads(status.stdout)
    assert payload["summary"]["targets"] == 7 and payload["summary"]["orphan"] == 2
    assert sum(1 for t in payload["targets"] if t["state"] == "orphan") == 2


def test_log_of_an_unknown_run_is_an_error(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    result = example.fleet("log", "--run", "zzz")
    assert result.returncode == 2 and "no run 'zzz'" in result.stderr


def test_counts_of_one_are_singular(example: Project) -> None:
    # 'checked ingestion (1 checks)', '1 errors': a count printed with a fixed plural.
    versions = example.root / "python_apps/ingestion-service/migrations/versions"
    original = versions / "c33c0e2b4a73_backfill_token_counts_add_language.py"
    (versions / "c33c0e2b4a73_copy.py").write_text(original.read_text())  # FC101: one error
    check = example.fleet("check", "ingestion", "--no-scratch")
    assert check.returncode == 3, check.stdout + check.stderr
    assert "checked ingestion (1 check)" in check.stdout + check.stderr
    assert "1 error, 0 warnings, 0 accepted" in check.stdout


def test_max_failures_counts_one_failed_target_as_one(example: Project) -> None:
    from tests.cli.test_hints import ENUM_NEVER_CREATED, WORKFLOW_VERSIONS

    (example.root / WORKFLOW_VERSIONS / "b26c9e0a7b96_add_status.py").write_text(
        ENUM_NEVER_CREATED)
    result = example.fleet("migrate", "workflow", "--jobs", "1", "--max-failures", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "1 target failed, more than the 0 allowed" in out, out


def test_a_target_that_needed_several_attempts_says_so(tmp_path, db_url: str) -> None:
    # A held table lock makes shop_s001's first attempt time out; the lock is released once
    # that lock wait was cancelled, so a retry migrates it. The piped line says how many
    # attempts it took (it said '(0.01s)', the attempts only in 'fleet log --run').
    import threading

    import psycopg

    from tests.faults.conftest import HEAD, shop_project
    from tests.faults.test_locks_and_faults import _release_after_first_lock_timeout

    project = shop_project(tmp_path / "p", db_url, 3)
    assert project.fleet("migrate", "--to", "8000aaaa0001").returncode == 0
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE shop_s001.items IN ACCESS SHARE MODE")
    stop = threading.Event()
    releaser = threading.Thread(target=_release_after_first_lock_timeout,
                                args=(blocker, db_url, stop), daemon=True)
    releaser.start()
    try:
        result = project.fleet("migrate", "--lock-timeout", "1", "--retries", "5",
                               "--jobs", "1")
    finally:
        stop.set()
        releaser.join()
        blocker.close()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()
             if line.startswith("migrated")}
    assert set(lines) == {"shop/shop_s000", "shop/shop_s001", "shop/shop_s002"}, result.stdout
    assert re.search(rf"8000aaaa0001 -> {HEAD}  \(\d+\.\d\ds, after \d+ attempts\)$",
                     lines["shop/shop_s001"]), lines
    assert "attempt" not in lines["shop/shop_s000"] + lines["shop/shop_s002"]
