"""The service side of :mod:`alembic_fleet.interpreters`: run inside a service's interpreter.

``python -m alembic_fleet.remote describe VERSION``
    reads a pickled :class:`~alembic_fleet.model.targets.Service` on stdin and writes the
    pickled ``("ok", revisions)`` or ``("error", FleetError)`` on stdout.
``python -m alembic_fleet.remote worker VERSION FD LIFELINE``
    says hello on the socket FD, receives the coordinator's work factory, then runs targets
    exactly as a forked worker does (:func:`alembic_fleet.execution.pool.worker_loop`).

Either refuses (exit 3) a coordinator of another alembic-fleet version before reading
anything pickled. What the service's code prints goes to stderr: stdout and the socket carry
only the protocol.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from dataclasses import replace

from alembic_fleet import __version__

MISMATCH = 3


def main(argv: list[str]) -> int:
    command, version, *rest = argv
    if version != __version__:
        sys.stderr.write(f"error: this interpreter ({sys.executable}) has alembic-fleet "
                         f"{__version__}; the coordinator runs {version}\n")
        return MISMATCH
    if command == "describe":
        return _describe()
    if command == "worker":
        return _worker(int(rest[0]), int(rest[1]))
    sys.stderr.write(f"error: unknown command {command!r}\n")
    return 2


def _protocol_stdout():
    """The real stdout for the protocol; descriptor 1 and ``sys.stdout`` go to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _describe() -> int:
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts
    from alembic_fleet.exceptions import FleetError

    service = pickle.loads(sys.stdin.buffer.read())
    out = _protocol_stdout()
    try:
        graph = ServiceScripts(replace(service, python=None)).graph
        answer: tuple[str, object] = ("ok", list(graph.declarations))
    except FleetError as exc:
        answer = ("error", exc)
    out.write(pickle.dumps(answer))
    out.close()
    return 0


def _worker(fd: int, lifeline: int) -> int:
    from multiprocessing.connection import Connection

    from alembic_fleet.execution.pool import worker_loop

    _protocol_stdout().close()
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
