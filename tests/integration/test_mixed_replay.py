"""Mixed plans: rendered stretches replayed, revisions that need a live connection run
online at their place, all in the target's one transaction.

Real histories almost always hold a revision that must run online (an inspector check, a
data migration reading rows); before mixed plans, one such revision sent every fresh tenant
through Alembic for the whole history. Each case compares what fleet builds with what plain
Alembic builds, schema (``pg_dump -s``) and version row, for every place the online revision
can take in the history.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, query, version
from tests.integration.test_parallel import _service
from tests.integration.test_sql_and_alembic import _dump

pytestmark = pytest.mark.slow

COUNT = 6


def _rev(number: int, online: bool) -> str:
    rev = f"7600aaaa{number:04d}"
    down = f"7600aaaa{number - 1:04d}" if number > 1 else None
    if number == 1:
        body = ('op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))\n'
                'op.execute("INSERT INTO t (id) VALUES (1), (2)")')
    else:
        body = f'op.add_column("t", sa.Column("c{number}", sa.Integer))'
    if online:  # reads the database: what it does depends on what is there
        body += textwrap.dedent(f'''
            bind = op.get_bind()
            rows = bind.exec_driver_sql("SELECT count(*) FROM t").scalar()
            if sa.inspect(bind).has_table("t"):
                op.create_table("seen_{number}", sa.Column("n", sa.Integer))
                op.execute(f"INSERT INTO seen_{number} (n) VALUES ({{rows}})")''')
    return (f'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "{rev}"\n'
            f'down_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n'
            f'def upgrade():\n' + textwrap.indent(body.strip(), "    ")
            + "\n\n\ndef downgrade():\n    pass\n")


def _project(tmp_path: Path, db_url: str, online: set[int]) -> Project:
    root = tmp_path / "proj"
    _service(root, "svc", {f"7600aaaa{n:04d}_r.py": _rev(n, n in online)
                           for n in range(1, COUNT + 1)})
    (root / "fleet.toml").write_text(
        'database = "${DATABASE_URI}"\ntenants = ["a", "b"]\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


HEAD = f"7600aaaa{COUNT:04d}"


@pytest.mark.parametrize("online", [{1}, {3}, {COUNT}, {2, 3}, {2, 5}],
                         ids=lambda s: "online-" + "-".join(map(str, sorted(s))))
def test_a_mixed_plan_builds_what_plain_alembic_builds(tmp_path: Path, db_url: str,
                                                       online: set[int]) -> None:
    project = _project(tmp_path, db_url, online)
    plain = project.alembic("svc", "upgrade", "head", env={"ALEMBIC_SCHEMA": "svc_plain"})
    assert plain.returncode == 0, plain.stderr
    # From empty, and from the middle of the history.
    assert project.fleet("migrate", "--to", "7600aaaa0002", "--tenant", "b").returncode == 0
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    targets = {t["schema"]: t for t in json.loads(result.stdout)["targets"]}
    assert targets["svc_a"]["via"] == "mixed"
    assert targets["svc_b"]["via"] == ("mixed" if online - {1, 2} else "replay")
    reference = _dump(db_url, "svc_plain").replace("svc_plain", "SCHEMA")
    for schema in ("svc_a", "svc_b"):
        assert version(db_url, schema) == [HEAD]
        assert _dump(db_url, schema).replace(schema, "SCHEMA") == reference
        for number in online:
            assert query(db_url, f"SELECT n FROM {schema}.seen_{number}") == [(2,)]
    applied = query(db_url, "SELECT schema_name, count(*) FROM fleet.applied_revisions "
                    "GROUP BY 1 ORDER BY 1")
    assert applied == [("svc_a", COUNT), ("svc_b", COUNT)]
    rerun = project.fleet("migrate", "--json")
    assert json.loads(rerun.stdout)["summary"]["migrated"] == 0


def test_a_failing_online_revision_rolls_the_whole_mixed_plan_back(tmp_path: Path,
                                                                    db_url: str) -> None:
    project = _project(tmp_path, db_url, {4})
    path = project.root / "svc" / "migrations" / "versions" / "7600aaaa0004_r.py"
    path.write_text(path.read_text().replace(
        "    bind = op.get_bind()", "    bind = op.get_bind()\n"
        "    bind.exec_driver_sql(\"SELECT 1/0\")"))
    result = project.fleet("migrate", "--json", "--tenant", "a")
    assert result.returncode == 1
    target = json.loads(result.stdout)["targets"][0]
    assert "7600aaaa0004" in target["error"] and "division by zero" in target["error"]
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'svc_a'")
    assert not query(db_url, "SELECT 1 FROM fleet.applied_revisions")


def test_mixing_can_be_turned_off(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, {3})
    result = project.fleet("migrate", "--json", env={"FLEET_MIXED": "0"})
    assert result.returncode == 0, result.stderr
    assert {t["via"] for t in json.loads(result.stdout)["targets"]} == {"online"}


@pytest.mark.parametrize("broken, statement", [
    (5, '    bind = op.get_bind()\n    bind.exec_driver_sql("SELECT 1/0")'),
    (4, '    op.execute("SELECT 1/0")'),
], ids=["second-online-stretch", "replayed-after-online"])
def test_an_error_after_an_online_stretch_names_its_own_revision(
        tmp_path: Path, db_url: str, broken: int, statement: str) -> None:
    """The revision named in the error is the one that failed, wherever it stands after
    the online stretches before it (Alembic counts only the revisions it ran itself)."""
    project = _project(tmp_path, db_url, {2, 5})
    path = project.root / "svc" / "migrations" / "versions" / f"7600aaaa{broken:04d}_r.py"
    text = path.read_text()
    anchor = "    bind = op.get_bind()" if broken == 5 else "    op.add_column("
    path.write_text(text.replace(anchor, statement + "\n" + anchor, 1))
    result = project.fleet("migrate", "--json", "--tenant", "a")
    assert result.returncode == 1, result.stdout + result.stderr
    target = json.loads(result.stdout)["targets"][0]
    assert target["error"].startswith(f"revision 7600aaaa{broken:04d}: "), target["error"]
    assert "division by zero" in target["error"]
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'svc_a'")
