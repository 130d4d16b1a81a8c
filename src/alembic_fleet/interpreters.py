"""Each service's own Python: where its revisions are imported and its migrations run.

A platform's services each have their own environment (``uv run`` in the service folder):
their own SQLAlchemy, their own application packages, their own driver. Importing every
service's revisions into fleet's interpreter cannot honour that. So a service may name its
interpreter (the ``python`` key: a path relative to the service folder, or a command as a
list); a ``.venv`` in the service folder is used when the key is absent; ``"fleet"`` keeps
fleet's own interpreter.

For such a service, fleet (the coordinator) never imports the service's code. It asks the
service's interpreter, in which alembic-fleet is installed because the service's env.py
imports its helper, for:

* the revision graph (:func:`describe`: ``python -m alembic_fleet.remote describe``), once
  per command;
* worker processes (:func:`start_worker`: ``python -m alembic_fleet.remote worker``), which
  speak the same protocol over a socket as the forked workers do over theirs.

Both sides must run the same alembic-fleet version: the coordinator's objects cross the
socket pickled. A mismatch is refused before anything runs, naming both versions.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
from pathlib import Path
from typing import Any

from alembic_fleet import __version__
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.remote import MISMATCH

FLEET = "fleet"
"""``python = "fleet"``: the service's code runs in fleet's own interpreter."""
VENV_PYTHONS = (Path(".venv", "bin", "python"), Path(".venv", "Scripts", "python.exe"))
START_TIMEOUT = 300.0
"""Seconds a service interpreter may take to start a worker (``uv run`` may first sync the
environment)."""


def default_for(folder: Path) -> Path | None:
    """The ``.venv`` interpreter inside a service folder, unless it is fleet's own."""
    for relative in VENV_PYTHONS:
        candidate = folder / relative
        if candidate.exists():
            return None if is_current(candidate) else candidate.absolute()
    return None


def is_current(python: Path) -> bool:
    """Whether ``python`` is the interpreter running now (a venv's python is a symlink to
    the base interpreter, so compare the environments, not the resolved files)."""
    here = Path(sys.executable).absolute()
    there = python.absolute()
    if there == here:
        return True
    venv = there.parent.parent
    return (venv / "pyvenv.cfg").exists() and venv.resolve() == Path(sys.prefix).resolve()


def shown(command: tuple[str, ...]) -> str:
    return " ".join(command)


def _environment() -> dict[str, str]:
    """The child's environment: fleet's, without what points at fleet's own virtualenv."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}


def describe(service: Any) -> list[Any]:
    """The service's revisions, read by its own interpreter (a list of
    :class:`~alembic_fleet.model.revisions.Revision`)."""
    return call(service, "alembic_fleet.remote:revisions_of", service)


def run_command(service: Any, config_file: Any, command: str, *args: Any, **kwargs: Any
                ) -> Any:
    """``alembic_fleet.commands.<command>(workspace, *args, **kwargs)`` run in the
    service's interpreter, on a workspace opened there from the same configuration file in
    which this service is local: the façade's answer for commands that import the
    service's code (``check``, ``revision``, ``downgrade``)."""
    return call(service, "alembic_fleet.remote:run_command", str(config_file), service.name,
                command, args, kwargs)


def call(service: Any, function: str, *args: Any) -> Any:
    """``function(*args)`` (``"module:name"`` of alembic-fleet) run in the service's
    interpreter, in its folder; arguments and result cross pickled (same version on both
    sides, checked first), and a FleetError raised there is raised here."""
    command = [*service.python, "-m", "alembic_fleet.remote", "call", __version__]
    try:
        done = subprocess.run(command, cwd=service.path, env=_environment(),
                              input=pickle.dumps((function, args)), capture_output=True,
                              check=False)
    except OSError as exc:
        raise _cannot_start(service, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    errors = done.stderr.decode(errors="replace")
    if done.returncode == 0:
        if errors:
            sys.stderr.write(errors)  # what the service's code printed
        kind, value = pickle.loads(done.stdout)
        if kind == "error":
            raise value
        return value
    if done.returncode == MISMATCH:
        raise ConfigError(f"service '{service.name}': "
                          + (errors.strip().splitlines()[-1] if errors.strip() else
                             "its interpreter runs another alembic-fleet version"),
                          hint=f"install alembic-fleet=={__version__} in that environment")
    last = [line for line in errors.splitlines() if line.strip()][-3:]
    raise _cannot_start(service, " | ".join(last) or f"exit code {done.returncode}")


def _cannot_start(service: Any, reason: str) -> FleetError:
    return ConfigError(
        f"service '{service.name}': cannot run its interpreter ({shown(service.python)}): "
        f"{reason}",
        hint=f"install alembic-fleet=={__version__} and the service's packages there (its "
        "env.py imports the helper), point the service's 'python' key at the right "
        "interpreter, or set python = \"fleet\" to use fleet's own")


@dataclass
class ServiceWorker:
    """A worker process running in a service's interpreter, seen as a multiprocessing
    ``Process`` is by the pool: ``sentinel``, ``is_alive``, ``kill``, ``join``,
    ``exitcode``."""

    popen: subprocess.Popen[bytes]
    sentinel: int

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        if self.popen.returncode is not None:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = -1

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()


class Lifeline:
    """A pipe whose read end every service worker holds: when the coordinator dies, however
    it dies, the workers see end-of-file and exit (``uv run`` between the two would keep a
    parent-death signal from reaching them)."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()

    def close(self) -> None:
        for fd in (self.read, self.write):
            with contextlib.suppress(OSError):
                os.close(fd)


def start_worker(service: Any, factory: Any, lifeline: Lifeline
                 ) -> tuple[ServiceWorker, Connection]:
    """Start a worker in ``service``'s interpreter and hand it ``factory`` (what it builds
    its work from); returns it with the coordinator's end of its socket.

    Raises FleetError when the interpreter cannot start, refuses the version, or dies
    before saying hello."""
    ours, theirs = Pipe(duplex=True)
    command = [*service.python, "-m", "alembic_fleet.remote", "worker", __version__,
               str(theirs.fileno()), str(lifeline.read)]
    try:
        popen = subprocess.Popen(command, cwd=service.path, env=_environment(),
                                 pass_fds=(theirs.fileno(), lifeline.read),
                                 stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
    except OSError as exc:
        ours.close()
        theirs.close()
        raise _cannot_start(service, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    theirs.close()
    worker = ServiceWorker(popen, _sentinel(popen))
    ready = wait([ours, worker.sentinel], START_TIMEOUT)
    hello = None
    if ours in ready:
        with contextlib.suppress(EOFError, OSError):
            hello = ours.recv()
    if hello is None or hello[0] != "hello":
        worker.kill()
        worker.join(5)
        ours.close()
        if worker.exitcode == MISMATCH:
            raise ConfigError(f"service '{service.name}': its interpreter runs another "
                              "alembic-fleet version",
                              hint=f"install alembic-fleet=={__version__} there")
        how = (f"did not start within {START_TIMEOUT:g}s" if worker.exitcode is None
               else f"exited with code {worker.exitcode} (its error is above)")
        raise _cannot_start(service, how)
    ours.send(factory)
    return worker, ours


def _sentinel(popen: subprocess.Popen[bytes]) -> int:
    """A descriptor that becomes readable when ``popen`` exits (Linux: a pidfd; else a pipe
    closed by a thread that waits for it)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        with contextlib.suppress(OSError):
            return pidfd_open(popen.pid)
    read, write = os.pipe()

    def watch() -> None:
        popen.wait()
        os.close(write)

    threading.Thread(target=watch, name="fleet-worker-watch", daemon=True).start()
    return read
