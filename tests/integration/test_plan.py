"""``fleet plan`` through the installed command, on a small project and a real PostgreSQL.

The project is ``fleet check``'s clean shop (create ``items``, add ``price``, a concurrent
index) with three more revisions: a table, a volatile default and a type change; a foreign
key and an ``UPDATE`` without ``WHERE``; a column, then a read of the database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.check.project import make_project, revision_file, write_revision
from tests.conftest import DatabaseFactory, Project, query, schemas

MORE = {
    "aa0000000004_orders.py": revision_file("aa0000000004", "aa0000000003", """
        op.create_table("orders", sa.Column("id", sa.Integer(), primary_key=True),
                        sa.Column("item_id", sa.Integer(), nullable=True))
        op.add_column("items", sa.Column("token", sa.Uuid(),
                                         server_default=sa.text("gen_random_uuid()")))
        op.alter_column("items", "name", type_=sa.String(200), existing_type=sa.String(100))
        """, """
        op.alter_column("items", "name", type_=sa.String(100), existing_type=sa.String(200))
        op.drop_column("items", "token")
        op.drop_table("orders")
        """),
    "aa0000000005_orders_fk.py": revision_file("aa0000000005", "aa0000000004", """
        op.create_foreign_key("fk_orders_item", "orders", "items", ["item_id"], ["id"])
        op.execute("UPDATE items SET price = 0")
        """, 'op.drop_constraint("fk_orders_item", "orders", type_="foreignkey")'),
    "aa0000000006_note.py": revision_file("aa0000000006", "aa0000000005", """
        op.add_column("items", sa.Column("note", sa.Text()))
        count = op.get_bind().execute(sa.text("SELECT count(*) FROM items")).scalar()
        if count:
            op.execute("UPDATE items SET note = 'x'")
        """, 'op.drop_column("items", "note")'),
}


@pytest.fixture
def shop(tmp_path: Path, databases: DatabaseFactory) -> Project:
    versions = make_project(tmp_path)
    for name, text in MORE.items():
        write_revision(versions, name, text)
    url = databases.create("fleet_plan")
    return Project(tmp_path, {"DATABASE_URI": url, "TENANTS": "acme globex initech"}, url, url)


def plan_json(project: Project, *args: str) -> dict:
    result = project.fleet("plan", "--format", "json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def statements(payload: dict, revision: str) -> list[dict]:
    (service,) = payload["services"]
    return next(r for r in service["revisions"] if r["revision"] == revision)["statements"]


def locks(payload: dict, revision: str) -> list[tuple[str, str | None, str | None, bool]]:
    return [(lock["relation"], lock["lock"], lock["work"], lock["created"])
            for s in statements(payload, revision) for lock in s["locks"]]


@pytest.mark.slow
def test_fresh_schemas_in_the_services_own_interpreter(shop: Project) -> None:
    # A command as the python key: the revisions are rendered in that interpreter.
    toml = shop.root / "fleet.toml"
    toml.write_text(toml.read_text().replace(
        '[services.shop]\n', f'[services.shop]\npython = ["{sys.executable}"]\n'))
    payload = plan_json(shop)
    (service,) = payload["services"]
    assert service["targets"] == 3
    assert [(p["current"], p["tenants"]) for p in service["starting_points"]] == [
        ([], ["acme", "globex", "initech"])]
    assert [r["targets"] for r in service["revisions"]] == [3] * 6
    # Everything happens to tables created by the plan itself: no lock anyone waits for.
    assert all(lock["created"] for r in service["revisions"] for s in r["statements"]
               for lock in s["locks"])
    assert service["tables"] == [] and service["strongest_lock"] is None
    # The revision that reads the database: what it rendered before the read is shown.
    last = service["revisions"][-1]
    assert last["rendered"] is False and "scalar" in last["unrendered"]
    assert [s["kind"] for s in last["statements"]] == ["ALTER TABLE", "SELECT"]  # the read
    assert payload["summary"]["unrendered"] == 1
    assert service["estimate"]["seconds"] is None  # no history yet
    assert payload["summary"]["estimate_seconds"] is None
    assert not schemas(shop.db_url, "shop_%")  # nothing was executed


@pytest.mark.slow
def test_plan_of_tenants_at_different_revisions(shop: Project) -> None:
    assert shop.fleet("migrate", "--tenant", "globex", "--to", "aa0000000001").returncode == 0
    assert shop.fleet("migrate", "--tenant", "acme", "--to", "aa0000000003").returncode == 0
    query(shop.db_url, "INSERT INTO shop_globex.items (id, name) "
          "SELECT g, 'item ' || g FROM generate_series(1, 2000) g")
    query(shop.db_url, "ANALYZE shop_globex.items")

    payload = plan_json(shop)
    (service,) = payload["services"]
    points = {tuple(p["current"]): p["tenants"] for p in service["starting_points"]}
    assert points == {("aa0000000003",): ["acme"], ("aa0000000001",): ["globex"],
                      (): ["initech"]}
    # Each revision runs on the targets it is pending for.
    assert {r["revision"]: r["targets"] for r in service["revisions"]} == {
        "aa0000000001": 1, "aa0000000002": 2, "aa0000000003": 2, "aa0000000004": 3,
        "aa0000000005": 3, "aa0000000006": 3}

    # ADD COLUMN price: globex's copy of items exists (with its rows), initech's not yet.
    (add_price,) = statements(payload, "aa0000000002")
    (effect,) = add_price["locks"]
    assert (effect["relation"], effect["lock"], effect["work"]) == (
        "items", "ACCESS EXCLUSIVE", None)
    assert effect["copies"] == 1 and effect["created"] is False
    assert effect["largest"]["schema"] == "shop_globex"
    assert effect["largest"]["rows"] == 2000 and effect["largest"]["bytes"] > 8192

    # The concurrent index, inside its autocommit block.
    assert ("items", "SHARE UPDATE EXCLUSIVE", "scan", False) in locks(payload, "aa0000000003")
    # orders is new everywhere; items is not: a rewrite and a possible one, largest in globex.
    assert locks(payload, "aa0000000004") == [
        ("orders", None, None, True),
        ("items", "ACCESS EXCLUSIVE", "rewrite", False),
        ("items", "ACCESS EXCLUSIVE", "may rewrite", False)]
    volatile = statements(payload, "aa0000000004")[1]["locks"][0]
    assert volatile["largest"]["schema"] == "shop_globex" and volatile["copies"] == 2
    # The foreign key locks both tables; the UPDATE without WHERE scans every row.
    assert locks(payload, "aa0000000005") == [
        ("orders", "SHARE ROW EXCLUSIVE", "scan", True),
        ("items", "SHARE ROW EXCLUSIVE", None, False),
        ("items", "ROW EXCLUSIVE", "scan", False)]
    # fleet check's unsafe rules, for the pending revisions.
    codes = {r["revision"]: sorted(f["code"] for f in r["findings"])
             for r in service["revisions"]}
    assert codes["aa0000000004"] == ["FC505", "FC513"]
    assert codes["aa0000000005"] == ["FC510"]
    # The strongest lock per table, held until each target commits.
    assert service["tables"][0]["relation"] == "items"
    assert service["tables"][0]["lock"] == "ACCESS EXCLUSIVE"
    assert service["tables"][0]["work"] == "rewrite"
    # The two migrations above are the ledger's history.
    assert service["estimate"]["samples"] == 2
    assert service["estimate"]["median_seconds_per_target"] > 0
    assert payload["summary"]["estimate_seconds"] > 0
    assert payload["summary"]["at_head"] == 0

    markdown = shop.fleet("plan", "shop", "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert text.startswith("<!-- fleet-plan -->\n## Migration plan\n")
    assert "\x1b" not in text
    assert "<details>" in text and "</details>" in text
    assert "`shop_globex`: ~2,000 rows" in text
    assert "🔴 ACCESS EXCLUSIVE" in text and "**rewrite**" in text
    assert "FC513 volatile-default" in text
    assert "needs a live connection" in text

    plain = shop.fleet("plan", "--tenant", "globex")
    assert plain.returncode == 0, plain.stderr
    assert "shop: 5 revisions on 1 target" in plain.stdout
    assert "ACCESS EXCLUSIVE" in plain.stdout and "shop_globex: ~2,000 rows" in plain.stdout

    # Nothing pending: exit 0 and an empty plan.
    assert shop.fleet("migrate").returncode == 0
    done = plan_json(shop)
    assert done["services"] == [] and done["summary"]["at_head"] == 3
    nothing = shop.fleet("plan", "--format", "markdown")
    assert nothing.returncode == 0
    assert "Nothing to migrate: 3 targets at head." in nothing.stdout
    assert shop.fleet("plan").stdout.strip() == "Nothing to migrate: 3 targets at head."


def test_bad_input_exits_2(shop: Project) -> None:
    unknown = shop.fleet("plan", "nosuch", "--format", "json")
    assert unknown.returncode == 2
    assert json.loads(unknown.stdout)["error"]["message"] == "unknown service 'nosuch'"
    assert shop.fleet("plan", "--format", "yaml").returncode == 2
