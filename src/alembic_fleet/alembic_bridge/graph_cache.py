"""A service's revisions as Alembic read them, kept between runs for the same files.

Reading a graph through Alembic means importing Alembic and executing every revision file:
a third of a second for a history of a hundred revisions, more than everything else that
``fleet status``, a ``fleet migrate`` with nothing pending or a tenant copied from its
reference do. So the result of that reading (the revisions as declared, the migrations
folder and the version folders) is kept in a small JSON file, valid only for the exact
bytes it was read from:

* the ``alembic.ini`` and the ``env.py``,
* every file under the version folders, by name and content (``__pycache__`` aside),
* fleet's version and the files of its modules that read histories (:data:`READERS`),
  the installed Alembic (its file's path, size and time), and for a
  service with its own ``python`` the Alembic that interpreter finds (asked of it: one
  start of the interpreter, Alembic not imported; one that cannot say is never cached),
* what else decided which folders were read (:attr:`Entry.checks`): the working directory
  for a relative ``version_locations`` (Alembic reads those from there), and where a
  relative ``script_location`` led through links (fleet resolves it once; a link switched
  to another release's folder leaves the old folder there, unchanged).

Any change to one of them is a miss, and a miss reads the files through Alembic as before.
The digest is taken before the reading, so a file changed while Alembic reads it is read
again next time. A history is never cached when its reading depends on more than these
bytes: a revision whose ``revision``, ``down_revision``, ``branch_labels`` or
``depends_on`` is not a literal written in its own file (read from another module or an
environment variable), Alembic's ``sourceless`` option (revisions read from
``__pycache__``), or a ``package:folder`` location (found through ``sys.path`` and the
installed packages).

The files live in ``$FLEET_CACHE_DIR``, else ``$XDG_CACHE_HOME/alembic-fleet``, else
``~/.cache/alembic-fleet`` (no cache when there is no home to expand); one per service
folder and install of fleet. A folder that cannot be written (a read-only container) only
means no cache: nothing fails because of it.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_fleet import __version__
from alembic_fleet.model.revisions import Revision

FORMAT = 2
"""Bumped when the entry's layout or its meaning changes."""

SKIPPED_FOLDERS = frozenset({"__pycache__"})
"""Compiled files are not revisions (unless ``sourceless``, which is never cached)."""


@dataclass(frozen=True)
class Entry:
    """What one reading of a service's scripts found."""

    script_dir: Path
    version_dirs: tuple[Path, ...]
    revisions: tuple[Revision, ...]
    checks: tuple[tuple[str, ...], ...] = ()
    """What must still hold besides the files' bytes: ``("cwd", folder)``, the working
    directory; ``("realpath", path, real)``, where ``path`` leads through links."""


DECLARED = frozenset({"revision", "down_revision", "branch_labels", "depends_on", "__doc__"})
"""What Alembic takes from a revision module for the graph."""


def folder() -> Path | None:
    """Where entries are kept; None when the cache is turned off."""
    configured = os.environ.get("FLEET_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        if not os.path.isabs(home):  # no HOME and no passwd entry: "~" stays "~"
            return None  # not a folder named "~" wherever fleet runs
        base = os.path.join(home, ".cache")
    return Path(base, "alembic-fleet")


def load(ini: Path, python: Sequence[str] | None, folder: Path | None = None) -> Entry | None:
    """The entry for this service, if one was kept and its files are unchanged (``folder``:
    the service's, where its own interpreter starts)."""
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
            checks=tuple(_texts(c) for c in data["checks"]),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    if not all(_holds(check) for check in entry.checks):
        return None
    digest = fingerprint(ini, python, entry.script_dir, entry.version_dirs, entry.checks,
                         folder)
    return entry if digest is not None and digest == data.get("digest") else None


def fingerprint(ini: Path, python: Sequence[str] | None, script_dir: Path,
                version_dirs: Sequence[Path],
                checks: Sequence[Sequence[str]] | None = (),
                folder: Path | None = None) -> str | None:
    """The digest of everything a reading depends on; None when it must not be cached
    (``checks`` None: the reading depends on something else, see :func:`checks_for`)."""
    if checks is None:
        return None
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else _bytes(str(part))
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)

    try:
        ini_bytes = ini.read_bytes()
    except OSError:
        return None
    if b"sourceless" in ini_bytes.lower():  # option names ignore case
        return None
    add(FORMAT, __version__, _own_stamp(), _alembic_stamp(), ini, ini_bytes, script_dir)
    for check in checks:
        add("check", *check)
    add(*(python or ("-",)))
    if python:
        stamp = interpreter_stamp(python, folder or ini.parent)
        if stamp is None:
            return None
        add(stamp)
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
        "checks": [list(check) for check in entry.checks],
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
        _prune(path.parent, keep=path)


KEPT_DAYS = 30
KEPT_ENTRIES = 500
"""Entries not written for this long, and the oldest beyond this many, go when an entry is
written: projects in temporary checkouts (CI, tests) would otherwise leave one each, for
ever. An entry in use that goes is only a slower next run."""


def _prune(folder: Path, keep: Path) -> None:
    """Drop entries (and leftover temporary files) older than :data:`KEPT_DAYS`, then the
    oldest beyond :data:`KEPT_ENTRIES`; never fails."""
    import time

    try:
        found = []
        with os.scandir(folder) as entries:
            for item in entries:
                if item.name.endswith((".json", ".tmp")) and item.path != str(keep):
                    with contextlib.suppress(OSError):
                        found.append((item.stat(follow_symlinks=False).st_mtime, item.path))
    except OSError:
        return
    found.sort(reverse=True)
    limit = time.time() - KEPT_DAYS * 86400
    for index, (written, name) in enumerate(found):
        if written < limit or index >= KEPT_ENTRIES - 1:
            with contextlib.suppress(OSError):
                os.unlink(name)


def checks_for(ini: Path, script_location: str, script_dir: Path,
               version_locations: Sequence[str] | None) -> tuple[tuple[str, ...], ...] | None:
    """What besides the files' bytes decides which folders a reading used, from the
    locations as configured (before fleet or Alembic made them absolute); None when that
    cannot be checked without Alembic (a ``package:folder`` location)."""
    checks: list[tuple[str, ...]] = []
    if _is_resource(script_location):
        return None
    if not os.path.isabs(script_location):  # fleet resolved it, links included
        checks.append(("realpath", str(ini.parent / script_location), str(script_dir)))
    for location in version_locations or ():
        if _is_resource(location):
            return None
        if not os.path.isabs(location):  # Alembic reads it from the working directory
            checks.append(("cwd", os.getcwd()))
            break
    return tuple(checks)


def declared_in_files(revisions: Sequence[Revision]) -> bool:
    """Whether every revision's declarations (``revision``, ``down_revision``,
    ``branch_labels``, ``depends_on``) are literals in its own file, assigned once at the
    top level as read: then its bytes alone decide them. A value computed from another
    module or the environment would change without any file of the history changing."""
    for revision in revisions:
        try:
            tree = ast.parse(Path(revision.path).read_bytes())
        except (OSError, SyntaxError, ValueError):
            return False  # a compiled-only revision too
        values = _literal_declarations(tree)
        if values is None or values.get("revision") != revision.id:
            return False
        if _ids(values.get("down_revision")) != revision.down:
            return False
    return True


def _literal_declarations(tree: ast.Module) -> dict[str, object] | None:
    """The declared names' literal values; None when one is bound any other way."""
    values: dict[str, object] = {}
    allowed: set[int] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and all(
                isinstance(t, ast.Name) for t in statement.targets):
            names = [t for t in statement.targets if t.id in DECLARED]  # type: ignore[union-attr]
        elif (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
              and statement.value is not None):
            names = [statement.target] if statement.target.id in DECLARED else []
        else:
            continue
        if not names:
            continue
        try:
            value = ast.literal_eval(statement.value)  # type: ignore[arg-type]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        for name in names:
            values[name.id] = value  # type: ignore[union-attr]
            allowed.add(id(name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound = [node.id] if id(node) not in allowed else []
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound = [(a.asname or a.name).split(".")[0] for a in node.names]
            if any(a.name == "*" for a in node.names):
                return None
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound = list(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = [node.name]
        else:
            continue
        if DECLARED.intersection(bound):
            return None
    return values


def _ids(value: object) -> tuple[object, ...]:
    """A declared ``down_revision`` as Alembic's ``to_tuple`` makes it."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _is_resource(location: str) -> bool:
    """The ``package:folder`` form (as fleet's and Alembic's readers tell it apart)."""
    return ":" in location and not os.path.isabs(location) and location[1:3] != ":\\"


def _holds(check: Sequence[str]) -> bool:
    kind, *args = check
    if kind == "cwd" and len(args) == 1:
        try:
            return os.getcwd() == args[0]
        except OSError:
            return False
    if kind == "realpath" and len(args) == 2:
        return os.path.realpath(args[0]) == args[1]
    return False


def _bytes(text: str) -> bytes:
    """A path or text as bytes: a file name that is not UTF-8 keeps its own bytes."""
    return text.encode("utf-8", "surrogateescape")


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _texts(values: object) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise TypeError("not a list")
    return tuple(_text(v) for v in values)


def _entry_path(ini: Path, python: Sequence[str] | None) -> Path | None:
    """One entry per service folder, service interpreter and install of fleet (its
    environment, where fleet itself and the Alembic it imports come from): two installs used
    in turn on one project (a developer's venv and a tool install, a CI image, a second
    checkout on ``PYTHONPATH``) each keep their own, where a shared one was replaced at every
    run, and every run read the history through Alembic again."""
    base = folder()
    if base is None:
        return None
    install = [sys.prefix, PACKAGE, str(_alembic_origin())]
    name = hashlib.sha256(_bytes("\0".join([str(ini), *(python or ()), "\0", *install]))
                          ).hexdigest()[:32]
    return base / "graphs" / f"{name}.json"


PROBE = ("import importlib.metadata, importlib.util, os, sys\n"
         "try:\n    version = importlib.metadata.version('alembic')\n"
         "except Exception:\n    version = None\n"
         "spec = importlib.util.find_spec('alembic')\n"
         "origin = spec.origin if spec is not None else None\n"
         "stat = os.stat(origin) if origin else None\n"
         "print(repr((sys.version, sys.prefix, version, origin, stat and stat.st_size, "
         "stat and stat.st_mtime_ns)))\n")
"""What a service's own interpreter tells of itself: which Alembic it would read with."""

_stamps: dict[tuple[tuple[str, ...], str], str | None] = {}


def interpreter_stamp(python: Sequence[str], folder: Path) -> str | None:
    """Which Alembic a service's own interpreter finds (its environment is not fleet's: an
    upgrade there changes how the history is read), asked of it once per process; None
    when it cannot say (it fails, or does not answer within its start timeout)."""
    key = (tuple(python), str(folder))
    if key not in _stamps:
        from alembic_fleet.interpreters import child_environment, start_timeout

        stamp = None
        try:
            process = subprocess.Popen([*python, "-c", PROBE], cwd=folder, env=child_environment(),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            process = None
        if process is not None:
            try:
                out, _ = process.communicate(timeout=start_timeout())
                if process.returncode == 0 and out.strip():
                    stamp = out.decode("utf-8", "replace")
            except subprocess.TimeoutExpired:
                pass
            finally:
                if process.returncode is None:  # what it started goes too (a wrapper's)
                    with contextlib.suppress(OSError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.communicate()
        _stamps[key] = stamp
    return _stamps[key]


PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""Where this fleet's package is."""
READERS = ("alembic_bridge/scripts.py", "alembic_bridge/graph_cache.py", "model/revisions.py",
           "model/identifiers.py", "remote.py")
"""fleet's modules that decide what a reading holds, under :data:`PACKAGE`: the reader, the
graph, the names it reads by, and what reads a history in a service's own interpreter."""


def _own_stamp() -> str:
    """Which fleet reads (its modules that read and keep histories: their paths, sizes and
    times): two commits share a version number (an install from a Git URL, an editable
    checkout switched to another branch), and a reading kept by one must not be taken by
    the other."""
    parts = []
    for name in READERS:
        path = os.path.join(PACKAGE, name)
        try:
            stat = os.stat(path)
        except OSError:
            return "unknown"
        parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def _alembic_origin() -> str | None:
    """The file ``import alembic`` would load here, without importing it."""
    spec = importlib.util.find_spec("alembic")
    return spec.origin if spec is not None else None


def _alembic_stamp() -> str:
    """Which Alembic is installed, without importing it (an upgrade changes the file)."""
    origin = _alembic_origin()
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
