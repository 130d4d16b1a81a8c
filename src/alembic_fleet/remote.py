"""The service side of :mod:`alembic_fleet.interpreters`: run inside a service's interpreter.

``python -m alembic_fleet.remote call VERSION``
    reads a pickled ``("module:function", args)`` on stdin, calls it and writes the pickled
    ``("ok", result)`` or ``("error", FleetError)`` on stdout (the functions below: the
    revision graph, façade commands, ``--sql`` scripts).
``python -m alembic_fleet.remote worker VERSION FD LIFELINE``
    says hello on the socket FD, receives the coordinator's work factory, then runs targets
    exactly as a forked worker does (:func:`alembic_fleet.execution.pool.worker_loop`).

Either refuses (exit 3) a coordinator of another alembic-fleet version before reading
anything pickled (and before importing anything but the version: this module must stay
importable next to any other version's). What the service's code prints goes to stderr:
stdout and the socket carry only the protocol.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

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
    if command == "call":
        return _call()
    if command == "worker":
        return _worker(int(rest[0]), int(rest[1]))
    sys.stderr.write(f"error: unknown command {command!r}\n")
    return 2


def _call() -> int:
    """Run the requested function; its result (or FleetError) goes back pickled."""
    import importlib

    from alembic_fleet.exceptions import FleetError
    from alembic_fleet.reporting import streams

    function, args = pickle.loads(sys.stdin.buffer.read())
    out = streams.protocol_stdout()
    module, _, name = function.partition(":")
    try:
        answer: tuple[str, object] = ("ok", getattr(importlib.import_module(module), name)(
            *args))
    except FleetError as exc:
        answer = ("error", exc)
    except Exception as exc:  # reported by the coordinator like any internal error
        answer = ("error", FleetError(
            f"internal error in {sys.executable}: {type(exc).__name__}: {exc}",
            hint="this is a bug in alembic-fleet: please report it"))
    out.write(pickle.dumps(answer))
    out.close()
    return 0


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


def resolve(service: Service, revision: str) -> tuple[str, ...]:
    """A destination as Alembic resolves it (partial ids, branch labels)."""
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts

    return ServiceScripts(replace(service, python=None)).resolve(revision)


def _worker(fd: int, lifeline: int) -> int:
    from multiprocessing.connection import Connection

    from alembic_fleet.execution.pool import worker_loop
    from alembic_fleet.reporting import streams

    streams.protocol_stdout().close()
    parent = os.getppid()

    def watch() -> None:  # the coordinator died (its end of the lifeline closed)
        os.read(lifeline, 1)
        os._exit(1)

    threading.Thread(target=watch, name="fleet-lifeline", daemon=True).start()
    conn = Connection(fd)
    conn.send(("hello", __version__))
    factory = conn.recv()
    factory.services = {name: replace(service, python=None)
                        for name, service in factory.services.items()}
    worker_loop(conn, factory, parent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
