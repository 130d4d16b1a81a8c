"""The service side of :mod:`alembic_fleet.interpreters`: run inside a service's interpreter.

``python -m alembic_fleet.remote call VERSION FD LIFELINE``
    says hello on the socket FD, receives ``("module:function", args, secrets)``, calls it
    and sends back ``("ok", result)`` or ``("error", FleetError)`` (the functions below: the
    revision graph, façade commands, ``--sql`` scripts).
``python -m alembic_fleet.remote worker VERSION FD LIFELINE``
    says hello, receives the coordinator's work factory, then runs targets exactly as a
    forked worker does (:func:`alembic_fleet.execution.pool.worker_loop`).

Either refuses (exit 3) a coordinator of another alembic-fleet version before anything is
unpickled (and before importing anything but the version: this module must stay importable
next to any other version's). Either exits when the coordinator dies (end of file on the
LIFELINE descriptor). Standard output is the coordinator's stderr: what the service's code
prints never reaches the protocol, which has its socket.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from alembic_fleet import __version__

MISMATCH = 3
"""The exit code of a service side that refused a coordinator of another version."""

if TYPE_CHECKING:
    from alembic_fleet.model.revisions import Revision
    from alembic_fleet.model.targets import Service


def main(argv: list[str]) -> int:
    command, version, *rest = argv
    if version != __version__:
        sys.stderr.write(f"error: this interpreter ({sys.executable}) has alembic-fleet "
                         f"{__version__}; the coordinator runs {version}\n")
        return MISMATCH
    if command not in ("call", "worker") or len(rest) != 2:
        sys.stderr.write(f"error: unknown command {command!r}\n")
        return 2
    from multiprocessing.connection import Connection

    from alembic_fleet.reporting import streams

    fd, lifeline = int(rest[0]), int(rest[1])
    _watch(lifeline)
    streams.stdout_is_stderr()
    conn = Connection(fd)
    conn.send(("hello", __version__))
    if command == "call":
        _call(conn)
    else:
        _worker(conn)
    return 0


def _watch(lifeline: int) -> None:
    """Exit at once when the coordinator dies (its end of the lifeline closes)."""

    def watch() -> None:
        os.read(lifeline, 1)
        os._exit(1)

    threading.Thread(target=watch, name="fleet-lifeline", daemon=True).start()


def _register(secrets: tuple[str, ...]) -> None:
    from alembic_fleet.redact import register_secret

    for secret in secrets:
        register_secret(secret)


def _call(conn: Any) -> None:
    """Run the requested function; its result (or a FleetError) goes back."""
    import importlib

    from alembic_fleet.exceptions import FleetError, RevisionError
    from alembic_fleet.redact import scrub

    function, args, secrets = conn.recv()
    _register(secrets)
    module, _, name = function.partition(":")
    try:
        answer: tuple[str, object] = ("ok", getattr(importlib.import_module(module), name)(
            *args))
    except FleetError as exc:
        answer = ("error", exc)
    except BaseException as exc:  # SystemExit from a revision too: say where it came from
        where = _service_frame(exc)
        what = (f"{where} called sys.exit({exc.code!r})" if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {exc}" + (f" (in {where})" if where else ""))
        kind = RevisionError if where else FleetError  # the service's code: exit 2
        answer = ("error", kind(
            scrub(f"in the service's interpreter ({sys.executable}): {what}"),
            hint="fix that file" if where
            else "this is a bug in alembic-fleet: please report it"))
    conn.send(answer)


def _service_frame(exc: BaseException) -> str | None:
    """The last frame of a traceback outside alembic-fleet, Alembic, SQLAlchemy and the
    standard library: the revision or env.py that raised (``file:line``)."""
    skip = ("alembic_fleet", "alembic", "sqlalchemy", "importlib", "runpy")
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = frame.filename.replace("\\", "/").split("/")
        if not any(part in skip for part in parts) and not frame.filename.startswith(
                (sys.prefix, sys.base_prefix, "<")):
            return f"{frame.filename}:{frame.lineno}"
    return None


def _worker(conn: Any) -> None:
    from alembic_fleet.execution.pool import worker_loop

    factory, secrets = conn.recv()
    _register(secrets)
    factory.services = {name: replace(service, python=None)
                        for name, service in factory.services.items()}
    worker_loop(conn, factory, os.getppid())


def revisions_of(service: Service) -> list[Revision]:
    """The service's revisions in load order (for the coordinator's graph)."""
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts

    return list(ServiceScripts(replace(service, python=None)).graph.declarations)


def run_command(config_file: str, name: str, command: str, args: tuple, kwargs: dict
                ) -> object:
    """A façade command on a workspace in which service ``name`` is local (see
    :func:`alembic_fleet.interpreters.run_command`)."""
    from alembic_fleet import commands
    from alembic_fleet.workspace import Workspace

    with Workspace.open(config_file) as workspace:
        services = workspace.config.services
        services[name] = replace(services[name], python=None)
        return getattr(commands, command)(workspace, *args, **kwargs)


def upgrade_sql(service: Service, requests: list[tuple]) -> list[str]:
    """``fleet migrate --sql`` for many targets of one service: one script each."""
    from alembic_fleet.alembic_bridge import runner
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts

    scripts = ServiceScripts(replace(service, python=None))
    return [runner.upgrade_sql(scripts, *request[:-1], fresh=request[-1])
            for request in requests]


def require_driver(url: str | None, where: str) -> None:
    """The driver ``url`` names, importable in this interpreter (the service's own), or a
    ConfigError saying to add it to this environment."""
    from alembic_fleet import drivers

    drivers.require(drivers.for_url(url), where, interpreter=sys.executable)


def resolve(service: Service, revision: str) -> tuple[str, ...]:
    """A destination as Alembic resolves it (partial ids, branch labels)."""
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts

    return ServiceScripts(replace(service, python=None)).resolve(revision)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
