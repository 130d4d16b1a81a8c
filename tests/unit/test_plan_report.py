"""``fleet plan``'s pure decisions and its Markdown and JSON shapes, on made-up plans."""

from __future__ import annotations

import json
import re

from alembic_fleet.model.findings import finding
from alembic_fleet.model.revisions import Revision, RevisionGraph
from alembic_fleet.model.targets import Database, Target
from alembic_fleet.reporting.plan_views import MARKER, plan_markdown, plan_review_payload
from alembic_fleet.review.report import (
    CopySize,
    PlannedRevision,
    PlanReport,
    ServicePlan,
    analyze_revisions,
    copy_key,
    estimate,
    largest_copy,
    pending_revisions,
    plan_statements,
    revision_order,
    starting_points,
)

DB = Database("postgresql://u:secret@h/db")
OTHER = Database("postgresql://u:secret@other/db")
GRAPH = RevisionGraph.from_revisions([
    Revision("r1", ()), Revision("r2", ("r1",)), Revision("r3", ("r2",)),
])


def target(tenant: str, database: Database = DB) -> Target:
    return Target("shop", tenant, f"shop_{tenant}", database)


def test_targets_are_grouped_by_where_they_stand() -> None:
    pairs = [(target("a"), ("r1",)), (target("b"), ()), (target("c"), ("r1",)),
             (target("d"), ("r2",))]
    points = starting_points(GRAPH, pairs, GRAPH.heads)
    assert [(p.current, [t.tenant for t in p.targets], p.pending) for p in points] == [
        (("r1",), ["a", "c"], ("r2", "r3")),
        ((), ["b"], ("r1", "r2", "r3")),
        (("r2",), ["d"], ("r3",)),
    ]
    assert revision_order(GRAPH, points) == ("r1", "r2", "r3")
    assert pending_revisions(GRAPH, ["r3"], GRAPH.heads) == ()


def test_a_table_is_new_only_where_every_group_created_it() -> None:
    points = starting_points(GRAPH, [(target("a"), ()), (target("b"), ("r1",))], GRAPH.heads)
    statements = {"r1": ["CREATE TABLE tags (id int)"],
                  "r2": ["ALTER TABLE tags ADD COLUMN name text"],
                  "r3": ["CREATE TABLE notes (id int)", "CREATE INDEX ix ON notes (id)"]}
    analysis = analyze_revisions(statements, points)
    # r2 runs on a (where r1 creates tags just before) and on b (where tags exists already).
    assert not analysis["r2"][0].effects[0].created
    assert analysis["r3"][1].effects[0].created  # notes is new everywhere
    assert [len(analysis[r]) for r in ("r1", "r2", "r3")] == [1, 1, 2]


def test_the_largest_copy_among_the_targets_that_run_it() -> None:
    analysis = analyze_revisions({"r1": ["ALTER TABLE users ADD COLUMN x int",
                                         "ALTER TABLE public.settings ADD COLUMN y int"]},
                                 starting_points(GRAPH, [(target("a"), ())], ["r1"]))["r1"]
    a, b, c = target("a"), target("b"), target("c", OTHER)
    sizes = {
        (DB.key, "shop_a", "users"): CopySize("shop_a", 10, 8192),
        (DB.key, "shop_b", "users"): CopySize("shop_b", None, 1 << 20),
        (OTHER.key, "shop_c", "users"): CopySize("shop_c", 5000, 1 << 19),
        (DB.key, "public", "settings"): CopySize("public", 3, 100),
    }
    users = analysis[0].effects[0].relation
    assert largest_copy(users, [a, c], sizes) == (sizes[(OTHER.key, "shop_c", "users")], 2)
    assert largest_copy(users, [a, b, c], sizes)[0].schema == "shop_b"
    settings = analysis[1].effects[0].relation
    assert copy_key(a, settings) == (DB.key, "public", "settings")
    assert largest_copy(settings, [a, b], sizes) == (sizes[(DB.key, "public", "settings")], 1)
    planned = plan_statements(analysis, [a], sizes)
    assert planned[0].effects[0].largest.schema == "shop_a"


def test_the_estimate_is_the_median_times_the_waves() -> None:
    assert estimate([], 10, 4).seconds is None
    timed = estimate([1.0, 3.0, 2.0, 100.0], 10, 4)
    assert (timed.median, timed.waves, timed.seconds) == (2.5, 3, 7.5)
    assert estimate([2.0], 3, 16).jobs == 3  # no more workers than targets
    assert estimate([2.0], 3, 16).seconds == 2.0


def _report() -> PlanReport:
    points = starting_points(GRAPH, [(target("a"), ()), (target("b"), ("r1",))], GRAPH.heads)
    statements = {"r1": ["CREATE TABLE users (id int, email text)"],
                  "r2": ["CREATE INDEX ix_users_email ON users (email)"],
                  "r3": ["ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
                         "ALTER TABLE users DROP COLUMN email",
                         "UPDATE users SET token = NULL WHERE id | 1 = 1"]}
    analysis = analyze_revisions(statements, points)
    sizes = {(DB.key, "shop_b", "users"): CopySize("shop_b", 12_345, 3 << 20)}
    revisions = []
    for revision in ("r1", "r2", "r3"):
        running = [t for p in points if revision in p.pending for t in p.targets]
        findings = (finding("drop-column", "shop", "revision r3: drops column email",
                            revision="r3", statement="ALTER TABLE users DROP COLUMN email"),
                    ) if revision == "r3" else ()
        revisions.append(PlannedRevision(
            revision, f"message {revision}", f"/x/{revision}.py", len(running),
            plan_statements(analysis[revision], running, sizes),
            "AttributeError: 'NoneType' object has no attribute 'scalar'" if revision == "r2"
            else None, findings))
    service = ServicePlan("shop", points, tuple(revisions), estimate([0.5, 1.5], 2, 8))
    return PlanReport((service,), 8, at_head=4, unreachable={"postgresql://u:***@x/db": "down"},
                      unreachable_targets=2)


def test_markdown_fits_a_pull_request_comment() -> None:
    text = plan_markdown(_report())
    assert text.startswith(MARKER + "\n## Migration plan\n")
    assert "\x1b[" not in text  # no ANSI
    assert ("2 targets to migrate in 1 service, 3 pending revisions; 4 at head; 2 not read "
            "(database unreachable)") in text
    assert "| **shop** | 2 | 3 | 🔴 ACCESS EXCLUSIVE | 1 | 1 | 1 |" in text
    assert "<details>\n<summary><b>shop</b>: 3 revisions on 2 targets" in text
    assert text.count("<details>") == text.count("</details>") == 1
    assert "#### `r3` message r3" in text
    assert "`shop_b`: ~12,345 rows, 3.0 MB" in text
    assert "**rewrite**: ADD COLUMN token with the volatile default gen_random_uuid()" in text
    assert "❌ **FC501 drop-column**" in text
    assert "needs a live connection (AttributeError" in text
    assert "`postgresql://u:***@x/db` could not be read" in text
    # A pipe in SQL does not break the table: every table row has the header's cell count.
    assert "id \\| 1 = 1" in text
    for block in re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.M):
        rows = block.splitlines()
        cells = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
        assert len(cells) == 1, block
    # The table r1 creates is new for the target at base only: r2 runs on b, where it exists.
    assert "| 1 | `CREATE INDEX ix_users_email ON users (email)` | 🟠 SHARE | `users` | " \
           "**scan**" in text


def test_markdown_cuts_details_down_to_fit() -> None:
    report = _report()
    many = PlanReport(tuple(report.services[0].__class__(
        f"svc{i}", s.starting_points, s.revisions, s.estimate)
        for i in range(40) for s in report.services), 8)
    text = plan_markdown(many, limit=20_000)
    assert len(text) < 20_000
    assert "did not fit in one comment: run `fleet plan svc39 --format markdown`" in text
    assert text.count("<details>") == 40


def test_markdown_with_nothing_pending() -> None:
    text = plan_markdown(PlanReport((), 4, at_head=6, ahead=1))
    assert text == (f"{MARKER}\n## Migration plan\n\nNothing to migrate: 6 targets at head, "
                    "1 target ahead of the scripts.\n")


def test_json_is_one_documented_object() -> None:
    payload = json.loads(json.dumps(plan_review_payload(_report())))
    assert set(payload) == {"services", "summary", "unreachable", "warnings"}
    summary = payload["summary"]
    assert summary["targets"] == 2 and summary["revisions"] == 3 and summary["unsafe"] == 1
    assert summary["rewrites"] == 1 and summary["scans"] == 1 and summary["unrendered"] == 1
    assert summary["estimate_seconds"] == 1.0 and summary["unreachable"] == 2
    (service,) = payload["services"]
    assert set(service) == {"service", "targets", "starting_points", "revisions", "tables",
                            "strongest_lock", "estimate"}
    assert service["starting_points"][1] == {
        "current": ["r1"], "targets": 1, "tenants": ["b"], "schemas": ["shop_b"],
        "pending": ["r2", "r3"]}
    r3 = service["revisions"][2]
    assert r3["targets"] == 2 and r3["rendered"] is True
    assert r3["findings"][0]["code"] == "FC501"
    lock = r3["statements"][0]["locks"][0]
    assert lock == {"relation": "users", "schema": None, "kind": "table",
                    "lock": "ACCESS EXCLUSIVE", "blocks": "reads and writes",
                    "work": "rewrite", "why": [lock["why"][0]], "created": False,
                    "copies": 1, "largest": {"schema": "shop_b", "rows": 12345,
                                             "bytes": 3 << 20}}
    assert service["tables"][0]["relation"] == "users"
    assert service["tables"][0]["lock"] == "ACCESS EXCLUSIVE"
    assert service["estimate"] == {"seconds": 1.0, "median_seconds_per_target": 1.0,
                                   "samples": 2, "jobs": 2, "waves": 1}
