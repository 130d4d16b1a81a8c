"""PostgreSQL's client programs fleet runs: ``pg_dump``, found the same way everywhere.

``fleet tenants remove --dump`` writes a tenant's schemas to a file; a reference schema's
DDL is captured once (:mod:`alembic_fleet.execution.provision`). Both want a ``pg_dump`` able
to dump the server: the user's own on ``PATH`` first, else the embedded server's, of the
server's major version when there is one, else the newest one at least as new. The password
travels in the child's environment (``PGPASSWORD``), never in its argv, which every local
user sees in ``ps``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache

from sqlalchemy.engine import URL

from alembic_fleet import drivers
from alembic_fleet.databases import Databases, libpq_url
from alembic_fleet.exceptions import FleetError, UsageError
from alembic_fleet.model.targets import Database


@cache
def _version(program: str) -> int | None:
    """The major version a ``pg_dump`` reports, or None when it cannot be run."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = subprocess.run([program, "--version"], capture_output=True, text=True).stdout
        return int(text.split()[-1].split(".")[0])
    return None


def find_pg_dump(databases: Databases, server: int, *, purpose: str = "--dump") -> str:
    """The pg_dump to use for a server of major version ``server``.

    The same major version when one is at hand (its output restores on that server); else
    the newest one at least as new as the server (pg_dump cannot dump newer servers).
    Raises :class:`UsageError` when there is none.
    """
    candidates = [p for p in (shutil.which("pg_dump"),) if p]  # the user's own tools first
    with contextlib.suppress(FleetError):  # the embedded package may not be installed
        candidates.append(str(databases.embedded.bin_path() / "pg_dump"))
    versions = {c: v for c in candidates if (v := _version(c)) is not None}
    usable = {c: v for c, v in versions.items() if v >= server}
    if not usable:
        raise UsageError(f"{purpose} needs pg_dump {server} or newer",
                         hint="install the PostgreSQL client tools of the server's version")
    same = [c for c, v in usable.items() if v == server]
    return same[0] if same else max(usable, key=usable.__getitem__)


def without_password(url: URL) -> tuple[URL, str | None]:
    """``url`` with no password (in the authority or as ``?password=``), and the password."""
    query = dict(url.query)
    password = url.password or query.pop("password", None)
    bare = URL.create(url.drivername, username=url.username, host=url.host, port=url.port,
                      database=url.database, query=query)
    return bare, str(password) if password else None


def pg_dump_command(databases: Databases, database: Database, program: str,
                    arguments: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``program ARGUMENTS URL`` for ``database``: the connect
    timeout in ``PGCONNECT_TIMEOUT`` and TCP keepalives in the URL, as fleet's own sessions
    have them (see :func:`alembic_fleet.drivers.session_limits`; not ``tcp_user_timeout``,
    which the program's libpq may be too old for)."""
    url, password = without_password(databases.url(database))
    keepalives = {key: value for key, value
                  in drivers.session_limits(drivers.PSYCOPG, url.query).items()
                  if key.startswith("keepalives")}
    url = url.update_query_dict(keepalives)
    env = {**os.environ, **drivers.connect_timeout_env(os.environ),
           **({"PGPASSWORD": password} if password else {})}
    return [program, *arguments, libpq_url(url)], env
