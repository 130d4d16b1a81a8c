"""New tenants copied from a reference schema (``provision = "reference"``), against real
PostgreSQL, through the installed ``fleet``.

Every copy is compared with a tenant migrated the ordinary way from the same history:
``pg_dump -s`` (names set aside), version rows, ledger rows, seeded rows, and what the
next insert gets from each sequence. The histories that must not be copied are refused
(each detection has its case) and their tenants migrated, with the reason said.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project, query, schemas, script, version
from tests.integration.test_sql_and_alembic import _dump

pytestmark = pytest.mark.slow

HEAD = "8800aaaa0005"

REVISIONS = {
    "8800aaaa0001_base.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            mood = sa.Enum("calm", "busy", name="mood")
            op.create_table(
                "users",
                sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
                sa.Column("email", sa.String(200), nullable=False, unique=True),
                sa.Column("mood", mood, server_default="calm", nullable=False),
                sa.Column("legacy", sa.Integer))
            op.create_table(
                "roles",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("name", sa.Text, nullable=False))
            op.execute("INSERT INTO roles (name) VALUES ('admin'), ('member'), ('guest')")
            op.execute("INSERT INTO users (email) VALUES ('root@example.com')")
            op.create_index("ix_roles_name", "roles", ["name"], unique=True)


        def downgrade():
            pass
    ''',
    "8800aaaa0002_items.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0002"
        down_revision = "8800aaaa0001"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.create_table(
                "items",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("owner_id", sa.BigInteger, sa.ForeignKey("users.id"), nullable=False),
                sa.Column("price", sa.Numeric(10, 2), nullable=False),
                sa.Column("doubled", sa.Numeric(12, 2), sa.Computed("price * 2", persisted=True)))
            op.drop_column("users", "legacy")
            op.execute("INSERT INTO items (owner_id, price) VALUES (1, 9.5), (1, 3)")
            op.execute("COMMENT ON TABLE items IS 'things users own'")
            op.execute("CREATE SEQUENCE invoice_numbers START 1000")
            op.execute("SELECT nextval('invoice_numbers')")


        def downgrade():
            pass
    ''',
    "8800aaaa0003_logic.py": '''
        from alembic import op

        revision = "8800aaaa0003"
        down_revision = "8800aaaa0002"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.execute("CREATE VIEW expensive AS SELECT id, price FROM items WHERE price > 5")
            op.execute("""
                CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    NEW.email := lower(NEW.email);
                    RETURN NEW;
                END $$""")
            op.execute("CREATE TRIGGER users_touch BEFORE INSERT ON users "
                       "FOR EACH ROW EXECUTE FUNCTION touch()")
            op.execute("CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL)")
            op.execute("""INSERT INTO settings VALUES ('theme', '{"dark": true}')""")


        def downgrade():
            pass
    ''',
    "8800aaaa0004_online.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0004"
        down_revision = "8800aaaa0003"
        branch_labels = None
        depends_on = None


        def upgrade():
            bind = op.get_bind()
            roles = bind.exec_driver_sql("SELECT count(*) FROM roles").scalar()
            if sa.inspect(bind).has_table("roles"):
                op.create_table("role_counts", sa.Column("n", sa.Integer, nullable=False))
                op.execute(f"INSERT INTO role_counts (n) VALUES ({roles})")


        def downgrade():
            pass
    ''',
    "8800aaaa0005_events.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0005"
        down_revision = "8800aaaa0004"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.execute("CREATE TABLE events (id serial, at date NOT NULL, what text) "
                       "PARTITION BY RANGE (at)")
            op.execute("CREATE TABLE events_2024 PARTITION OF events "
                       "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
            op.execute("CREATE TABLE events_2025 PARTITION OF events "
                       "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
            op.execute("INSERT INTO events (at, what) VALUES ('2024-05-01', 'a'), "
                       "('2025-05-01', 'b')")
            op.alter_column("roles", "name", type_=sa.String(50))
            op.add_column("roles", sa.Column("rank", sa.Integer, server_default="0"))


        def downgrade():
            pass
    ''',
}

TOML = """\
database = "${DATABASE_URI}"
tenants = ${TENANTS_LIST}
provision = "${PROVISION:-reference}"

[services.svc]
path = "svc"
schema = "svc_{tenant}"
"""


def _write_service(root: Path, revisions: dict[str, str]) -> None:
    versions = root / "svc" / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "svc" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "svc" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    for name, body in revisions.items():
        (versions / name).write_text(textwrap.dedent(body).lstrip())


def _project(tmp_path: Path, db_url: str, revisions: dict[str, str] | None = None,
             tenants: tuple[str, ...] = ("m",)) -> Project:
    root = tmp_path / "proj"
    _write_service(root, REVISIONS if revisions is None else revisions)
    (root / "fleet.toml").write_text(TOML.replace("${TENANTS_LIST}", json.dumps(list(tenants))))
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def _targets(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    payload = json.loads(result.stdout)
    migration = payload.get("migration", payload)
    return {t["schema"]: t for t in migration["targets"]}


def _add(project: Project, *names: str, env: dict[str, str] | None = None) -> dict[str, dict]:
    result = project.fleet("tenants", "add", *names, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return _targets(result)


def _references(db_url: str) -> list[tuple]:
    return query(db_url, "SELECT service, schema_name, refused FROM fleet.reference_schemas "
                 "ORDER BY created_at")


def _normalised_dump(db_url: str, schema: str) -> str:
    return _dump(db_url, schema).replace(schema, "SCHEMA")


def _migrated(project: Project, tenant: str = "m") -> None:
    result = project.fleet("migrate", "--json", env={"PROVISION": "migrate"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _targets(result)[f"svc_{tenant}"]["via"] == "mixed"


def test_new_tenants_are_copies_of_what_a_migration_builds(tmp_path: Path, db_url: str
                                                           ) -> None:
    project = _project(tmp_path, db_url)
    _migrated(project)
    # The first builds the reference; then two at once, in worker processes.
    targets = {**_add(project, "a"), **_add(project, "b", "c")}
    assert {t["via"] for t in targets.values()} == {"reference"}, targets
    assert all(not t.get("note") for t in targets.values())
    [(service, reference, refused)] = _references(db_url)
    assert (service, refused) == ("svc", None) and reference.startswith("fleet_ref_")
    expected = _normalised_dump(db_url, "svc_m")
    tables = ("roles", "users", "items", "settings", "role_counts", "events")
    seeded = {t: query(db_url, f"SELECT * FROM svc_m.{t} ORDER BY 1") for t in tables}
    # Every sequence continues where the migrated tenant's does.
    inserts = ("INSERT INTO {}.roles (name) VALUES ('x') RETURNING id",
               "INSERT INTO {}.users (email) VALUES ('X@y') RETURNING id, email",
               "INSERT INTO {}.events (at) VALUES ('2025-02-02') RETURNING id",
               "SELECT nextval('{}.invoice_numbers')")
    following = [query(db_url, insert.format("svc_m")) for insert in inserts]
    assert following[0] == [(4,)] and following[3] == [(1001,)]
    for tenant in ("a", "b", "c"):
        schema = f"svc_{tenant}"
        assert _normalised_dump(db_url, schema) == expected
        assert version(db_url, schema) == [HEAD]
        for table in tables:
            assert query(db_url, f"SELECT * FROM {schema}.{table} ORDER BY 1") == seeded[table]
        assert [query(db_url, insert.format(schema)) for insert in inserts] == following
    # The ledger holds what a migration writes: each revision's checksum, the target's row.
    applied = "SELECT revision, checksum FROM fleet.applied_revisions WHERE schema_name = %s " \
        "ORDER BY 1"
    assert query(db_url, applied, ("svc_a",)) == query(db_url, applied, ("svc_m",))
    assert len(query(db_url, applied, ("svc_a",))) == 5
    rows = query(db_url, "SELECT schema_name, outcome, to_revisions FROM fleet.run_targets "
                 "WHERE schema_name IN ('svc_a', 'svc_b', 'svc_c') ORDER BY 1")
    assert rows == [(f"svc_{t}", "migrated", [HEAD]) for t in "abc"]
    # Nothing odd for the other commands: the reference is fleet's, not an orphan.
    status = project.fleet("status", "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["summary"]["orphan"] == 0
    listed = json.loads(project.fleet("tenants", "list", "--json").stdout)["tenants"]
    assert {r["presence"] for r in listed} == {"present"}
    assert json.loads(project.fleet("migrate", "--json").stdout)["summary"]["migrated"] == 0
    check = project.fleet("check", "--database", "--format", "json")
    assert reference not in check.stdout
    # Removing a copied tenant works as for any other; the reference stays.
    removed = project.fleet("tenants", "remove", "b", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not schemas(db_url, "svc_b") and schemas(db_url, reference) == {reference}
    # The reference's name as a tenant's renders no schema of it: nothing to remove.
    kept = project.fleet("tenants", "remove", reference, "--yes")
    assert kept.returncode == 0 and "nothing to remove" in kept.stdout, kept.stderr
    assert schemas(db_url, reference) == {reference}


def _revision(number: int, body: str, header: str = "") -> dict[str, str]:
    """One more revision after the history above (8800aaaa0006, 0007, ...)."""
    rev = f"8800aaaa{number:04d}"
    code = (f"import sqlalchemy as sa\nfrom alembic import op\n{header}\n"
            f'revision = "{rev}"\ndown_revision = "8800aaaa{number - 1:04d}"\n'
            "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "    ")
            + "\n\n\ndef downgrade():\n    pass\n")
    return {f"{rev}_more.py": code}


def _refused(project: Project, db_url: str, expected: str) -> dict[str, dict]:
    """Two tenants added (the first finds the history refused, the second reads the
    refusal): both migrated, each with the reason; no reference schema left."""
    targets = {}
    for name in ("a", "b"):
        result = project.fleet("tenants", "add", name, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        targets.update(_targets(result))
        warnings = json.loads(result.stdout)["warnings"]
        assert any("1 new tenant schema(s) migrated instead" in w and expected in w
                   for w in warnings), warnings
    for target in targets.values():
        assert target["via"] in ("mixed", "replay", "online"), target
        assert expected in target["note"] and target["note"].startswith(
            "provision = reference not used: "), target
    [(_service, reference, refused)] = _references(db_url)
    assert reference is None and expected in refused
    assert not schemas(db_url, "fleet_ref_%")
    assert version(db_url, "svc_a") == version(db_url, "svc_b") != []
    return targets


@pytest.mark.parametrize(("body", "header", "expected"), [
    # A value computed in Python renders differently each time.
    ('op.execute(f"INSERT INTO settings VALUES (\'secret\', \'\\"{uuid.uuid4().hex}\\"\')")',
     "import uuid", "renders different SQL each time"),
    # The database computes a value each time the revision runs: the two builds differ.
    ("op.execute(\"INSERT INTO settings VALUES ('token', to_jsonb(gen_random_uuid()))\")",
     "", "the rows of table settings differ"),
    ("op.execute(\"INSERT INTO settings VALUES ('born', to_jsonb(now()))\")",
     "", "the rows of table settings differ"),
    # A row that holds the schema's own name (the file scan sees the catalog read: the
    # revision is taken at its word, so that the two builds are compared).
    ("op.execute(\"INSERT INTO settings SELECT 'home', to_jsonb(n.nspname) "
     "FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
     "WHERE c.oid = 'settings'::regclass\")", "fleet_provision = True",
     "hold the schema's own name"),
    # A revision that looks at the schema it runs in, online or rendered.
    ("name = op.get_bind().exec_driver_sql('SELECT current_schema()').scalar()\n"
     "op.create_table(f'audit_{len(name)}', sa.Column('id', sa.Integer))", "",
     "reads the schema it runs in"),
    ("op.execute(\"INSERT INTO public.registry VALUES ('x')\")", "",
     "reads another schema's table"),
    ("op.execute('SELECT 1')\nfleet_provision = False", "", "says fleet_provision = False"),
], ids=["python-uuid", "gen_random_uuid", "now", "schema-name-in-rows", "current_schema",
        "other-schema", "opt-out"])
def test_histories_that_differ_per_tenant_are_migrated(tmp_path: Path, db_url: str,
                                                       body: str, header: str,
                                                       expected: str) -> None:
    if "fleet_provision = False" in body:
        body, header = "op.execute('SELECT 1')", "fleet_provision = False"
    query(db_url, "CREATE TABLE public.registry (name text)")
    project = _project(tmp_path, db_url, {**REVISIONS, **_revision(6, body, header)})
    targets = _refused(project, db_url, expected)
    assert {t["to"][0] for t in targets.values()} == {"8800aaaa0006"}
    if "uuid" in body:  # each tenant got its own value, as plain Alembic gives it
        values = query(db_url, "SELECT value FROM svc_a.settings WHERE key IN "
                       "('secret', 'token') UNION ALL SELECT value FROM svc_b.settings "
                       "WHERE key IN ('secret', 'token')")
        assert len({json.dumps(v) for (v,) in values}) == 2


def test_a_revision_marked_as_the_same_for_every_tenant_is_copied(tmp_path: Path,
                                                                  db_url: str) -> None:
    """fleet_provision = True overrides what the file shows; the two builds still decide."""
    same = _revision(6, "name = op.get_bind().exec_driver_sql('SELECT current_schema()')"
                     ".scalar()\nop.create_table('audit', sa.Column('id', sa.Integer))",
                     "fleet_provision = True")
    project = _project(tmp_path, db_url, {**REVISIONS, **same})
    assert {t["via"] for t in _add(project, "a").values()} == {"reference"}
    assert "audit" in query(db_url, "SELECT string_agg(tablename, ',') FROM pg_tables "
                            "WHERE schemaname = 'svc_a'")[0][0]


def test_a_name_derived_from_the_schema_is_found_by_building_twice(tmp_path: Path,
                                                                   db_url: str) -> None:
    upper = _revision(6, "name = op.get_bind().exec_driver_sql('SELECT current_schema()')"
                      ".scalar()\nop.execute(f\"COMMENT ON TABLE roles IS '{name.upper()}'\")",
                      "fleet_provision = True")
    project = _project(tmp_path, db_url, {**REVISIONS, **upper})
    _refused(project, db_url, "their DDL differs at: COMMENT ON TABLE")
    assert query(db_url, "SELECT obj_description('svc_a.roles'::regclass)") == [("SVC_A",)]


def test_an_extension_installed_into_the_reference_is_refused(tmp_path: Path,
                                                              db_url: str) -> None:
    if not query(db_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'citext'"):
        pytest.skip("citext is not available on this server")
    ext = _revision(6, "op.execute('CREATE EXTENSION IF NOT EXISTS citext')\n"
                    "op.add_column('users', sa.Column('nick', sa.Text))")
    project = _project(tmp_path, db_url, {**REVISIONS, **ext})
    _refused(project, db_url, "installs extension citext")


@pytest.mark.parametrize(("tamper", "expected"), [
    # An index lost from the captured DDL: the copy's catalog is not the reference's.
    ("jsonb_set(content, '{post}', to_jsonb(replace(content->>'post', "
     "'CREATE UNIQUE INDEX ix_roles_name', 'CREATE INDEX ix_roles_name')))",
     "catalog fingerprint differs"),
    # A row digest that does not match what the copy holds.
    ("jsonb_set(content, '{digests,roles}', '\"0\"')", "rows of table roles differ"),
    # DDL that fails.
    ("jsonb_set(content, '{post}', to_jsonb((content->>'post') || 'SELECT 1/0;'))",
     "division by zero"),
], ids=["fingerprint", "rows", "error"])
def test_a_copy_unlike_its_reference_is_rolled_back_and_migrated(tmp_path: Path, db_url: str,
                                                                  tamper: str, expected: str
                                                                  ) -> None:
    project = _project(tmp_path, db_url)
    assert _add(project, "a")["svc_a"]["via"] == "reference"
    query(db_url, f"UPDATE fleet.reference_schemas SET content = {tamper}")
    target = _add(project, "b")["svc_b"]
    assert target["via"] == "mixed" and expected in target["note"], target
    assert _normalised_dump(db_url, "svc_b") == _normalised_dump(db_url, "svc_a")
    applied = query(db_url, "SELECT count(*) FROM fleet.applied_revisions "
                    "WHERE schema_name = 'svc_b'")
    assert applied == [(5,)]


def test_an_existing_schema_without_version_table_is_migrated(tmp_path: Path, db_url: str
                                                              ) -> None:
    project = _project(tmp_path, db_url)
    query(db_url, "CREATE SCHEMA svc_z; CREATE TABLE svc_z.kept (id int)")
    target = _add(project, "z")["svc_z"]
    assert target["via"] == "mixed" and "its schema exists already" in target["note"]
    assert version(db_url, "svc_z") == [HEAD]
    assert query(db_url, "SELECT count(*) FROM svc_z.kept") == [(0,)]


def test_a_new_revision_gets_a_new_reference_and_the_old_one_goes(tmp_path: Path,
                                                                  db_url: str) -> None:
    project = _project(tmp_path, db_url)
    _migrated(project)
    assert _add(project, "a")["svc_a"]["via"] == "reference"
    [(_, old, _)] = _references(db_url)
    _write_service(project.root, _revision(6, "op.create_table('late', sa.Column('id', "
                                              "sa.Integer, primary_key=True))\n"
                                              "op.execute('INSERT INTO late VALUES (7)')"))
    upgraded = _targets(project.fleet("migrate", "--json"))
    assert {t["via"] for t in upgraded.values()} == {"replay"}  # existing ones: migrated
    # What a runner killed while building leaves (no row records it) goes too.
    query(db_url, "CREATE SCHEMA fleet_ref_deadbeef; CREATE TABLE fleet_ref_deadbeef.t (x int)")
    assert _add(project, "c")["svc_c"]["via"] == "reference"
    [(_, new, refused)] = _references(db_url)
    assert new != old and refused is None
    assert schemas(db_url, "fleet_ref_%") == {new}
    assert version(db_url, "svc_c") == ["8800aaaa0006"]
    assert query(db_url, "SELECT * FROM svc_c.late") == [(7,)]
    assert _normalised_dump(db_url, "svc_c") == _normalised_dump(db_url, "svc_m")


def test_two_runners_build_the_reference_once(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    env = {**{k: v for k, v in os.environ.items() if k not in ("TENANTS", "DATABASE_URI")},
           **project.env}
    runners = [subprocess.Popen([script("fleet"), "tenants", "add", name, "--json"],
                                cwd=project.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("p", "q")]
    vias = []
    for runner in runners:
        out, err = runner.communicate(timeout=240)
        assert runner.returncode == 0, out + err
        [target] = json.loads(out)["migration"]["targets"]
        vias.append(target["via"])
        # A runner that finds the reference being built migrates its tenant meanwhile
        # rather than wait for a build that costs two migrations.
        assert target["via"] == "reference" or (
            "the reference is being built" in target["note"]), target
    assert "reference" in vias
    assert len(_references(db_url)) == 1
    created = query(db_url, "SELECT count(*) FROM public.fleet_test_ddl_log "
                    "WHERE command_tag = 'CREATE SCHEMA' AND object_identity LIKE 'fleet_ref_%'")
    assert created == [(2,)]  # the reference and its witness, once
    assert _normalised_dump(db_url, "svc_p") == _normalised_dump(db_url, "svc_q")


def test_a_runner_killed_while_copying_leaves_nothing(tmp_path: Path, db_url: str) -> None:
    query(db_url, "CREATE TABLE public.anchor (id int PRIMARY KEY)")
    anchored = _revision(6, "op.create_table('anchored', sa.Column('anchor_id', sa.Integer, "
                         "sa.ForeignKey('public.anchor.id')))")
    project = _project(tmp_path, db_url, {**REVISIONS, **anchored})
    assert _add(project, "a")["svc_a"]["via"] == "reference"
    env = {**{k: v for k, v in os.environ.items() if k not in ("TENANTS", "DATABASE_URI")},
           **project.env}
    with psycopg.connect(db_url) as blocker:
        # The copy adds its foreign key to a shared table after creating the tenant's
        # tables and rows: held here, it waits in the middle of its transaction. (A lock
        # on the reference itself makes the copy step aside before it begins.)
        blocker.execute("LOCK TABLE public.anchor IN ROW EXCLUSIVE MODE")
        runner = subprocess.Popen([script("fleet"), "tenants", "add", "k"], cwd=project.root,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not query(db_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND query LIKE '%svc_k.anchored%REFERENCES public.anchor%'"):
            assert time.monotonic() < deadline and runner.poll() is None
            time.sleep(0.1)
        assert query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'svc_k'") == []
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
        blocker.rollback()
    deadline = time.monotonic() + 30
    while query(db_url, "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%svc_k%'"
                " AND pid <> pg_backend_pid()"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not schemas(db_url, "svc_k")
    assert not query(db_url, "SELECT 1 FROM fleet.applied_revisions WHERE schema_name = 'svc_k'")
    # The tenant was recorded before it was killed: the next migrate makes it.
    result = project.fleet("migrate", "--json")
    assert _targets(result)["svc_k"]["via"] == "reference"
    assert _normalised_dump(db_url, "svc_k") == _normalised_dump(db_url, "svc_a")


def test_rows_stamped_with_the_build_time_get_the_copys_own_time(tmp_path: Path,
                                                                 db_url: str) -> None:
    """now() in a seeded row is the time of the transaction that migrated the tenant: a
    copy gets the time of its own transaction, not the reference's."""
    stamped = _revision(6, """
        op.create_table("audit",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()")),
            sa.Column("local_at", sa.DateTime, server_default=sa.text("now()")),
            sa.Column("fixed", sa.DateTime(timezone=True)))
        op.execute("INSERT INTO audit (fixed) VALUES ('2020-01-01 00:00+00'), (NULL)")
    """)
    project = _project(tmp_path, db_url, {**REVISIONS, **stamped})
    assert _add(project, "a")["svc_a"]["via"] == "reference"
    assert _add(project, "b")["svc_b"]["via"] == "reference"
    [(_, reference, _)] = _references(db_url)
    times = {schema: query(db_url, f"SELECT DISTINCT at, local_at FROM {schema}.audit")
             for schema in (reference, "svc_a", "svc_b")}
    assert all(len(rows) == 1 for rows in times.values()), times
    (ref_at, ref_local), (a_at, a_local), (b_at, _) = (
        times[reference][0], times["svc_a"][0], times["svc_b"][0])
    assert ref_at < a_at < b_at and ref_local < a_local
    assert query(db_url, "SELECT id, fixed FROM svc_a.audit ORDER BY id") == query(
        db_url, f"SELECT id, fixed FROM {reference}.audit ORDER BY id")


def test_a_reference_dropped_by_hand_is_built_again(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    assert _add(project, "a")["svc_a"]["via"] == "reference"
    [(_, reference, _)] = _references(db_url)
    query(db_url, f"DROP SCHEMA {reference} CASCADE")
    target = _add(project, "b")["svc_b"]
    assert target["via"] == "mixed" and "is gone" in target["note"]
    assert _references(db_url) == []
    assert _add(project, "c")["svc_c"]["via"] == "reference"
    assert schemas(db_url, "fleet_ref_%") == {reference}
    # fleet reset --force drops the references with the ledger.
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    reset = project.fleet("reset", "--force", "--confirm", name)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert not schemas(db_url, "fleet%")


@pytest.mark.parametrize(("scheme", "via"), [("postgresql+psycopg2", "reference"),
                                             ("postgresql+asyncpg", "mixed")])
def test_drivers(tmp_path: Path, db_url: str, scheme: str, via: str) -> None:
    """psycopg2 copies as psycopg 3 does; asyncpg's prepared statements cannot run the
    captured DDL as one query, so its new tenants are migrated, with the reason."""
    project = _project(tmp_path, db_url)
    project.env["DATABASE_URI"] = scheme + db_url[db_url.index("://"):]
    targets = {**_add(project, "a"), **_add(project, "b")}
    assert {t["via"] for t in targets.values()} == {via}, targets
    if via == "mixed":
        assert all("asynchronous" in t["note"] for t in targets.values())
    assert _normalised_dump(db_url, "svc_b") == _normalised_dump(db_url, "svc_a")
