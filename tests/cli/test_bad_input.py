"""Bad input gets a clear error, exit code 2, and changes nothing (installed ``fleet``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Project, ddl_count, schemas, script

HOSTILE = 'ok x"; drop schema public; --'


def _no_change(project: Project) -> None:
    assert not schemas(project.db_url, "auth_%") and not schemas(project.db_url, "workflow_%")
    assert ddl_count(project.db_url) == 0
    assert ddl_count(project.ingestion_url) == 0


# The name rules one by one (case, leading digit, dash, ...) are tests/unit's
# (test_identifiers, test_config); here the installed command with one name per validator.
@pytest.mark.parametrize("tenants", [HOSTILE, "x" * 70])
def test_hostile_tenant_names_are_refused(example: Project, tenants: str) -> None:
    result = example.fleet("migrate", env={"TENANTS": tenants})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TENANTS" in result.stderr
    assert "Traceback" not in result.stderr
    _no_change(example)


def test_hostile_tenant_option_is_refused(example: Project) -> None:
    result = example.fleet("migrate", "--tenant", HOSTILE)
    assert result.returncode == 2
    assert "invalid tenant name" in result.stderr
    _no_change(example)


def test_an_unknown_tenant_names_the_command_that_adds_it(example: Project) -> None:
    # The hint used to spell out TENANTS="..." with every configured tenant: thousands of
    # names in one line. It names the lifecycle command, and the near spelling of a typo.
    tenants = " ".join(f"t{i:04d}" for i in range(2000))
    result = example.fleet("status", "--tenant", "toshibaa", env={"TENANTS": tenants + " toshiba"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "tenant 'toshibaa' is not configured" in result.stderr
    assert "fleet tenants add toshibaa" in result.stderr
    assert "did you mean 'toshiba'?" in result.stderr
    assert "t1999" not in result.stderr and len(result.stderr) < 600, result.stderr
    _no_change(example)


@pytest.mark.slow
def test_broken_config_names_file_and_key(example: Project) -> None:
    config = example.root / "fleet.toml"
    config.write_text(config.read_text().replace('schema = "auth_{tenant}"',
                                                 'schema = "auth_{tenant}_{region}"'))
    result = example.fleet("migrate")
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "services.auth.schema" in result.stderr
    assert "expected" in result.stderr
    _no_change(example)

    config.write_text("tenants = [\n")
    result = example.fleet("status", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert "not valid TOML" in error["message"] and error["exit_code"] == 2


@pytest.mark.slow
def test_unknown_key_and_missing_variable(example: Project) -> None:
    config = example.root / "fleet.toml"
    original = config.read_text()
    config.write_text(original.replace("[services.auth]", "[services.auth]\nshema = 'x'"))
    result = example.fleet("status")
    assert result.returncode == 2
    assert "services.auth.shema" in result.stderr and "unknown key" in result.stderr

    config.write_text(original.replace('"${DATABASE_URI:-}"', '"${FLEET_NOT_SET_ANYWHERE}"'))
    result = example.fleet("status")
    assert result.returncode == 2
    assert "FLEET_NOT_SET_ANYWHERE" in result.stderr and "key 'database'" in result.stderr


def test_no_config_found(tmp_path: Path, example: Project) -> None:
    result = example.fleet("status", cwd=tmp_path)
    assert result.returncode == 2
    assert "fleet init" in result.stderr


@pytest.mark.slow
def test_unknown_service(example: Project) -> None:
    result = example.fleet("migrate", "billing")
    assert result.returncode == 2
    assert "unknown service 'billing'" in result.stderr and "auth" in result.stderr
    _no_change(example)


@pytest.mark.slow
def test_unreachable_database_hides_the_password(example: Project) -> None:
    secret = "Sup3r-Secret-Pa55"
    url = f"postgresql://fleet_nobody:{secret}@127.0.0.1:9/nowhere"
    for args in (["migrate"], ["status"], ["status", "--json"], ["--debug", "migrate"]):
        result = example.fleet(*args, env={"DATABASE_URI": url, "INGESTION_DATABASE_URL": url})
        assert result.returncode == 2, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert secret not in output
        assert "cannot connect" in output
        assert "127.0.0.1" in output


def test_rejected_credentials_hide_the_password(example: Project) -> None:
    """A reachable server that refuses the role: the error says so, without the password.

    Every database refuses it, so nothing runs (exit 2); one refusing server among several
    fails only its targets (tests/integration/test_tenants.py)."""
    secret = "An0ther-Secret-Pa55"
    url = example.db_url.replace("postgresql://postgres", f"postgresql://fleet_no_role:{secret}")
    ingestion = example.ingestion_url.replace("postgresql://postgres",
                                              f"postgresql://fleet_no_role:{secret}")
    result = example.fleet("migrate", env={"DATABASE_URI": url,
                                           "INGESTION_DATABASE_URL": ingestion})
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert secret not in output
    assert "fleet_no_role" in output
    _no_change(example)


@pytest.mark.parametrize("secret", ["Wq7 Zx9-tail", "Wq7'Zx9-tail", 'Wq7"Zx9-tail'])
def test_a_query_password_with_a_space_or_a_quote_is_hidden_whole(example: Project,
                                                                   secret: str) -> None:
    """libpq's ``?password=`` written raw: the server trusts the connection, fleet works,
    and the password is hidden whole wherever the URL is shown (it was masked only up to
    the space or quote: ``?password=*** Zx9-tail``)."""
    def with_password(url: str) -> str:
        return url + ("&" if "?" in url else "?") + f"password={secret}"

    env = {"DATABASE_URI": with_password(example.db_url),
           "INGESTION_DATABASE_URL": with_password(example.ingestion_url)}
    for args in (["migrate", "--json"], ["status"], ["status", "--json"], ["log"],
                 ["plan"]):
        result = example.fleet(*args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Zx9" not in output and "Wq7" not in output, output
    assert "password=***" in example.fleet("status", "--json", env=env).stdout  # ?/&host=


@pytest.mark.parametrize("token", ["Wq7\\Zx9Kq4", "Wq7'Zx9Kq4", 'Wq7"Zx9Kq4', "Wq7 Zx9Kq4",
                                   "Wq7:Zx9@Kq4", 'Wq7\\"Zx9 Kq4'])
def test_a_token_with_a_backslash_is_hidden_whole(example: Project, token: str) -> None:
    """A Pushgateway token's backslash, quote or space ended the masking
    (``?token=***\\Zx9Kq4``), in the warning and in the run's command line in the ledger
    (``fleet log``). A token holding ``:`` and ``@`` made the URL's path look like a
    password, masked first, which cut the token apart; a backslash before a quote, doubled
    in the warning (urllib's ``repr``), was not the token registered."""
    url = f"http://127.0.0.1:9/metrics?token={token}"
    result = example.fleet("migrate", "--metrics-push", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metrics not pushed" in result.stderr, result.stderr
    logged = example.fleet("log", "--json").stdout + example.fleet("log").stdout
    for output in (result.stdout + result.stderr, logged):
        assert "Zx9" not in output and "Wq7" not in output, output
    # With an '@' after a ':', the path and query read as a password too (as SQLAlchemy
    # reads such a URL): all of it is masked, from the port on.
    assert ("http://127.0.0.1:***" if "@" in token else "?token=***") in logged, logged


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/metrics?token=Wq7Zx9Kq4Wq7Zx9Kq4Wq7Zx9",
                                 "http://pushuser:Wq7Zx9Kq4Wq7Zx9Kq4Wq7Zx9@127.0.0.1:9/metrics"])
def test_a_secret_cut_by_the_ledgers_limit_is_not_kept_in_part(example: Project,
                                                                 url: str) -> None:
    """The ledger keeps 500 characters of a command line: cut before the masking, a secret
    cut in two was no longer the one registered, and its start was kept and shown by
    ``fleet log`` (``?token=Wq7Zx9Kq4`` or the whole start of a user's password)."""
    middle = url.index("Wq7") + 9
    padding = "./" * ((500 - len("fleet -C ") - len(" migrate --metrics-push ") - middle) // 2)
    args = ["-C", padding + ".", "migrate", "--metrics-push", url]
    assert len(" ".join(["fleet", *args[:-1]])) + 1 + url.index("Wq7") < 500 < len(
        " ".join(["fleet", *args]))  # the limit falls inside the secret
    result = example.fleet(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    logged = example.fleet("log", "--json").stdout + example.fleet("log").stdout
    assert "Wq7" not in logged and "Zx9" not in logged, logged
    assert "migrate --metrics-push" in logged


def test_closed_output_streams_change_nothing(example: Project) -> None:
    """With stdout and stderr closed (a daemon's ``>&- 2>&-``) a run stopped after its
    first targets, recorded as interrupted, exit 1: writing a line raised. It migrates
    everything and exits 0, as with the output open."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    done = subprocess.run(f"exec '{script('fleet')}' migrate >&- 2>&-", shell=True,
                          cwd=example.root, env={**base, **example.env}, timeout=300)
    assert done.returncode == 0
    status = example.fleet("status", "--json")
    assert json.loads(status.stdout)["summary"]["at_head"] == 7, status.stdout
    assert json.loads(example.fleet("log", "--json").stdout)["runs"][0]["outcome"] == \
        "succeeded"


def test_a_closed_stdout_drops_the_report_not_on_stderr(example: Project) -> None:
    """With stdout alone closed the report went to stderr (fleet's own diversion of stdout
    to stderr took it for anyone's output)."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    for args in ("status --json", "status"):
        done = subprocess.run(f"exec '{script('fleet')}' {args} >&-", shell=True,
                              cwd=example.root, env={**base, **example.env}, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 3, done.stderr  # missing targets, as with stdout open
        assert "auth_default" not in done.stderr, done.stderr


def test_invalid_revision(example: Project) -> None:
    result = example.fleet("migrate", "auth", "--to", "ffffffffffff")
    assert result.returncode == 2
    assert "ffffffffffff" in result.stderr
    _no_change(example)


def test_a_lock_timeout_of_zero_is_refused(example: Project) -> None:
    # PostgreSQL reads lock_timeout = 0 as "no limit": fleet's DDL then waited behind an
    # application's lock as long as it was held, and the application's queries queued
    # behind the DDL, the very outage the lock timeout exists to prevent.
    result = example.fleet("migrate", "--lock-timeout", "0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--lock-timeout" in result.stderr and "no limit" in result.stderr
    toml = example.root / "fleet.toml"
    toml.write_text("lock_timeout = 0\n" + toml.read_text())
    result = example.fleet("migrate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lock_timeout" in result.stderr and "no limit" in result.stderr
    _no_change(example)


def test_a_url_sqlalchemy_rejects_only_when_connecting_is_bad_input(example: Project) -> None:
    # '?port=x' passes the configuration's URL check and failed at connect time as an
    # internal error ("this is a bug"), exit 1.
    url = example.db_url.replace("postgres@", "postgres:pw4567@", 1)
    url += ("&" if "?" in url else "?") + "port=x"
    result = example.fleet("status", env={"DATABASE_URI": url})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not valid" in result.stderr and "internal error" not in result.stderr
    assert "pw4567" not in result.stdout + result.stderr
    _no_change(example)
