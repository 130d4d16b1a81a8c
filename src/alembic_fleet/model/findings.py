"""What ``fleet check`` reports: findings with stable codes, pure data.

Every problem ``fleet check`` can find has one code here, with its rule name, severity and
the hint a user needs to fix it. Codes never change meaning once released, so CI filters,
``# fleet: allow`` comments and dashboards can rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """An error fails ``fleet check`` (exit 3); a warning is shown and does not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    """One kind of problem: stable code, short name, default severity and a fix."""

    code: str
    name: str
    severity: Severity
    hint: str


_RULES = (
    # The revision graph (read from the files, no database).
    Rule("FC101", "duplicate-revision", Severity.ERROR,
         "give one of the files a new revision id (Alembic silently keeps only one)"),
    Rule("FC102", "multiple-heads", Severity.ERROR,
         "merge the heads into one line of history: alembic merge heads -m 'merge'"),
    Rule("FC103", "unknown-down-revision", Severity.ERROR,
         "point down_revision at an existing revision id"),
    Rule("FC104", "revision-cycle", Severity.ERROR,
         "break the cycle: a revision cannot descend from itself"),
    Rule("FC105", "revision-id-pattern", Severity.ERROR,
         "use a revision id that matches the service's revision_pattern"),
    Rule("FC106", "file-name-pattern", Severity.ERROR,
         "rename the file to match the service's file_pattern"),
    Rule("FC107", "unreadable-revision", Severity.ERROR,
         "fix the syntax error: Alembic cannot load this file"),
    Rule("FC108", "unsafe-revision-id", Severity.ERROR,
         "use a revision id of letters, digits, '_' and '.' only: Alembic writes it "
         "into SQL unescaped"),
    # The code of each revision.
    Rule("FC201", "missing-downgrade", Severity.ERROR,
         "write a downgrade() that undoes upgrade(), or raise NotImplementedError "
         "with a reason and accept it with '# fleet: allow missing-downgrade: <reason>'"),
    Rule("FC202", "imports-application", Severity.WARNING,
         "copy what the migration needs into the revision: migrations must run with only "
         "Alembic and SQLAlchemy installed, and application code changes after the fact"),
    # Against a scratch schema.
    Rule("FC301", "model-drift", Severity.ERROR,
         "generate the missing revision: fleet revision SERVICE -m MSG --autogenerate"),
    Rule("FC302", "downgrade-roundtrip", Severity.ERROR,
         "make downgrade() undo exactly what upgrade() does"),
    Rule("FC303", "scratch-failed", Severity.ERROR,
         "the migrations fail on an empty schema; run them with 'fleet migrate' "
         "on a scratch database to see the full error"),
    # Against the real databases (--database).
    Rule("FC401", "changed-applied-revision", Severity.ERROR,
         "restore the file as it was applied and put the change in a new revision"),
    Rule("FC402", "tenant-drift", Severity.ERROR,
         "a schema was changed outside the migrations: write a revision for the change, "
         "or undo it by hand"),
    Rule("FC403", "unknown-applied-revision", Severity.WARNING,
         "a target is at a revision the scripts do not have; restore the file"),
    # Unsafe operations in the SQL of new revisions.
    Rule("FC501", "drop-column", Severity.ERROR,
         "stop reading the column in one release, drop it in a later one"),
    Rule("FC502", "drop-table", Severity.ERROR,
         "stop using the table in one release, drop it in a later one"),
    Rule("FC503", "rename-column", Severity.ERROR,
         "add the new column, write to both, backfill, switch reads, then drop the old one"),
    Rule("FC504", "rename-table", Severity.ERROR,
         "create the new table (or a view with the old name) and move over in steps"),
    Rule("FC505", "change-column-type", Severity.ERROR,
         "add a column of the new type, backfill it, switch over, drop the old one"),
    Rule("FC506", "add-not-null-column-without-default", Severity.ERROR,
         "add the column nullable (or with a constant default), backfill, then set NOT NULL"),
    Rule("FC507", "set-not-null", Severity.ERROR,
         "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL (PG 12+)"),
    Rule("FC508", "create-index-not-concurrently", Severity.ERROR,
         "use CREATE INDEX CONCURRENTLY inside op.get_context().autocommit_block()"),
    Rule("FC509", "drop-index-not-concurrently", Severity.ERROR,
         "use DROP INDEX CONCURRENTLY inside op.get_context().autocommit_block()"),
    Rule("FC510", "add-foreign-key-without-not-valid", Severity.ERROR,
         "add the foreign key NOT VALID, then VALIDATE CONSTRAINT in a later revision"),
    Rule("FC511", "add-check-without-not-valid", Severity.ERROR,
         "add the check constraint NOT VALID, then VALIDATE CONSTRAINT in a later revision"),
    Rule("FC512", "add-unique-constraint", Severity.ERROR,
         "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX"),
    Rule("FC513", "volatile-default", Severity.ERROR,
         "add the column without a default, backfill in batches, then set the default"),
    Rule("FC590", "unparsable-sql", Severity.WARNING,
         "fleet could not parse this statement; review it by hand"),
)

RULES: dict[str, Rule] = {rule.code: rule for rule in _RULES}
"""Every rule by code."""

RULES_BY_NAME: dict[str, Rule] = {rule.name: rule for rule in _RULES}
"""Every rule by name (the name is what ``# fleet: allow NAME: reason`` uses)."""


@dataclass(frozen=True)
class Finding:
    """One problem, where it is, and what to do about it.

    ``file`` and ``line`` point at the revision file when there is one; ``tenant`` and
    ``schema`` name the target for database findings; ``statement`` holds the SQL an
    unsafe-operation finding is about.
    """

    code: str
    service: str
    message: str
    file: str | None = None
    line: int | None = None
    revision: str | None = None
    schema: str | None = None
    tenant: str | None = None
    statement: str | None = None
    details: tuple[str, ...] = ()
    accepted: str | None = None
    """The reason given in a ``# fleet: allow`` comment; an accepted finding does not fail."""
    severity: Severity | None = field(default=None)

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def effective_severity(self) -> Severity:
        return self.severity or self.rule.severity

    @property
    def fails(self) -> bool:
        """True when this finding makes ``fleet check`` exit 3."""
        return self.accepted is None and self.effective_severity is Severity.ERROR


def finding(code: str, service: str, message: str, **where: object) -> Finding:
    """A finding for rule ``code`` (a code such as ``FC501`` or a name such as ``drop-column``)."""
    rule = RULES.get(code) or RULES_BY_NAME[code]
    return Finding(rule.code, service, message, **where)  # type: ignore[arg-type]


def sort_key(item: Finding) -> tuple[str, str, int, str, str]:
    """A stable order for output: service, file, line, code, schema."""
    return (item.service, item.file or "", item.line or 0, item.code, item.schema or "")
