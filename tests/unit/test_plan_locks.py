"""``fleet plan``'s lock analysis: statement kinds to PostgreSQL's lock modes (pure)."""

from __future__ import annotations

import ast as python_ast
from pathlib import Path

import pytest

from alembic_fleet.review.locks import Lock, Relation, Work, analyze_statements

MODULE = Path(__file__).resolve().parents[2] / "src" / "alembic_fleet" / "review" / "locks.py"


def one(sql: str, *before: str) -> list[tuple[str, str | None, str | None]]:
    """(relation, lock, work) of the last statement, after ``before``."""
    analysis = analyze_statements([*before, sql])[-1]
    return [(e.relation.display, e.lock.label if e.lock else None,
             e.work.value if e.work else None) for e in analysis.effects]


# --- the documented lock levels, one statement at a time ---------------------------------

CASES = [
    # CREATE INDEX: SHARE, builds from every row; CONCURRENTLY: SHARE UPDATE EXCLUSIVE.
    ("CREATE INDEX ix ON users (email)", [("users", "SHARE", "scan")]),
    ("CREATE UNIQUE INDEX ix ON app.users (email)", [("app.users", "SHARE", "scan")]),
    ("CREATE INDEX CONCURRENTLY ix ON users (email)",
     [("users", "SHARE UPDATE EXCLUSIVE", "scan")]),
    # ALTER TABLE subcommands.
    ("ALTER TABLE users ADD COLUMN bio text", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ADD COLUMN flag boolean DEFAULT false NOT NULL",
     [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
     [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT clock_timestamp()",
     [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users ADD COLUMN created timestamptz DEFAULT now()",
     [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ADD COLUMN n bigserial", [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users ADD COLUMN n int GENERATED ALWAYS AS IDENTITY",
     [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users ADD COLUMN n int GENERATED ALWAYS AS (id * 2) STORED",
     [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users DROP COLUMN bio", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ALTER COLUMN name TYPE varchar(200)",
     [("users", "ACCESS EXCLUSIVE", "may rewrite")]),
    ("ALTER TABLE users ALTER COLUMN age TYPE bigint USING age::bigint",
     [("users", "ACCESS EXCLUSIVE", "may rewrite")]),
    ("ALTER TABLE users ALTER COLUMN name SET NOT NULL", [("users", "ACCESS EXCLUSIVE", "scan")]),
    ("ALTER TABLE users ALTER COLUMN name DROP NOT NULL", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ALTER COLUMN name SET DEFAULT 'x'", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ALTER COLUMN name SET STATISTICS 500",
     [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("ALTER TABLE users ALTER COLUMN name SET (n_distinct = 100)",
     [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("ALTER TABLE users SET (fillfactor = 70, autovacuum_enabled = false)",
     [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("ALTER TABLE users SET (toast.autovacuum_enabled = false)",
     [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("ALTER TABLE users SET (user_catalog_table = true)", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users CLUSTER ON ix", [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("ALTER TABLE users DISABLE TRIGGER ALL", [("users", "SHARE ROW EXCLUSIVE", None)]),
    ("ALTER TABLE users SET LOGGED", [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users SET TABLESPACE fast", [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users OWNER TO app", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users ENABLE ROW LEVEL SECURITY", [("users", "ACCESS EXCLUSIVE", None)]),
    # Constraints: a foreign key locks both tables SHARE ROW EXCLUSIVE.
    ("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)",
     [("orders", "SHARE ROW EXCLUSIVE", "scan"), ("users", "SHARE ROW EXCLUSIVE", None)]),
    ("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) "
     "NOT VALID",
     [("orders", "SHARE ROW EXCLUSIVE", None), ("users", "SHARE ROW EXCLUSIVE", None)]),
    ("ALTER TABLE orders ADD CONSTRAINT ck CHECK (total >= 0)",
     [("orders", "ACCESS EXCLUSIVE", "scan")]),
    ("ALTER TABLE orders ADD CONSTRAINT ck CHECK (total >= 0) NOT VALID",
     [("orders", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE orders VALIDATE CONSTRAINT ck", [("orders", "SHARE UPDATE EXCLUSIVE", "scan")]),
    ("ALTER TABLE orders ADD CONSTRAINT uq UNIQUE (code)",
     [("orders", "ACCESS EXCLUSIVE", "scan")]),
    ("ALTER TABLE orders ADD CONSTRAINT uq UNIQUE USING INDEX ix_code",
     [("orders", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE orders ADD PRIMARY KEY (id)", [("orders", "ACCESS EXCLUSIVE", "scan")]),
    ("ALTER TABLE orders DROP CONSTRAINT ck", [("orders", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE orders ADD COLUMN user_id int REFERENCES users (id)",  # ADD COLUMN wins
     [("orders", "ACCESS EXCLUSIVE", "scan"), ("users", "SHARE ROW EXCLUSIVE", None)]),
    # Partitions: the parent SHARE UPDATE EXCLUSIVE, the attached one is checked.
    ("ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM (1) TO (2)",
     [("events", "SHARE UPDATE EXCLUSIVE", None),
      ("events_2025", "ACCESS EXCLUSIVE", "scan")]),
    ("ALTER TABLE events DETACH PARTITION events_2024",
     [("events", "ACCESS EXCLUSIVE", None), ("events_2024", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE events DETACH PARTITION events_2024 CONCURRENTLY",
     [("events", "SHARE UPDATE EXCLUSIVE", None),
      ("events_2024", "SHARE UPDATE EXCLUSIVE", None)]),
    # Renames.
    ("ALTER TABLE users RENAME TO accounts", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER TABLE users RENAME COLUMN name TO full_name", [("users", "ACCESS EXCLUSIVE", None)]),
    ("ALTER INDEX ix RENAME TO ix2", [("ix", "SHARE UPDATE EXCLUSIVE", None)]),
    # DROP, TRUNCATE, LOCK.
    ("DROP TABLE users", [("users", "ACCESS EXCLUSIVE", None)]),
    ("DROP TABLE IF EXISTS app.a, b CASCADE",
     [("app.a", "ACCESS EXCLUSIVE", None), ("b", "ACCESS EXCLUSIVE", None)]),
    ("DROP INDEX ix_old", [("ix_old", "ACCESS EXCLUSIVE", None)]),
    ("DROP INDEX CONCURRENTLY ix_old", [("ix_old", "SHARE UPDATE EXCLUSIVE", None)]),
    ("DROP VIEW v", [("v", "ACCESS EXCLUSIVE", None)]),
    ("DROP TRIGGER t ON users", [("users", "ACCESS EXCLUSIVE", None)]),
    ("TRUNCATE audit, app.log",
     [("audit", "ACCESS EXCLUSIVE", None), ("app.log", "ACCESS EXCLUSIVE", None)]),
    ("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", [("users", "SHARE ROW EXCLUSIVE", None)]),
    ("LOCK TABLE users", [("users", "ACCESS EXCLUSIVE", None)]),
    # Data: ROW EXCLUSIVE; without WHERE every row.
    ("UPDATE users SET flag = true", [("users", "ROW EXCLUSIVE", "scan")]),
    ("UPDATE users SET flag = true WHERE id < 10", [("users", "ROW EXCLUSIVE", None)]),
    ("DELETE FROM users", [("users", "ROW EXCLUSIVE", "scan")]),
    ("DELETE FROM users WHERE id IN (SELECT user_id FROM bans)",
     [("users", "ROW EXCLUSIVE", None), ("bans", "ACCESS SHARE", None)]),
    ("INSERT INTO users (id) VALUES (1)", [("users", "ROW EXCLUSIVE", None)]),
    ("INSERT INTO archive SELECT * FROM users",
     [("archive", "ROW EXCLUSIVE", None), ("users", "ACCESS SHARE", None)]),
    ("UPDATE users u SET org = o.id FROM orgs o WHERE o.slug = u.slug",
     [("users", "ROW EXCLUSIVE", None), ("orgs", "ACCESS SHARE", None)]),
    ("SELECT * FROM users FOR UPDATE", [("users", "ROW SHARE", None)]),
    # Others.
    ("CREATE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
     [("users", "SHARE ROW EXCLUSIVE", None)]),
    ("COMMENT ON TABLE users IS 'people'", [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("COMMENT ON COLUMN app.users.name IS 'x'", [("app.users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("CREATE STATISTICS s ON a, b FROM users", [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("CREATE POLICY p ON users USING (true)", [("users", "ACCESS EXCLUSIVE", None)]),
    ("REINDEX TABLE users", [("users", "SHARE", "scan")]),
    ("REINDEX INDEX CONCURRENTLY ix", [("ix", "SHARE UPDATE EXCLUSIVE", "scan")]),
    ("CLUSTER users USING ix", [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("VACUUM FULL users", [("users", "ACCESS EXCLUSIVE", "rewrite")]),
    ("VACUUM users", [("users", "SHARE UPDATE EXCLUSIVE", "scan")]),
    ("ANALYZE users", [("users", "SHARE UPDATE EXCLUSIVE", None)]),
    ("REFRESH MATERIALIZED VIEW stats", [("stats", "ACCESS EXCLUSIVE", "rewrite")]),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY stats", [("stats", "EXCLUSIVE", "rewrite")]),
    ("ALTER TABLE users SET SCHEMA archive", [("users", "ACCESS EXCLUSIVE", None)]),
    # Nothing on existing tables.
    ("CREATE TYPE mood AS ENUM ('a', 'b')", []),
    ("ALTER TYPE mood ADD VALUE 'c'", []),
    ("CREATE EXTENSION IF NOT EXISTS citext", []),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", []),
    ("SET lock_timeout = '5s'", []),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_lock_levels(sql: str, expected: list[tuple[str, str | None, str | None]]) -> None:
    assert one(sql) == expected


def test_create_table_locks_nothing_existing_but_what_it_references() -> None:
    effects = analyze_statements([
        "CREATE TABLE items (id int PRIMARY KEY, org int REFERENCES orgs (id), "
        "CONSTRAINT fk_owner FOREIGN KEY (owner) REFERENCES app.users (id))"])[0].effects
    new = effects[0]
    assert (new.relation.name, new.lock, new.created) == ("items", None, True)
    assert [(e.relation.display, e.lock) for e in effects[1:]] == [
        ("orgs", Lock.SHARE_ROW_EXCLUSIVE), ("app.users", Lock.SHARE_ROW_EXCLUSIVE)]
    assert analyze_statements(["CREATE TABLE t (a int)"])[0].strongest is None


def test_partitions_and_inheritance_lock_the_parent() -> None:
    assert one("CREATE TABLE e1 PARTITION OF events FOR VALUES IN (1)")[1] == (
        "events", "ACCESS EXCLUSIVE", None)
    assert one("CREATE TABLE c (x int) INHERITS (p)")[1] == (
        "p", "SHARE UPDATE EXCLUSIVE", None)


def test_several_subcommands_take_the_strongest_and_merge_the_work() -> None:
    analysis = analyze_statements([
        "ALTER TABLE users ALTER COLUMN a SET STATISTICS 100, "
        "ADD COLUMN t uuid DEFAULT gen_random_uuid(), ALTER COLUMN b SET NOT NULL"])[0]
    (effect,) = analysis.effects
    assert effect.lock is Lock.ACCESS_EXCLUSIVE
    assert effect.work is Work.REWRITE
    assert len(effect.why) == 3
    assert analysis.strongest is Lock.ACCESS_EXCLUSIVE
    assert analysis.kind == "ALTER TABLE"


def test_relations_created_earlier_are_new() -> None:
    analyses = analyze_statements([
        "CREATE TABLE tags (id int, name text)",
        "CREATE INDEX ix_tags_name ON tags (name)",
        "ALTER TABLE tags ALTER COLUMN name SET NOT NULL",
        "ALTER TABLE tags RENAME TO labels",
        "ALTER TABLE labels ADD COLUMN x int",
        "DROP INDEX ix_tags_name",
        "CREATE INDEX ix_users ON users (name)",
    ])
    assert all(e.created for a in analyses[:6] for e in a.effects)
    assert [a.strongest for a in analyses[:6]] == [None] * 6
    assert not analyses[6].effects[0].created
    assert analyses[6].strongest is Lock.SHARE


def test_a_schema_qualified_relation_is_another_one() -> None:
    analyses = analyze_statements(["CREATE TABLE app.tags (id int)",
                                   "ALTER TABLE other.tags ADD COLUMN x int",
                                   "ALTER TABLE tags ADD COLUMN y int"])
    assert not analyses[1].effects[0].created
    assert analyses[2].effects[0].created  # unqualified: may be the one just created


def test_validating_a_foreign_key_added_not_valid_locks_the_referenced_table() -> None:
    analyses = analyze_statements([
        "ALTER TABLE orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) "
        "NOT VALID",
        "ALTER TABLE orders VALIDATE CONSTRAINT fk_user"])
    assert [(e.relation.name, e.lock, e.work) for e in analyses[1].effects] == [
        ("orders", Lock.SHARE_UPDATE_EXCLUSIVE, Work.SCAN), ("users", Lock.ROW_SHARE, None)]


def test_several_statements_in_one_string_and_their_text() -> None:
    analyses = analyze_statements(["SET lock_timeout = '1s'; ALTER TABLE a DROP COLUMN b;",
                                   "DROP TABLE c"])
    assert [(a.index, a.kind, a.sql) for a in analyses] == [
        (0, "SET", "SET lock_timeout = '1s'"),
        (0, "ALTER TABLE", "ALTER TABLE a DROP COLUMN b"),
        (1, "DROP TABLE", "DROP TABLE c")]


def test_unparsable_statements_are_kept_and_said() -> None:
    (analysis,) = analyze_statements(["ALTER TABLE users ADD COLUMN"])
    assert analysis.error and analysis.kind == "unparsable" and not analysis.effects


def test_notes_for_what_the_lock_alone_does_not_say() -> None:
    def notes(sql: str) -> str:
        return " ".join(analyze_statements([sql])[0].notes)

    assert "transaction block" in notes("CREATE INDEX CONCURRENTLY ix ON t (a)")
    assert "fails on a table that has rows" in notes("ALTER TABLE t ADD COLUMN a int NOT NULL")
    assert "foreign keys reference" in notes("DROP TABLE t")
    assert "cannot be analysed" in notes("DO $$ BEGIN PERFORM 1; END $$")
    assert "CASCADE" in notes("DROP TABLE t CASCADE")


def test_lock_modes_are_postgresqls() -> None:
    assert [m.label for m in Lock] == [
        "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
        "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"]
    assert Lock.ACCESS_EXCLUSIVE.blocks == "reads and writes"
    assert Lock.SHARE.blocks == Lock.EXCLUSIVE.blocks == "writes"
    assert Lock.SHARE_UPDATE_EXCLUSIVE.blocks == "no reads or writes"
    assert Relation("Users", "app").display == 'app."Users"'


def test_the_module_is_pure() -> None:
    """No database, no Alembic, no output: pglast and fleet's pure modules only."""
    tree = python_ast.parse(MODULE.read_text(encoding="utf-8"))
    imported = set()
    for node in python_ast.walk(tree):
        if isinstance(node, python_ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, python_ast.Import):
            imported.update(alias.name for alias in node.names)
    own = {name for name in imported if name.startswith("alembic_fleet")}
    assert own <= {"alembic_fleet.check.unsafe", "alembic_fleet.model.identifiers"}
    assert not {name.partition(".")[0] for name in imported} & {
        "sqlalchemy", "alembic", "psycopg", "click", "rich"}
