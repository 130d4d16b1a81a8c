"""Which statements a SQL string holds, read past comments and literals: the checks that
keep a revision from ending the target's transaction read the first word of each."""

from __future__ import annotations

import pytest

from alembic_fleet.alembic_bridge.replay import ENDS_TRANSACTION
from alembic_fleet.execution.transaction_guard import COMMITS, ROLLS_BACK
from alembic_fleet.model.sql_text import skeleton


@pytest.mark.parametrize("sql", [
    "ROLLBACK",
    "/* x */ ROLLBACK AND CHAIN",
    "/**/ABORT AND CHAIN",
    "SELECT 1; /* x */ ROLLBACK; BEGIN",
    "/* outer /* nested */ still a comment */ ROLLBACK",
    "-- a line\nrollback",
    "SELECT 'a;b'; ROLLBACK",
])
def test_a_rollback_is_seen_behind_comments(sql: str) -> None:
    assert ROLLS_BACK.search(skeleton(sql))
    assert ENDS_TRANSACTION.search(skeleton(sql))


@pytest.mark.parametrize("sql", [
    "ROLLBACK TO SAVEPOINT s",
    "rollback work to s",
    "INSERT INTO t VALUES ('x; ROLLBACK')",
    "INSERT INTO t VALUES (E'it\\'s; ROLLBACK')",
    'SELECT 1 AS "a; ROLLBACK"',
    "CREATE FUNCTION f() RETURNS void AS $body$ BEGIN ROLLBACK; END $body$ LANGUAGE plpgsql",
    "DO $$BEGIN COMMIT; END$$",
    "/* ROLLBACK */ SELECT 1",
    "SELECT CASE WHEN true THEN 1\nEND",
])
def test_no_rollback_in_literals_bodies_or_comments(sql: str) -> None:
    assert not ROLLS_BACK.search(skeleton(sql))
    assert not COMMITS.search(skeleton(sql))


@pytest.mark.parametrize("sql, commits", [
    ("COMMIT", True), ("SELECT 1; /* x */ commit", True), ("END", True),
    ("COMMIT AND CHAIN", True), ("SELECT 'COMMIT'", False),
])
def test_a_commit_is_seen_chained_or_not(sql: str, commits: bool) -> None:
    assert bool(COMMITS.search(skeleton(sql))) is commits


def test_the_skeleton_keeps_statement_boundaries_in_order() -> None:
    sql = "CREATE TABLE \"a;b\" (x text DEFAULT 'c;d'); -- e;f\nDROP TABLE x /* g; */;"
    assert skeleton(sql).count(";") == 2
    assert skeleton("SELECT $1; SELECT a$b$c") == "SELECT $1; SELECT a$b$c"
    assert skeleton("SELECT 'unterminated; ROLLBACK") == "SELECT ''"


@pytest.mark.parametrize("sql", [
    "SELECT 1; -- x\rROLLBACK",  # the server ends a comment at a carriage return too
    "SELECT 1 AS x\u20ac$a$; ROLLBACK; SELECT 2 AS y\u20ac$a$",  # a name, not a quote
])
def test_a_rollback_is_seen_where_the_server_sees_it(sql: str) -> None:
    assert ROLLS_BACK.search(skeleton(sql))


def test_a_dollar_quote_tag_may_hold_any_letter() -> None:
    assert skeleton("SELECT $\u20ac$ ; COMMIT; $\u20ac$") == "SELECT $$"


@pytest.mark.parametrize("sql", [
    r"SELECT 'a\'' ; COMMIT; SELECT ''''",  # standard_conforming_strings = off
    r"SELECT 'x\\'; COMMIT",  # on (the default)
])
def test_a_commit_is_seen_whichever_way_a_backslash_reads(sql: str) -> None:
    """Whether a backslash escapes a quote in ``'...'`` is the session's
    ``standard_conforming_strings``, not the text's: a statement either reading holds
    counts."""
    assert COMMITS.search(skeleton(sql))
    assert ENDS_TRANSACTION.search(skeleton(sql))


def test_a_literal_without_a_backslash_reads_one_way() -> None:
    assert skeleton("SELECT 'it''s'; SELECT E'\\''") == "SELECT ''; SELECT E''"


def test_the_session_s_reading_of_a_backslash_is_taken_when_known() -> None:
    sql = r"INSERT INTO m VALUES ('\', 'Disk full; abort')"
    assert not ROLLS_BACK.search(skeleton(sql, backslashes=False))
    assert ROLLS_BACK.search(skeleton(sql, backslashes=True))  # the other reading
    # Text that changes the setting itself is read both ways whatever the session said.
    both = r"SET standard_conforming_strings = off; SELECT 'a\'' ; COMMIT; SELECT ''''"
    assert COMMITS.search(skeleton(both, backslashes=False))
