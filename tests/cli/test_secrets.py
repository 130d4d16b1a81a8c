"""Passwords: exports that work when evaluated, and redaction that never corrupts data.

A password must never be shown on a terminal or written into a log, but the exports of
``eval "$(fleet up)"`` must carry it, and hiding it must never rewrite SQL or JSON that
merely contains the same letters.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from tests.conftest import Project, script

pytestmark = pytest.mark.slow


def _with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


def test_up_exports_work_when_evaluated(example: Project) -> None:
    url = _with_password(example.db_url, "s3cr3t-pw")
    env = {"DATABASE_URI": url}
    up = example.fleet("up", env=env)
    assert up.returncode == 0, up.stderr
    assert f"export DATABASE_URI={shlex.quote(url)}" in up.stdout.splitlines()
    assert "s3cr3t-pw" not in up.stderr
    shell = subprocess.run(["bash", "-c", f'eval "$({script("fleet")} up)"; '
                            'printf %s "$DATABASE_URI"'], cwd=example.root,
                           env={**os.environ, **example.env, **env}, capture_output=True,
                           text=True)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == url
    as_json = json.loads(example.fleet("up", "--json", env=env).stdout)
    assert as_json["exports"]["DATABASE_URI"] == url


def test_a_composed_url_is_exported_whole(example: Project) -> None:
    toml = example.root / "fleet.toml"
    text = toml.read_text()
    composed = example.db_url.replace("postgres@", "${DB_USER}:${DB_PASSWORD}@", 1)
    toml.write_text(text.replace('database = "${DATABASE_URI:-}"', f'database = "{composed}"'))
    assert toml.read_text() != text
    env = {"DB_USER": "postgres", "DB_PASSWORD": "composed-pw"}
    result = example.fleet("run", "--", "printenv", "DATABASE_URI", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == example.db_url.replace("postgres@",
                                                           "postgres:composed-pw@", 1)
    up = example.fleet("up", env=env)
    assert "export DB_USER=" not in up.stdout


def test_masking_never_rewrites_sql_or_json(example: Project) -> None:
    """With the password 'auth' (a service's name), SQL and JSON stay exactly as they are."""
    env = {"DATABASE_URI": _with_password(example.db_url, "auth")}
    sql = example.fleet("migrate", "--sql", "auth", "--tenant", "default", env=env)
    assert sql.returncode == 0, sql.stderr
    assert 'SET search_path TO "auth_default"' in sql.stdout or "auth_default" in sql.stdout
    assert "***_default" not in sql.stdout
    migrate = example.fleet("migrate", "--json", env=env)
    payload = json.loads(migrate.stdout)
    assert {t["service"] for t in payload["targets"]} == {"auth", "workflow", "ingestion"}
    databases = [t["database"] for t in payload["targets"] if t["service"] == "auth"]
    assert all(":***@" in d for d in databases)


def test_an_unencoded_at_sign_is_refused_without_showing_the_password(
        example: Project) -> None:
    env = {"DATABASE_URI": example.db_url.replace("postgres@", "postgres:p@ssw0rd-tail@", 1)}
    result = example.fleet("status", env=env)
    assert result.returncode == 2
    assert "percent-encoded" in result.stderr
    assert "ssw0rd-tail" not in result.stdout + result.stderr



def test_check_format_json_errors_are_json_and_masked(example: Project) -> None:
    url = example.db_url.replace("postgres@", "postgres:p%40ss%25Zebra@", 1)
    url = url.rsplit(":", 1)[0] + ":1/x"  # nothing listens on port 1
    result = example.fleet("check", "--database", "--no-scratch", "--format", "json",
                           env={"DATABASE_URI": url})
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert "cannot connect" in payload["error"]["message"]
    for spelling in ("p@ss%Zebra", "p%40ss%25Zebra", "p@ss%%Zebra", "ss%Zebra"):
        assert spelling not in result.stdout + result.stderr


@pytest.mark.parametrize("pushed", ["http://admin:s3cr3tPW@127.0.0.1:9/",
                                    "admin:s3cr3tPW@127.0.0.1:9",  # no scheme: host:port
                                    # A gateway behind a proxy that takes a token.
                                    "http://127.0.0.1:9/?token=s3cr3tPW",
                                    "http://127.0.0.1:9/push?x=1&api_key=s3cr3tPW"])
def test_a_password_on_the_command_line_is_not_recorded_in_the_ledger(example: Project,
                                                                       pushed: str) -> None:
    # The run's command line went into fleet.runs as typed: a --metrics-push URL with its
    # password (fleet log masked it when printing, the row kept it).
    result = example.fleet("migrate", "--metrics-push", pushed, "--tenant", "default")
    assert result.returncode in (0, 1), result.stderr
    from tests.conftest import query

    rows = query(example.db_url, "SELECT command FROM fleet.runs")
    assert "s3cr3tPW" not in result.stdout + result.stderr
    assert rows and all("s3cr3tPW" not in command for (command,) in rows), rows
    assert any(("admin:***@127.0.0.1" if "admin" in pushed else "=***") in command
               for (command,) in rows), rows
    assert "s3cr3tPW" not in example.fleet("log").stdout
