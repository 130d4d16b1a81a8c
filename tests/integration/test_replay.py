"""Render-once replay: which revisions are replayed, and that failures still name the
revision and roll the target back."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from alembic_fleet.alembic_bridge.replay import render_upgrade
from tests.conftest import Project, schemas, tables, version
from tests.integration.test_parallel import _service

STATIC = '''\
    import sqlalchemy as sa
    from alembic import op

    revision = "7000aaaa0001"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("body", sa.Text, nullable=False))
        op.bulk_insert(sa.table("notes", sa.column("id", sa.Integer), sa.column("body", sa.Text)),
                       [{"id": 1, "body": "100% it's fine"}])


    def downgrade():
        op.drop_table("notes")
'''

DYNAMIC = '''\
    import sqlalchemy as sa
    from alembic import op

    revision = "7000aaaa0002"
    down_revision = "7000aaaa0001"
    branch_labels = None
    depends_on = None


    def upgrade():
        # Reads the data: must run online, where the query returns rows.
        count = op.get_bind().execute(sa.text("SELECT count(*) FROM notes")).scalar()
        op.create_table(f"copy_{count}", sa.Column("id", sa.Integer, primary_key=True))
        op.execute("DO $$ BEGIN IF current_schema() = 'notes_bad' THEN "
                   "RAISE EXCEPTION 'bad tenant data'; END IF; END $$")


    def downgrade():
        pass
'''


def test_rendering_keeps_literals_and_refuses_dynamic_revisions(tmp_path: Path) -> None:
    import importlib.util

    paths = {}
    for name, body in (("static", STATIC), ("dynamic", DYNAMIC)):
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location("rev_static", paths["static"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    statements = render_upgrade(module, str(paths["static"]))
    assert statements is not None and statements[0].startswith("CREATE TABLE notes")
    assert "'100% it''s fine'" in statements[1]
    assert render_upgrade(module, str(paths["dynamic"])) is None


@pytest.mark.slow
def test_mixed_path_runs_online_and_failure_names_the_revision(tmp_path: Path,
                                                               db_url: str) -> None:
    root = tmp_path / "mixed"
    _service(root, "notes", {"7000aaaa0001_notes.py": STATIC,
                             "7000aaaa0002_copy.py": DYNAMIC})
    (root / "fleet.toml").write_text(textwrap.dedent("""\
        database = "${DATABASE_URI}"
        tenants = ["good", "bad", "fine"]

        [services.notes]
        path = "notes"
        schema = "notes_{tenant}"
        """))
    project = Project(root, {"DATABASE_URI": db_url}, db_url, db_url)
    # Up to the static revision: replayed.
    first = project.fleet("migrate", "--to", "7000aaaa0001")
    assert first.returncode == 0, first.stdout + first.stderr
    assert version(db_url, "notes_good") == ["7000aaaa0001"]
    # The dynamic revision runs online: it sees the row and names its table after it.
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1
    outcome = {t["tenant"]: t for t in json.loads(result.stdout)["targets"]}
    assert outcome["good"]["outcome"] == "migrated"
    assert "copy_1" in tables(db_url, "notes_good")
    assert outcome["bad"]["outcome"] == "failed"
    assert "revision 7000aaaa0002" in outcome["bad"]["error"]
    assert "bad tenant data" in outcome["bad"]["error"]
    assert version(db_url, "notes_bad") == ["7000aaaa0001"]
    assert "copy_1" not in tables(db_url, "notes_bad")


@pytest.mark.slow
def test_replayed_failure_rolls_back_and_names_the_revision(tmp_path: Path, db_url: str
                                                            ) -> None:
    root = tmp_path / "replayfail"
    broken = STATIC.replace('[{"id": 1, "body": "100% it\'s fine"}]',
                            '[{"id": 1, "body": "a"}, {"id": 1, "body": "b"}]')
    assert broken != STATIC
    _service(root, "notes", {"7000aaaa0001_notes.py": broken})
    (root / "fleet.toml").write_text(textwrap.dedent("""\
        database = "${DATABASE_URI}"
        tenants = ["one", "two"]

        [services.notes]
        path = "notes"
        schema = "notes_{tenant}"
        """))
    project = Project(root, {"DATABASE_URI": db_url}, db_url, db_url)
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1
    for target in json.loads(result.stdout)["targets"]:
        assert target["outcome"] == "failed"
        assert "revision 7000aaaa0001" in target["error"]
        assert "duplicate key" in target["error"]
    assert not schemas(db_url, "notes_%")
