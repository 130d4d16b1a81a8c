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

* the revision graph (:func:`describe`: ``python -m alembic_fleet.remote call``), once
  per command, and the commands that import the service's code (:func:`run_command`);
* worker processes (:func:`start_worker`: ``python -m alembic_fleet.remote worker``), which
  speak the same protocol over a socket as the forked workers do over theirs.

Both sides must run the same alembic-fleet version: the coordinator's objects cross the
socket pickled. A mismatch is refused before anything runs, naming both versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_fleet import __version__, install
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.redact import scrub, secrets
from alembic_fleet.remote import MISMATCH

if TYPE_CHECKING:  # multiprocessing is imported when a worker starts, not at start-up
    from multiprocessing.connection import Connection

FLEET = "fleet"
"""``python = "fleet"``: the service's code runs in fleet's own interpreter."""
VENV_PYTHONS = (Path(".venv", "bin", "python"), Path(".venv", "Scripts", "python.exe"))
START_TIMEOUT = 300.0
"""Seconds a service interpreter may take to start a worker (``uv run`` may first sync the
environment)."""


def default_for(folder: Path) -> Path | None:
    """The ``.venv`` interpreter inside a service folder, unless it is fleet's own (a
    broken one is returned too: silently running the service in fleet's interpreter
    instead would import its code into the wrong environment)."""
    for relative in VENV_PYTHONS:
        candidate = folder / relative
        if os.path.lexists(candidate):  # a dangling link too: the caller refuses it
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


def child_environment() -> dict[str, str]:
    """The child's environment: fleet's, without what points at fleet's own virtualenv,
    with the embedded databases' URLs fleet resolved (the service's environment need not
    hold the embedded PostgreSQL package)."""
    from alembic_fleet.databases import EMBEDDED_URLS, embedded_urls

    environment = {k: v for k, v in os.environ.items()
                   if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    urls = embedded_urls()
    if urls:
        environment[EMBEDDED_URLS] = json.dumps(urls)
    return environment


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


def resolve_embedded(databases: Any, in_use: Any) -> None:
    """Start the embedded server for the databases ``in_use`` that live on it, here, so
    that a delegated command's interpreter gets their URLs (see :func:`child_environment`)."""
    for database in in_use:
        if database.is_embedded:
            databases.url(database)


def call(service: Any, function: str, *args: Any) -> Any:
    """``function(*args)`` (``"module:name"`` of alembic-fleet) run in the service's
    interpreter, in its folder; arguments and result cross pickled over a socket (same
    version on both sides, checked first), and a FleetError raised there is raised here.

    The process runs in its own process group with a lifeline: whether fleet returns,
    is interrupted or is killed, nothing it started there goes on (a downgrade it
    delegated must not commit after fleet reported it stopped)."""
    lifeline = Lifeline()
    try:
        process, conn = _launch(service, "call", lifeline)
        try:
            conn.send((function, args, secrets()))
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                process.join(5)
                raise _cannot_start(service, f"it exited (code {process.exitcode}) without "
                                    "answering; its error, if any, is above") from None
            process.join(10)
        finally:
            process.kill()
            process.join(5)
            conn.close()
    finally:
        lifeline.close()
    if kind == "error":
        raise _scrubbed(value)
    return value


def _scrubbed(error: Any) -> Any:
    """An error from the service's interpreter with every known password hidden."""
    if isinstance(error, FleetError):
        error.message = scrub(error.message)
        error.hint = scrub(error.hint) if error.hint else error.hint
    return error


def _cannot_start(service: Any, reason: str) -> FleetError:
    return ConfigError(
        f"service '{service.name}': cannot run its interpreter ({shown(service.python)}): "
        f"{scrub(reason)}",
        hint=f"install {install.pinned('there')} and the service's packages (its env.py "
        "imports the helper); or point the service's 'python' key at the right "
        "interpreter, or set python = \"fleet\" to use fleet's own")


@dataclass
class ServiceWorker:
    """A process running in a service's interpreter, seen as a multiprocessing ``Process``
    is by the pool: ``sentinel``, ``is_alive``, ``kill``, ``join``, ``exitcode``. It leads
    its own process group, so that ``kill`` also reaches a Python started by a wrapper
    (``uv run``, ``sh -c``) and a terminal's Ctrl-C reaches only fleet, which decides."""

    popen: subprocess.Popen[bytes]
    sentinel: int

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):
                self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        if self.popen.returncode is not None and self.sentinel >= 0:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = -1

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()


class Lifeline:
    """A pipe whose read end the service's processes hold: when fleet dies, however it
    dies, they see end-of-file and exit (a parent-death signal would not cross a wrapper
    such as ``uv run``)."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()

    def close(self) -> None:
        for fd in (self.read, self.write):
            with contextlib.suppress(OSError):
                os.close(fd)


def start_worker(service: Any, factory: Any, lifeline: Lifeline
                 ) -> tuple[ServiceWorker, Connection]:
    """Start a worker in ``service``'s interpreter and hand it ``factory`` (what it builds
    its work from); returns it with fleet's end of its socket. Raises FleetError when the
    interpreter cannot start, runs another version, or says nothing in time."""
    process, conn = _launch(service, "worker", lifeline)
    conn.send((factory, secrets()))
    return process, conn


def start_timeout() -> float:
    """Seconds a service interpreter may take to say hello (``uv run`` may first sync the
    environment); ``FLEET_INTERPRETER_TIMEOUT`` overrides."""
    with contextlib.suppress(ValueError):
        return max(0.1, float(os.environ.get("FLEET_INTERPRETER_TIMEOUT", START_TIMEOUT)))
    return START_TIMEOUT


def _launch(service: Any, mode: str, lifeline: Lifeline) -> tuple[ServiceWorker, Connection]:
    """Start ``python -m alembic_fleet.remote MODE`` for ``service`` and wait for its hello.

    Its stdout and stderr are fleet's stderr (what the service's code prints, including at
    start-up); the protocol has a socket of its own."""
    from multiprocessing.connection import Pipe, wait

    ours, theirs = Pipe(duplex=True)
    command = [*service.python, "-m", "alembic_fleet.remote", mode, __version__,
               str(theirs.fileno()), str(lifeline.read)]
    try:
        popen = subprocess.Popen(command, cwd=service.path, env=child_environment(),
                                 pass_fds=(theirs.fileno(), lifeline.read),
                                 stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                 start_new_session=True)
    except OSError as exc:
        ours.close()
        theirs.close()
        raise _cannot_start(service, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    theirs.close()
    process = ServiceWorker(popen, _sentinel(popen))
    try:
        timeout = start_timeout()
        ready = wait([ours, process.sentinel], timeout)
        hello = None
        if ours in ready:
            with contextlib.suppress(EOFError, OSError):
                hello = ours.recv()
    except BaseException:
        process.kill()
        ours.close()
        raise
    if hello is None or hello[0] != "hello":
        process.kill()
        process.join(5)
        ours.close()
        if process.exitcode == MISMATCH:
            raise ConfigError(f"service '{service.name}': its interpreter "
                              f"({shown(service.python)}) runs another alembic-fleet "
                              f"version than this one ({__version__}); its message is above",
                              hint=f"install {install.pinned('there')}")
        how = (f"it said nothing within {timeout:g}s (FLEET_INTERPRETER_TIMEOUT)"
               if process.exitcode in (None, -signal.SIGKILL) and not ready
               else f"it exited with code {process.exitcode}; its error is above")
        raise _cannot_start(service, how)
    return process, ours


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
