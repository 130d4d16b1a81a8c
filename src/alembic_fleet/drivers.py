"""The database driver a service's migrations run on: the one its URL names.

A revision is written against its project's driver, and drivers differ where revisions
notice: psycopg2 interpolates parameters on the client (``sa.literal('0')`` into an integer
column works), psycopg 3 binds them on the server (the same revision fails), asyncpg has no
``%`` placeholders (``format('%I', ...)`` in driver SQL works only there). So the connection a
target migrates on, and everything fleet writes inside that target's transaction, uses the
driver of the service's URL; fleet's own work outside targets (catalog reads, run rows,
tenant commands) stays on psycopg 3, which is always installed.

``postgresql://`` and ``postgres://`` mean psycopg 3. Other drivers are optional extras; a
missing one is refused before anything runs, naming the extra to install.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from alembic_fleet.exceptions import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Driver:
    """One supported DBAPI driver, as SQLAlchemy names it."""

    name: str
    """SQLAlchemy's dialect driver name (``postgresql+NAME``)."""
    modules: tuple[str, ...]
    """What must be importable for it to work."""
    extra: str | None
    """The alembic-fleet extra that installs it (None: always installed)."""
    is_async: bool = False

    @property
    def drivername(self) -> str:
        return f"postgresql+{self.name}"


PSYCOPG = Driver("psycopg", ("psycopg",), None)
DRIVERS = {
    "psycopg": PSYCOPG,
    "psycopg2": Driver("psycopg2", ("psycopg2",), "psycopg2"),
    "asyncpg": Driver("asyncpg", ("asyncpg", "greenlet"), "asyncpg", is_async=True),
}
SCHEMES = {"postgresql": PSYCOPG, "postgres": PSYCOPG,
           **{driver.drivername: driver for driver in DRIVERS.values()}}
SUPPORTED = ("postgresql:// (psycopg 3), postgresql+psycopg2:// or postgresql+asyncpg://")


def for_scheme(scheme: str) -> Driver | None:
    """The driver a URL scheme names (``postgresql+psycopg2``), None when unsupported."""
    return SCHEMES.get(scheme.lower())


def for_url(url: str | None) -> Driver:
    """The driver of a configured URL (None, the embedded server: psycopg 3)."""
    if url is None:
        return PSYCOPG
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return for_scheme(scheme) or PSYCOPG


def libpq_query(query: dict[str, Any], driver: Driver) -> dict[str, Any]:
    """A URL's query for fleet's own psycopg 3 connections when the URL names another
    driver: only what libpq understands (``prepared_statement_cache_size`` or
    ``command_timeout`` are asyncpg's), asyncpg's ``ssl=MODE`` as ``sslmode`` and its
    ``timeout=SECONDS`` as ``connect_timeout``."""
    import psycopg

    known = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    kept = {key: value for key, value in query.items() if key in known}
    ssl = query.get("ssl")
    if driver.name == "asyncpg" and isinstance(ssl, str) and "sslmode" not in kept:
        modes = {"true": "require", "false": "disable", "disable": "disable",
                 "allow": "allow", "prefer": "prefer", "require": "require",
                 "verify-ca": "verify-ca", "verify-full": "verify-full"}
        if ssl.lower() in modes:
            kept["sslmode"] = modes[ssl.lower()]
    if driver.name == "asyncpg" and "timeout" in query and "connect_timeout" not in kept:
        seconds = _seconds(query["timeout"], "?timeout=")  # libpq: whole seconds, 2 at least
        kept["connect_timeout"] = "0" if seconds == 0 else str(max(2, math.ceil(seconds)))
    return kept


CONNECT_TIMEOUT = 10
"""Seconds a new session may take to open before fleet gives up on the server, unless the
URL (``?connect_timeout=``, asyncpg's ``?timeout=``) or ``PGCONNECT_TIMEOUT`` says otherwise."""

LIBPQ_LIMITS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
"""What bounds a libpq session's wait on a server that stopped answering. A frozen host or a
dropped network answers nothing, not even a refusal: without these a command waits for it
without limit (a Kubernetes hook holding the deployment until its own deadline). The
keepalives end a session that waits for a reply after about a minute of silence from the
peer's network stack (30 s idle, then 3 probes 10 s apart); ``tcp_user_timeout`` (ms) ends
one whose sent data goes unacknowledged as long. Neither limits a statement that is merely
slow: a busy server's kernel answers the probes."""


def session_limits(driver: Driver, query: Mapping[str, Any],
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The connect arguments that bound a session's wait on a server that stopped answering
    (:data:`LIBPQ_LIMITS`; asyncpg: its connect ``timeout``, which has no keepalives), each
    only where the URL sets nothing of its own. A URL naming a connection service
    (``?service=``, ``PGSERVICE``) gets none: its service file may set them, and a
    keyword given here would override it (the connect timeout still reaches it through
    ``PGCONNECT_TIMEOUT``, which a service file overrides: :func:`connect_timeout_env`).

    asyncpg's own ``?timeout=`` is handed over as seconds (SQLAlchemy passes the URL's text,
    which asyncpg cannot add to a float); without it ``PGCONNECT_TIMEOUT`` counts, as for
    libpq. ``environ``: the environment the session's libpq reads (default: this
    process's)."""
    environ = os.environ if environ is None else environ
    if driver.is_async:
        if "timeout" in query:
            return {"timeout": _seconds(query["timeout"], "?timeout=")}
        given = environ.get("PGCONNECT_TIMEOUT", "").strip()
        if given:
            return {"timeout": _seconds(given, "PGCONNECT_TIMEOUT=")}
        return {"timeout": float(CONNECT_TIMEOUT)}
    if "service" in query or environ.get("PGSERVICE"):
        return {}
    given = set(query)
    if environ.get("PGCONNECT_TIMEOUT"):
        given.add("connect_timeout")
    if not _knows_tcp_user_timeout(driver):
        given.add("tcp_user_timeout")
    return {key: value for key, value in LIBPQ_LIMITS.items() if key not in given}


def connect_timeout_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``PGCONNECT_TIMEOUT`` for a program fleet starts that connects with libpq by itself
    (``pg_dump``, ``psql``, a legacy env.py's ``alembic``), unless the environment sets it:
    what the URL or a connection service's file sets still wins over it."""
    return {} if environ.get("PGCONNECT_TIMEOUT") else {
        "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}


_REPLACED: dict[str, str | None] = {}
"""What :func:`bound_own_environment` changed in this process's environment, with the
user's value before (None: unset; an empty value counts as unset for libpq, not for the
user's own program)."""


def bound_own_environment() -> None:
    """Put :func:`connect_timeout_env` into fleet's own process environment, for everything
    that connects through libpq without fleet's connect arguments: a connection service's
    URL (psycopg reads ``PGCONNECT_TIMEOUT``, else waits 130 s), and the programs fleet
    starts (``pg_dump``, ``psql``, a legacy env.py's ``alembic``, a service's
    interpreter). Only for fleet's own command (the console script), never on import."""
    added = connect_timeout_env(os.environ)
    for key in added:
        _REPLACED.setdefault(key, os.environ.get(key))
    os.environ.update(added)


def users_environment() -> dict[str, str]:
    """This process's environment without what :func:`bound_own_environment` added: for
    the user's own program (``fleet run -- COMMAND``), whose connections are its own."""
    environment = dict(os.environ)
    for key, before in _REPLACED.items():
        if before is None:
            environment.pop(key, None)
        else:
            environment[key] = before
    return environment


def _seconds(value: Any, name: str) -> float:
    """A timeout's seconds from a URL or the environment, or a usage error naming it."""
    text = value[-1] if isinstance(value, (tuple, list)) else value
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        from alembic_fleet.exceptions import UsageError

        raise UsageError(f"{name}{text!r} is not a number of seconds",
                         hint="give the connect timeout in seconds, e.g. 30 (0: no limit)")
    return seconds


def _knows_tcp_user_timeout(driver: Driver) -> bool:
    """Whether the driver's libpq takes ``tcp_user_timeout`` (libpq 12 and later: an older
    one refuses every session that names it)."""
    try:
        if driver.name == "psycopg2":
            import psycopg2.extensions

            return psycopg2.extensions.libpq_version() >= 120000
        import psycopg

        return psycopg.pq.version() >= 120000
    except Exception:  # cannot tell: leave it out
        return False


def unsupported(scheme: str) -> str:
    """Why ``scheme`` is refused, for a configuration error."""
    driver = scheme.partition("+")[2]
    if driver:
        return (f"unsupported driver {driver!r} in {scheme}://: fleet runs migrations on "
                "psycopg 3, psycopg2 or asyncpg")
    return f"unsupported scheme {scheme!r}: not a PostgreSQL URL"


def require(driver: Driver, where: str, *, interpreter: str | None = None) -> None:
    """Refuse (exit 2) when ``driver`` is not installed, naming the extra to install; in a
    service's own ``interpreter`` (run there), naming that environment instead."""
    for module in driver.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            from alembic_fleet import install

            if interpreter is not None:
                raise ConfigError(
                    f"{where} uses the {driver.name} driver, which the service's own "
                    f"interpreter ({interpreter}) cannot import ({type(exc).__name__}: "
                    f"{exc}); nothing was run",
                    hint=f"add {driver.modules[0]} to that environment (its migrations run "
                    "there), or point the service's 'python' key at one that has it"
                ) from None
            raise ConfigError(
                f"{where} uses the {driver.name} driver, which cannot be imported here "
                f"({type(exc).__name__}: {exc})",
                hint=f"install the extra alembic-fleet[{driver.extra}] where fleet came "
                f"from: pip install {install.requirement(driver.extra)} (or add "
                f"{driver.modules[0]} to the environment fleet runs in)") from None


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, whichever driver raised it (psycopg 3 and asyncpg
    call it ``sqlstate``, psycopg2 ``pgcode``)."""
    original = getattr(error, "orig", None) or error
    for attribute in ("sqlstate", "pgcode"):
        code = getattr(original, attribute, None)
        if isinstance(code, str) and code:
            return code
    return None


class GreenletBridge:
    """Runs blocking SQLAlchemy code on an async driver, the way ``run_sync`` does.

    Alembic and fleet's target code are synchronous. SQLAlchemy's asyncio support runs such
    code in a greenlet that hands every wait on the driver to an event loop: that is what
    ``AsyncConnection.run_sync`` (and Alembic's async env.py template) does. One loop per
    worker, kept for its life, because an asyncpg connection belongs to the loop it was
    opened on and fleet keeps one connection per database for the whole run.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        from sqlalchemy.util import greenlet_spawn

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(greenlet_spawn(fn, *args))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def run_on(url: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` where the driver of ``url`` can run it: for an async driver inside a
    :class:`GreenletBridge` of its own (one-off work such as a downgrade)."""
    if not for_url(url).is_async:
        return fn()
    bridge = GreenletBridge()
    try:
        return bridge.call(fn)
    finally:
        bridge.close()
