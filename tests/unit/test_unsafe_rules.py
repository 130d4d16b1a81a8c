"""Unsafe-operation rules on offline-rendered SQL, and ``# fleet: allow`` comments (pure)."""

from __future__ import annotations

import pytest

from alembic_fleet.check.accept import Acceptance, acceptances
from alembic_fleet.check.unsafe import (
    VOLATILE_FUNCTIONS,
    UnsafeOperation,
    lint_statements,
)
from alembic_fleet.model.findings import RULES_BY_NAME


def rules(*statements: str) -> list[str]:
    return [operation.rule for operation in lint_statements(statements)]


# --- one positive case per rule: exactly that rule, nothing else --------------------------

POSITIVE = [
    ("drop-column", "ALTER TABLE users DROP COLUMN email"),
    ("drop-column", "ALTER TABLE tenant_acme.users DROP COLUMN email"),
    ("drop-table", "DROP TABLE users"),
    ("drop-table", "DROP TABLE tenant_acme.users"),
    ("rename-column", "ALTER TABLE users RENAME name TO full_name"),
    ("rename-column", "ALTER TABLE tenant_acme.users RENAME COLUMN name TO full_name"),
    ("rename-table", "ALTER TABLE users RENAME TO accounts"),
    ("rename-table", "ALTER TABLE tenant_acme.users RENAME TO accounts"),
    ("change-column-type", "ALTER TABLE users ALTER COLUMN name TYPE TEXT"),
    (
        "change-column-type",
        "ALTER TABLE tenant_acme.users ALTER COLUMN age TYPE BIGINT USING age::bigint",
    ),
    ("add-not-null-column-without-default", "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL"),
    (
        "add-not-null-column-without-default",
        "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL DEFAULT NULL",
    ),
    ("set-not-null", "ALTER TABLE users ALTER COLUMN name SET NOT NULL"),
    ("set-not-null", "ALTER TABLE tenant_acme.users ALTER COLUMN name SET NOT NULL"),
    ("create-index-not-concurrently", "CREATE INDEX ix_users_email ON users (email)"),
    (
        "create-index-not-concurrently",
        "CREATE UNIQUE INDEX ix_users_email ON tenant_acme.users (email)",
    ),
    ("drop-index-not-concurrently", "DROP INDEX ix_users_email"),
    ("drop-index-not-concurrently", "DROP INDEX tenant_acme.ix_users_email"),
    (
        "add-foreign-key-without-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY(user_id) REFERENCES users (id)",
    ),
    (
        "add-foreign-key-without-not-valid",
        "ALTER TABLE tenant_acme.orders ADD CONSTRAINT fk_orders_user_id_users "
        "FOREIGN KEY(user_id) REFERENCES tenant_acme.users (id) ON DELETE CASCADE",
    ),
    (
        "add-foreign-key-without-not-valid",
        "ALTER TABLE orders ADD COLUMN user_id INTEGER REFERENCES users (id)",
    ),
    (
        "add-check-without-not-valid",
        "ALTER TABLE users ADD CONSTRAINT ck_users_age CHECK (age >= 0)",
    ),
    ("add-check-without-not-valid", "ALTER TABLE users ADD COLUMN age INTEGER CHECK (age >= 0)"),
    ("add-unique-constraint", "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)"),
    ("add-unique-constraint", "ALTER TABLE tenant_acme.users ADD PRIMARY KEY (id)"),
    ("add-unique-constraint", "ALTER TABLE users ADD COLUMN handle VARCHAR(40) UNIQUE"),
    ("volatile-default", "ALTER TABLE users ADD COLUMN token UUID DEFAULT gen_random_uuid()"),
    ("volatile-default", "ALTER TABLE users ADD COLUMN r FLOAT DEFAULT random()"),
    (
        "volatile-default",
        "ALTER TABLE users ADD COLUMN token UUID DEFAULT public.uuid_generate_v4()",
    ),
    (
        "volatile-default",
        "ALTER TABLE users ADD COLUMN seen TIMESTAMP WITHOUT TIME ZONE "
        "DEFAULT clock_timestamp() NOT NULL",
    ),
    ("volatile-default", "ALTER TABLE users ADD COLUMN code TEXT DEFAULT md5(random()::text)"),
    ("volatile-default", "ALTER TABLE users ADD COLUMN n BIGINT DEFAULT nextval('users_n_seq')"),
    ("volatile-default", "ALTER TABLE users ADD COLUMN n BIGSERIAL"),
    ("unparsable-sql", "ALTER TABLE users DROP COLUM email"),
]


@pytest.mark.parametrize(("rule", "sql"), POSITIVE)
def test_unsafe_statement_yields_exactly_its_rule(rule: str, sql: str) -> None:
    assert rules(sql) == [rule]


def test_every_unsafe_rule_has_a_positive_case() -> None:
    unsafe = {name for name, rule in RULES_BY_NAME.items() if rule.code.startswith("FC5")}
    assert {rule for rule, _ in POSITIVE} == unsafe


# --- one negative case (the safe pattern) per rule -----------------------------------------

SAFE = [
    # drop-column / drop-table / renames: nothing but the new table is touched.
    "ALTER TABLE users DROP CONSTRAINT uq_users_email",
    "DROP VIEW users_v",
    "DROP SEQUENCE users_id_seq",
    "ALTER INDEX ix_users_email RENAME TO ix_users_mail",
    "ALTER TABLE users RENAME CONSTRAINT ck_a TO ck_b",
    # change-column-type / set-not-null: other ALTER COLUMN forms.
    "ALTER TABLE users ALTER COLUMN name DROP NOT NULL",
    "ALTER TABLE users ALTER COLUMN name SET DEFAULT 'x'",
    "ALTER TABLE users ALTER COLUMN name DROP DEFAULT",
    "COMMENT ON COLUMN users.name IS 'full name'",
    # add-not-null-column-without-default
    "ALTER TABLE users ADD COLUMN nickname VARCHAR(40)",
    "ALTER TABLE users ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'x'",
    "ALTER TABLE users ADD COLUMN n INTEGER GENERATED ALWAYS AS IDENTITY",
    # create-index / drop-index
    "CREATE INDEX CONCURRENTLY ix_users_email ON users (email)",
    "CREATE UNIQUE INDEX CONCURRENTLY ix_users_email ON tenant_acme.users (email)",
    "DROP INDEX CONCURRENTLY ix_users_email",
    "DROP INDEX CONCURRENTLY IF EXISTS tenant_acme.ix_users_email",
    # add-foreign-key / add-check: NOT VALID, then VALIDATE.
    "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY(user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE orders VALIDATE CONSTRAINT fk",
    "ALTER TABLE users ADD CONSTRAINT ck_users_age CHECK (age >= 0) NOT VALID",
    "ALTER TABLE users VALIDATE CONSTRAINT ck_users_age",
    # add-unique-constraint: adopt an index built concurrently.
    "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX ix_users_email",
    "ALTER TABLE users ADD CONSTRAINT pk_users PRIMARY KEY USING INDEX ix_users_id",
    # volatile-default: constants and STABLE functions are fast defaults (PG 11+).
    "ALTER TABLE users ADD COLUMN created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL",
    "ALTER TABLE users ADD COLUMN created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP",
    "ALTER TABLE users ADD COLUMN day DATE DEFAULT CURRENT_DATE",
    "ALTER TABLE users ADD COLUMN active BOOLEAN DEFAULT true NOT NULL",
    "ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid()",
    # CREATE TABLE with everything inline is always fine.
    "CREATE TABLE orders (id SERIAL NOT NULL, user_id INTEGER NOT NULL, "
    "token UUID DEFAULT gen_random_uuid(), PRIMARY KEY (id), "
    "FOREIGN KEY(user_id) REFERENCES users (id), UNIQUE (token), CHECK (id > 0))",
    # unparsable-sql: what Alembic's offline mode adds around the DDL.
    "BEGIN",
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
    "UPDATE alembic_version SET version_num='ae1027a6acf' WHERE alembic_version.version_num = "
    "'1975ea83b712'",
    "COMMIT",
    "",
    "   ",
    "-- only a comment",
]


@pytest.mark.parametrize("sql", SAFE)
def test_safe_statement_yields_nothing(sql: str) -> None:
    assert lint_statements([sql]) == []


def test_volatile_functions_leave_out_stable_ones() -> None:
    assert {"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp"} <= (
        VOLATILE_FUNCTIONS
    )
    assert {"timeofday", "nextval"} <= VOLATILE_FUNCTIONS
    assert not {"now", "statement_timestamp", "transaction_timestamp"} & VOLATILE_FUNCTIONS


# --- the operation itself ------------------------------------------------------------------


def test_operation_carries_rule_statement_message_and_index() -> None:
    found = lint_statements(
        ["CREATE TABLE a (id INTEGER)", "  ALTER TABLE users DROP COLUMN email\n"]
    )
    assert found == [
        UnsafeOperation(
            rule="drop-column",
            statement="ALTER TABLE users DROP COLUMN email",
            message='drops column "email" of table "users"',
            index=1,
        )
    ]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP TABLE tenant_acme.users", 'drops table "tenant_acme"."users"'),
        (
            "ALTER TABLE users RENAME COLUMN name TO full_name",
            'renames column "name" of table "users" to "full_name"',
        ),
        ("ALTER TABLE users RENAME TO accounts", 'renames table "users" to "accounts"'),
        (
            "ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(80)",
            'changes the type of column "name" of table "users" to varchar(80)',
        ),
        (
            "CREATE INDEX ix_users_email ON tenant_acme.users (email)",
            'creates index "ix_users_email" on table "tenant_acme"."users" without CONCURRENTLY',
        ),
        (
            "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY(user_id) REFERENCES users (id)",
            'adds foreign key "fk" on table "orders" referencing "users" without NOT VALID',
        ),
        (
            "ALTER TABLE users ADD COLUMN token UUID DEFAULT gen_random_uuid()",
            'adds column "token" to table "users" with the volatile default gen_random_uuid()',
        ),
        (
            'ALTER TABLE "Users" DROP COLUMN "E""mail"',
            'drops column "E""mail" of table "Users"',
        ),
    ],
)
def test_messages_quote_identifiers(sql: str, message: str) -> None:
    [operation] = lint_statements([sql])
    assert operation.message == message


def test_every_reported_rule_is_a_known_rule() -> None:
    found = lint_statements([sql for _, sql in POSITIVE])
    assert {operation.rule for operation in found} <= set(RULES_BY_NAME)
    assert [operation.index for operation in found] == list(range(len(POSITIVE)))


# --- several statements and commands -------------------------------------------------------


def test_several_statements_in_one_string_are_all_checked() -> None:
    found = lint_statements(
        ["ALTER TABLE users DROP COLUMN email; CREATE INDEX ix ON orders (total);\nDROP TABLE x;"]
    )
    assert [(op.rule, op.statement, op.index) for op in found] == [
        ("drop-column", "ALTER TABLE users DROP COLUMN email", 0),
        ("create-index-not-concurrently", "CREATE INDEX ix ON orders (total)", 0),
        ("drop-table", "DROP TABLE x", 0),
    ]


def test_several_commands_in_one_alter_table_are_all_checked() -> None:
    assert rules(
        "ALTER TABLE users DROP COLUMN email, ALTER COLUMN name TYPE TEXT, "
        "ALTER COLUMN name SET NOT NULL"
    ) == ["drop-column", "change-column-type", "set-not-null"]


def test_drop_of_several_tables_reports_each() -> None:
    found = lint_statements(["DROP TABLE users, tenant_acme.orders"])
    assert [op.message for op in found] == [
        'drops table "users"',
        'drops table "tenant_acme"."orders"',
    ]


def test_not_null_column_with_volatile_default_is_only_volatile_default() -> None:
    assert rules("ALTER TABLE users ADD COLUMN t UUID NOT NULL DEFAULT gen_random_uuid()") == [
        "volatile-default"
    ]


# --- the created-table exemption -----------------------------------------------------------


def test_everything_on_a_table_created_in_the_same_sequence_is_safe() -> None:
    statements = [
        "CREATE TABLE invoices (id SERIAL NOT NULL, user_id INTEGER, PRIMARY KEY (id))",
        "CREATE INDEX ix_invoices_user_id ON invoices (user_id)",
        "CREATE UNIQUE INDEX ix_invoices_id ON invoices (id)",
        "ALTER TABLE invoices ADD CONSTRAINT fk FOREIGN KEY(user_id) REFERENCES users (id)",
        "ALTER TABLE invoices ADD CONSTRAINT ck CHECK (id > 0)",
        "ALTER TABLE invoices ADD CONSTRAINT uq UNIQUE (user_id)",
        "ALTER TABLE invoices ADD COLUMN total NUMERIC NOT NULL",
        "ALTER TABLE invoices ADD COLUMN token UUID DEFAULT gen_random_uuid()",
        "ALTER TABLE invoices ALTER COLUMN user_id SET NOT NULL",
        "ALTER TABLE invoices ALTER COLUMN total TYPE BIGINT",
        "ALTER TABLE invoices RENAME COLUMN total TO amount",
        "ALTER TABLE invoices DROP COLUMN token",
        "DROP INDEX ix_invoices_user_id",
        "ALTER TABLE invoices RENAME TO bills",
        "CREATE INDEX ix_bills_amount ON bills (amount)",
        "DROP TABLE bills",
    ]
    assert lint_statements(statements) == []


def test_created_table_exemption_follows_schema_qualified_names() -> None:
    statements = [
        "CREATE TABLE tenant_acme.invoices (id INTEGER NOT NULL)",
        "CREATE INDEX ix_invoices_id ON tenant_acme.invoices (id)",
        "CREATE INDEX ix_invoices_id2 ON invoices (id)",
        "ALTER TABLE tenant_acme.invoices ADD COLUMN total NUMERIC NOT NULL",
        "ALTER TABLE tenant_other.invoices ADD COLUMN total NUMERIC NOT NULL",
    ]
    assert [(op.rule, op.index) for op in lint_statements(statements)] == [
        ("add-not-null-column-without-default", 4)
    ]


def test_created_table_names_are_case_insensitive() -> None:
    assert rules('CREATE TABLE "Invoices" (id INTEGER)', "CREATE INDEX ix ON invoices (id)") == []


def test_a_table_created_later_does_not_exempt_earlier_statements() -> None:
    found = lint_statements(
        ["CREATE INDEX ix ON invoices (id)", "CREATE TABLE invoices (id INTEGER)"]
    )
    assert [(op.rule, op.index) for op in found] == [("create-index-not-concurrently", 0)]


def test_foreign_key_to_a_new_table_from_an_old_one_is_still_unsafe() -> None:
    assert rules(
        "CREATE TABLE plans (id INTEGER PRIMARY KEY)",
        "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY(plan_id) REFERENCES plans (id)",
    ) == ["add-foreign-key-without-not-valid"]


def test_create_table_in_a_multi_statement_string_exempts_the_rest() -> None:
    assert rules("CREATE TABLE t (id INTEGER); CREATE INDEX ix ON t (id)") == []


def test_create_table_as_counts_as_created() -> None:
    assert rules("CREATE TABLE t AS SELECT id FROM users", "CREATE INDEX ix ON t (id)") == []


# --- unparsable SQL ------------------------------------------------------------------------


def test_unparsable_statement_is_reported_and_the_rest_still_checked() -> None:
    found = lint_statements(
        ["  ALTER TABLE users DROP COLUM email  ", "ALTER TABLE users DROP COLUMN email"]
    )
    assert [(op.rule, op.index) for op in found] == [("unparsable-sql", 0), ("drop-column", 1)]
    assert found[0].statement == "ALTER TABLE users DROP COLUM email"
    assert "syntax error" in found[0].message


def test_empty_sequence_yields_nothing() -> None:
    assert lint_statements([]) == []


# --- acceptances() -------------------------------------------------------------------------

REVISION = '''"""drop the email column

Revision ID: ae1027a6acf
"""
from alembic import op

# fleet: allow drop-column: email moved to the contacts table in release 2.3

NOTE = "# fleet: allow drop-table: inside a string, not a comment"


def upgrade() -> None:
    op.drop_column("users", "email")
    op.drop_table("legacy")  # fleet: allow drop-table, rename-table: archived in 2.1
    # fleet: allow set-not-null:
    # fleet: allow change-column-type
    # fleet: allow no-such-rule, add-unique-constraint: the table has ten rows


def downgrade() -> None:
    raise NotImplementedError  # fleet: allow missing-downgrade:   data cannot come back
'''


def test_acceptances_with_reason() -> None:
    accepted = acceptances(REVISION)
    assert accepted["drop-column"] == Acceptance(
        rule="drop-column",
        reason="email moved to the contacts table in release 2.3",
        line=7,
    )
    assert accepted["missing-downgrade"] == Acceptance(
        "missing-downgrade", "data cannot come back", 21
    )


def test_acceptances_of_several_rules_share_the_reason_and_line() -> None:
    accepted = acceptances(REVISION)
    assert accepted["drop-table"] == Acceptance("drop-table", "archived in 2.1", 14)
    assert accepted["rename-table"] == Acceptance("rename-table", "archived in 2.1", 14)


def test_comment_without_reason_is_not_an_acceptance() -> None:
    accepted = acceptances(REVISION)
    assert "set-not-null" not in accepted
    assert "change-column-type" not in accepted


def test_unknown_rule_names_are_ignored() -> None:
    accepted = acceptances(REVISION)
    assert "no-such-rule" not in accepted
    assert accepted["add-unique-constraint"].reason == "the table has ten rows"


def test_acceptances_exact_set() -> None:
    assert set(acceptances(REVISION)) == {
        "drop-column",
        "drop-table",
        "rename-table",
        "add-unique-constraint",
        "missing-downgrade",
    }


def test_string_that_looks_like_a_comment_is_not_an_acceptance() -> None:
    assert acceptances('x = "# fleet: allow rename-column: nope"\n') == {}


def test_first_acceptance_of_a_rule_wins() -> None:
    source = "# fleet: allow drop-column: first\n# fleet: allow drop-column: second\n"
    assert acceptances(source) == {"drop-column": Acceptance("drop-column", "first", 1)}


def test_acceptances_spacing_is_lenient() -> None:
    source = "#fleet:allow  drop-column ,rename-column :  why not  \n"
    assert acceptances(source) == {
        "drop-column": Acceptance("drop-column", "why not", 1),
        "rename-column": Acceptance("rename-column", "why not", 1),
    }


def test_acceptances_in_source_python_cannot_tokenize() -> None:
    source = 'x = """never closed\n# fleet: allow drop-table: still read\n'
    assert acceptances(source) == {"drop-table": Acceptance("drop-table", "still read", 2)}


def test_no_comments_no_acceptances() -> None:
    assert acceptances("") == {}
    assert acceptances("def upgrade():\n    pass\n") == {}
