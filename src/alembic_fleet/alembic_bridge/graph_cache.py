"""A service's revisions as Alembic read them, kept between runs for the same files.

Reading a graph through Alembic means importing Alembic and executing every revision file:
a third of a second for a history of a hundred revisions, more than everything else that
``fleet status``, a ``fleet migrate`` with nothing pending or a tenant copied from its
reference do. So the result of that reading (the revisions as declared, the migrations
folder and the version folders) is kept in a small JSON file, valid only for the exact
bytes it was read from:

* the ``alembic.ini`` and the ``env.py``,
* every file under the version folders, by name and content (``__pycache__`` aside),
* fleet's version, the installed Alembic (its file's path, size and time), and the
  interpreter that read them for a service with its own ``python``.

Any change to one of them is a miss, and a miss reads the files through Alembic as before.
The digest is taken before the reading, so a file changed while Alembic reads it is read
again next time. What is not covered: a revision whose ``revision`` or ``down_revision``
is computed from something else than its file (an environment variable, another module);
such a history should set ``FLEET_CACHE_DIR=""``, which turns the cache off. A history
that uses Alembic's ``sourceless`` option is never cached.

The files live in ``$FLEET_CACHE_DIR``, else ``$XDG_CACHE_HOME/alembic-fleet``, else
``~/.cache/alembic-fleet``; one per service folder. A folder that cannot be written (a
read-only container) only means no cache: nothing fails because of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_fleet import __version__
from alembic_fleet.model.revisions import Revision

FORMAT = 1
"""Bumped when the entry's layout or its meaning changes."""

SKIPPED_FOLDERS = frozenset({"__pycache__"})
"""Compiled files are not revisions (unless ``sourceless``, which is never cached)."""


@dataclass(frozen=True)
class Entry:
    """What one reading of a service's scripts found."""

    script_dir: Path
    version_dirs: tuple[Path, ...]
    revisions: tuple[Revision, ...]


def folder() -> Path | None:
    """Where entries are kept; None when the cache is turned off."""
    configured = os.environ.get("FLEET_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "alembic-fleet")


def load(ini: Path, python: Sequence[str] | None) -> Entry | None:
    """The entry for this service, if one was kept and its files are unchanged."""
    path = _entry_path(ini, python)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if (not isinstance(data, dict) or data.get("format") != FORMAT
                or data.get("ini") != str(ini)):
            return None
        entry = Entry(
            script_dir=Path(_text(data["script_dir"])),
            version_dirs=tuple(Path(p) for p in _texts(data["version_dirs"])),
            revisions=tuple(Revision(id=_text(r[0]), down=_texts(r[1]), message=_text(r[2]),
                                     path=_text(r[3]), branch_labels=_texts(r[4]),
                                     depends_on=_texts(r[5]))
                            for r in data["revisions"]),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    digest = fingerprint(ini, python, entry.script_dir, entry.version_dirs)
    return entry if digest is not None and digest == data.get("digest") else None


def fingerprint(ini: Path, python: Sequence[str] | None, script_dir: Path,
                version_dirs: Sequence[Path]) -> str | None:
    """The digest of everything a reading depends on; None when it must not be cached."""
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode("utf-8", "replace")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)

    try:
        ini_bytes = ini.read_bytes()
    except OSError:
        return None
    if b"sourceless" in ini_bytes:
        return None
    add(FORMAT, __version__, _alembic_stamp(), ini, ini_bytes, script_dir)
    add(*(python or ("-",)))
    if python:
        with contextlib.suppress(OSError):
            stat = os.stat(python[0])
            add(stat.st_size, stat.st_mtime_ns)
    try:
        add(script_dir.joinpath("env.py").read_bytes())
    except OSError:
        add("no env.py")
    for version_dir in version_dirs:
        add("folder", version_dir)
        _add_folder(add, version_dir)
    return digest.hexdigest()


def save(ini: Path, python: Sequence[str] | None, digest: str | None, entry: Entry) -> None:
    """Keep ``entry`` under ``digest`` (taken before the reading); never fails."""
    path = _entry_path(ini, python)
    if path is None or digest is None:
        return
    data = {
        "format": FORMAT, "digest": digest, "ini": str(ini),
        "script_dir": str(entry.script_dir),
        "version_dirs": [str(p) for p in entry.version_dirs],
        "revisions": [[r.id, list(r.down), r.message, str(r.path), list(r.branch_labels),
                       list(r.depends_on)] for r in entry.revisions],
    }
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".graph-",
                                             suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _texts(values: object) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise TypeError("not a list")
    return tuple(_text(v) for v in values)


def _entry_path(ini: Path, python: Sequence[str] | None) -> Path | None:
    base = folder()
    if base is None:
        return None
    name = hashlib.sha256("\0".join([str(ini), *(python or ())]).encode()).hexdigest()[:32]
    return base / "graphs" / f"{name}.json"


def _alembic_stamp() -> str:
    """Which Alembic is installed, without importing it (an upgrade changes the file)."""
    spec = importlib.util.find_spec("alembic")
    origin = spec.origin if spec is not None else None
    if not origin:
        return "no alembic"
    try:
        stat = os.stat(origin)
    except OSError:
        return origin
    return f"{origin}:{stat.st_size}:{stat.st_mtime_ns}"


def _add_folder(add: object, top: Path) -> None:
    """Every file under ``top``, sorted, by relative name and content; links followed once."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    content = handle.read()
            except OSError:
                content = b"\0unreadable"
            add(os.path.relpath(path, top), content)  # type: ignore[operator]
