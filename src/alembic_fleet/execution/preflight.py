"""Checks a run makes before it touches any target; each refuses with exit 2.

* A database URL naming a driver (psycopg2, asyncpg) that is not installed.
* A transaction-pooling connection pooler in front of a database: per-target locks are
  session locks, which such a pooler silently breaks (see :mod:`.locking`).
* An applied revision whose file changed since (the ledger's checksums): migrating more
  targets would make them differ from the ones migrated before the edit.
* A ``search_path`` or ``baseline`` on a service whose env.py does not use the helper: its
  targets run as plain ``alembic`` subprocesses, whose env.py sets its own search path and
  knows no baseline, so the keys would be silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from alembic_fleet import drivers, interpreters
from alembic_fleet.exceptions import ChangedRevisionError, UsageError
from alembic_fleet.execution.locking import check_session_pooling
from alembic_fleet.ledger.checksums import applied_drift
from alembic_fleet.model.status import Step
from alembic_fleet.model.targets import Database
from alembic_fleet.redact import display, first_line
from alembic_fleet.workspace import Workspace


def services_by_database(steps: Sequence[Step]) -> list[tuple[Database, set[str]]]:
    """Each database the steps migrate something on, with the services concerned."""
    by_database: dict[str, tuple[Database, set[str]]] = {}
    for step in steps:
        if step.upgrade:
            entry = by_database.setdefault(step.target.database.key,
                                           (step.target.database, set()))
            entry[1].add(step.target.service)
    return list(by_database.values())


def check_drivers(workspace: Workspace, steps: Sequence[Step]) -> None:
    """Refuse a run whose targets name a driver that is not installed (see
    :mod:`alembic_fleet.drivers`), before any target starts. A service with its own
    interpreter migrates there, so its driver is asked for there (psycopg 3 needs no
    asking: alembic-fleet, which that environment has, depends on it)."""
    seen: set[tuple[str, str]] = set()
    for step in steps:
        database = step.target.database
        service = workspace.service(step.target.service)
        driver = drivers.for_url(database.url)
        where = f"service '{service.name}' ({display(database)})"
        if service.python is None:
            if step.upgrade and ("", database.key) not in seen:
                seen.add(("", database.key))
                drivers.require(driver, where)
        elif step.upgrade and driver is not drivers.PSYCOPG and (
                service.name, driver.name) not in seen:
            seen.add((service.name, driver.name))
            interpreters.call(service, "alembic_fleet.remote:require_driver", database.url,
                              where)


def check_direct_sessions(workspace: Workspace, steps: Sequence[Step]) -> None:
    """Refuse transaction-pooling poolers in front of any database ``steps`` migrate."""
    seen: set[str] = set()
    for step in steps:
        database = step.target.database
        if not step.upgrade or database.key in seen or database.is_embedded:
            continue
        seen.add(database.key)
        check_session_pooling(lambda db=database: workspace.databases.connect(db),
                              display(database))


def refuse_legacy_shared_context(workspace: Workspace, steps: Sequence[Step]) -> None:
    """Refuse ``search_path`` / ``baseline`` for a legacy service that is to be migrated."""
    for name in dict.fromkeys(s.target.service for s in steps if s.upgrade):
        service = workspace.service(name)
        keys = [key for key, value in (("search_path", service.search_path),
                                       ("baseline", service.baseline)) if value]
        if keys and not workspace.scripts(name).uses_helper:
            raise UsageError(
                f"service '{name}' has {' and '.join(keys)}, but its env.py does not use "
                "alembic_fleet.env: it runs as plain alembic subprocesses, which set their "
                "own search path and know no baseline",
                hint="call run_migrations() from alembic_fleet.env in its env.py, or set "
                f"search_path = [] (and no baseline) under [services.{name}]")


def refuse_changed_revisions(workspace: Workspace, steps: Sequence[Step]) -> list[str]:
    """Flyway's ``validate`` before a run: refuse when an applied revision file changed.

    Returns warnings: a ledger that cannot be read (locked, no permission) does not stop
    the run, but the user is told the checksums were not verified there.
    """
    changed = []
    warnings = []
    for database, names in services_by_database(steps):
        with workspace.databases.connect(database) as connection:
            for name in sorted(names):
                try:
                    drift = applied_drift(connection, workspace.config.ledger_schema, name,
                                          workspace.graph(name))
                except DBAPIError as exc:
                    connection.rollback()
                    warnings.append(
                        f"checksums of {name} not verified in {display(database)}: "
                        f"{first_line(exc)}")
                    continue
                changed.extend(d for d in drift if d.kind == "changed")
    if changed:
        first = changed[0]
        raise ChangedRevisionError(
            f"{first.service}: revision {first.revision} changed after it was applied to "
            f"{first.schemas} schema(s) (e.g. {first.example_schema}, last on "
            f"{first.last_applied:%Y-%m-%d %H:%M})"
            + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""),
            hint="restore the file and put the change in a new revision; 'fleet check "
            "--database' lists every changed revision; --allow-changed runs anyway")
    return warnings
