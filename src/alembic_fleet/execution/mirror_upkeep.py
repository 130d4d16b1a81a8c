"""After a ``fleet migrate`` with ``version_mirror = true``: the version tables of the run's
targets that have no trustworthy mirror row get fleet's trigger (see
:mod:`alembic_fleet.catalog.version_mirror`).

Only the run's own targets, never another schema; only those the plan did not read from a
trustworthy mirror row, or that the run migrated (a revision may have remade the table),
and of those only the tables the catalog shows without a valid mirror: a no-op run on a
mirrored fleet queries nothing and writes nothing. The first run with the mirror on gives
every existing table its triggers (100 tables per transaction, 500 per server session). It
is a shortcut for later reads, never a failure: a batch that cannot get its triggers (a
lock held past ``lock_timeout``, a table owned by another role) is left to be read
directly, and said in a warning.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import text

from alembic_fleet.catalog import version_mirror
from alembic_fleet.exceptions import FleetError
from alembic_fleet.execution.locking import lock_key, milliseconds
from alembic_fleet.model.plan import Plan
from alembic_fleet.model.status import TargetState
from alembic_fleet.model.targets import Database
from alembic_fleet.redact import display, first_line, scrub
from alembic_fleet.workspace import Workspace

DDL_LOCK = lock_key("alembic-fleet", "version_mirror")
"""Held while the mirror's table and function are made: two first runs at once."""


def keep_up(workspace: Workspace, plan: Plan) -> list[str]:
    """Install the trigger where it is missing; returns warnings."""
    config = workspace.config
    if not config.version_mirror:
        return []
    tables: dict[str, set[tuple[str, str]]] = defaultdict(set)
    databases: dict[str, Database] = {}
    for step in plan.steps:
        target = step.target
        if target.database.key in plan.unreachable or step.status.state in (
                TargetState.UNREACHABLE,):
            continue
        if target in plan.mirrored and not step.upgrade:
            continue  # read from its mirror row: the trigger is there and wrote it
        tables[target.database.key].add(
            (target.schema, workspace.service(target.service).version_table))
        databases[target.database.key] = target.database
    warnings = []
    for key, pairs in tables.items():
        database = databases[key]
        try:
            with workspace.databases.connect(database) as connection:
                failures = _keep_up(connection, config.ledger_schema, sorted(pairs),
                                    milliseconds(config.lock_timeout))
        except FleetError as exc:
            failures = [exc.message]
        except Exception as exc:
            failures = [first_line(exc)]
        if failures:
            warnings.append(
                f"version mirror on {display(database)}: some version tables were left "
                f"without it and are read directly ({scrub(failures[0])})")
    return warnings


def _keep_up(connection: Any, schema: str, pairs: list[tuple[str, str]],
             lock_timeout: str) -> list[str]:
    made = version_mirror.intact(connection, schema)
    connection.rollback()
    if not made:
        with connection.begin():
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK})
            if not version_mirror.intact(connection, schema):
                version_mirror.make(connection, schema)
    rows = connection.execute(text(version_mirror.find_tables_sql(schema, pairs=True)),
                              {"schemas": [s for s, _ in pairs],
                               "tables": [t for _, t in pairs]}).all()
    connection.rollback()
    missing = version_mirror.unmirrored(rows)
    if not missing:
        return []
    failures = version_mirror.install(connection, schema, missing, lock_timeout)
    version_mirror.forget_dropped(connection, schema, lock_timeout)  # one statement
    return failures
