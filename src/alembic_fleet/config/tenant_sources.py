"""Read and change the configured tenant source: the list, a tenants file, a registry query.

The loader reads lists and files (files only, no network); a registry query needs a database,
so the commands run it here with :func:`resolve_query` and hand the names to
:meth:`FleetConfig.with_tenants`. ``fleet tenants add`` / ``remove`` record a change where the
source lives (:func:`record_tenant`, :func:`forget_tenant`): the configuration file is edited
with tomlkit so that comments and layout survive, a tenants file gains or loses one line, a
registry runs its ``insert`` / ``delete`` statement.

Both are idempotent (recording a known tenant changes nothing) and validate the name first,
so they never write a source the loader would then refuse. ``TENANTS`` in the environment
does not change where they write: it overrides the names for one run, while the source is the
lasting record (refusing would block every shell or CI job that exports ``TENANTS``); the
commands may warn that the current run still uses ``TENANTS`` (``config.tenants_from_env``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic_fleet.config.loader import (
    PYPROJECT,
    FleetConfig,
    TenantQuery,
    tenant_file_entry,
)
from alembic_fleet.exceptions import ConfigError, FleetError, UsageError
from alembic_fleet.model.identifiers import validate_tenant
from alembic_fleet.model.targets import Database

if TYPE_CHECKING:
    from sqlalchemy import Connection

Connect = Callable[[Database], "Connection"]
"""Opens a new connection to a database (e.g. ``Databases.connect``); the caller here closes
it."""

_NAME_RULE = "lowercase letter first, then a-z, 0-9 or _"


def resolve_query(query: TenantQuery, connect: Connect) -> list[str]:
    """The tenant names the registry query returns: first column, validated, de-duplicated.

    The registry is user input like the configuration, so a name that is not a valid tenant
    stops everything before any schema is touched, naming the offending value.
    """
    from sqlalchemy.exc import DBAPIError

    with connect(query.database) as conn:
        try:
            values = _first_column(conn, query.sql)
        except DBAPIError as exc:
            raise _database_error(exc, "tenants.query", "the tenant registry query") from None
    names: list[str] = []
    for value in values:
        try:
            validate_tenant(value)
        except FleetError as exc:
            raise ConfigError(f"the tenant registry lists an {exc.message}", key="tenants.query",
                              expected=_NAME_RULE,
                              hint="fix or deactivate that row in the registry") from None
        names.append(value)
    return list(dict.fromkeys(names))


def record_tenant(config: FleetConfig, name: str, connect: Connect | None = None) -> str:
    """Add ``name`` to the configured tenant source; returns where it was recorded.

    ``connect`` is needed only for a registry query. Recording a tenant already there
    changes nothing.
    """
    return record_tenants(config, [name], connect)


def record_tenants(config: FleetConfig, names: Sequence[str], connect: Connect | None = None,
                   *, while_held: Callable[[], None] | None = None) -> str:
    """Add each of ``names``, as :func:`record_tenant` does, in one edit of a file source:
    one read, one write and one read-back for them all (a thousand-name fleet.toml is
    parsed once, not once per new tenant). ``while_held`` runs after the write, before the
    source's edit lock is released (a registry has none: after its inserts)."""
    for name in names:
        _check_name(config, name)
    _change(config, list(dict.fromkeys(names)), connect, add=True, then=while_held)
    return _where(config)


def forget_tenant(config: FleetConfig, name: str, connect: Connect | None = None) -> str:
    """Remove ``name`` from the configured tenant source; returns where it was removed.

    Only the record goes: the tenant's schemas stay (``fleet status`` shows them as orphans).
    Forgetting a tenant that is not recorded changes nothing.
    """
    validate_tenant(name)
    _change(config, [name], connect, add=False)
    return _where(config)


def check_forgettable(config: FleetConfig, name: str) -> None:
    """Raise the error :func:`forget_tenant` would raise, without changing anything (so a
    command can refuse before it drops any data)."""
    if config.tenant_source.kind == "query":
        query = config.tenant_query
        if query is None or query.delete is None:
            raise UsageError(
                f"the tenant registry query has no 'delete' statement, so fleet cannot "
                f"remove {name!r} there; nothing was dropped",
                hint="add delete = \"UPDATE public.tenants SET active = false WHERE slug = "
                f":tenant\" to 'tenants' in {config.file.name}, or change the registry "
                "yourself")


# --- one change per kind of source --------------------------------------------------------


def _change(config: FleetConfig, names: Sequence[str], connect: Connect | None, *,
            add: bool, then: Callable[[], None] | None = None) -> bool:
    """Apply the change for every name; True when something was written. ``then`` runs
    after it, under the file's edit lock.

    A file (fleet.toml, ``[tool.fleet]`` or a tenants file) is read, changed and written
    under an exclusive lock of its folder, so that several ``fleet tenants add`` at once
    each see the others' names (no lost update), keeping comments and layout; it is read
    back afterwards, and a change that is not there is an error, never a success."""
    source = config.tenant_source
    if source.kind == "query":
        changed = any([_change_registry(config, name, connect, add=add) for name in names])
        if then is not None:
            then()
        return changed
    path = source.path if source.kind == "file" else source.path or config.file
    assert path is not None
    with _editing(path):
        if source.kind == "file":
            changed = _read_back(path, _change_file_locked(path, names, add=add), add,
                                 _file_names)
        else:
            changed = _read_back(path, _change_config_file_locked(config, path, names,
                                                                  add=add), add, _listed)
        if then is not None:
            then()
        return changed


def _change_registry(config: FleetConfig, name: str, connect: Connect | None, *,
                     add: bool) -> bool:
    query = config.tenant_query
    assert query is not None
    key = "insert" if add else "delete"
    statement = query.insert if add else query.delete
    if statement is None:
        example = ("INSERT INTO public.tenants (slug, active) VALUES (:tenant, true)" if add
                   else "UPDATE public.tenants SET active = false WHERE slug = :tenant")
        raise UsageError(
            f"the tenant registry query has no '{key}' statement, so fleet cannot "
            f"{'record' if add else 'remove'} {name!r} there",
            hint=f"add {key} = \"{example}\" to 'tenants' in {config.file.name}, or change "
            "the registry yourself",
        )
    if connect is None:
        raise TypeError("a registry query source needs a connect function")
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with connect(query.database) as conn:
        try:
            with conn.begin():
                # Same transaction: the check and the change see the same registry.
                present = name in _first_column(conn, query.sql)
                if present == add:
                    return False
                conn.execute(text(statement), {"tenant": name})
        except DBAPIError as exc:
            raise _database_error(exc, f"tenants.{key}", f"the tenant registry {key}") from None
    return True


def _read_back(path: Path, written: Sequence[str], add: bool,
               listed: Callable[[Path], set[str]]) -> bool:
    """After a write: the file must say what fleet wrote for each name in ``written``, or
    the write is an error (never a success reported for a name that is not there). Names
    left alone (already there, or standing for a ``${VAR}`` entry) are not what was written.
    True when something was written."""
    if written:
        now = listed(path)
        wrong = [name for name in written if (name in now) != add]
        if wrong:
            raise FleetError(f"{path} was changed by someone else while fleet wrote it: "
                             f"{', '.join(map(repr, wrong))} "
                             f"{'missing' if add else 'still there'}",
                             hint="run the command again")
    return bool(written)


def _file_names(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {e for e in map(tenant_file_entry, text.splitlines()) if e}


def _change_file_locked(path: Path, names: Sequence[str], *, add: bool) -> list[str]:
    """The names written (appended, or whose lines were dropped)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    wanted = set(names)
    present = {tenant_file_entry(line) for line in lines} & wanted
    if add:
        written = [name for name in names if name not in present]
        if not written:
            return []
        text = (text if not text or text.endswith("\n") else text + "\n") + "".join(
            f"{name}\n" for name in written)
    else:
        written = [name for name in names if name in present]
        if not written:
            return []
        text = "".join(line for line in lines if tenant_file_entry(line) not in wanted)
    _write_atomically(path, text)
    return written


def _listed(path: Path) -> set[str]:
    """The tenant names written literally in a configuration file's ``tenants``."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if path.name == PYPROJECT:
        data = data.get("tool", {}).get("fleet", {})
    value = data.get("tenants")
    if isinstance(value, list):
        return {str(v) for v in value}
    return set(value) if isinstance(value, dict) else set()


def _change_config_file_locked(config: FleetConfig, path: Path, names: Sequence[str], *,
                               add: bool) -> list[str]:
    """The names written (added to, or removed from, ``tenants``)."""
    import tomlkit
    from tomlkit.items import Array, InlineTable

    original = path.read_text(encoding="utf-8")
    doc = tomlkit.parse(original)
    container: Any = doc["tool"]["fleet"] if path.name == PYPROJECT else doc
    written = []
    for name in names:
        value = container.get("tenants")
        if value is None:
            if not add:
                continue
            container["tenants"] = [name]
        elif isinstance(value, Array):
            if not _change_array(config, value, name, add=add):
                continue
        else:  # [tenants.NAME] tables (the loader accepted nothing else for a list source)
            if (name in value) == add:
                continue
            if not add:
                del value[name]
            elif isinstance(value, InlineTable) or any(
                    isinstance(v, InlineTable) for v in value.values()):
                value[name] = tomlkit.inline_table()
            else:
                table = tomlkit.table()
                if "\n\n[" in original:  # the file separates its tables by a blank line
                    table.add(tomlkit.nl())
                value[name] = table
        written.append(name)
    if written:
        _write_atomically(path, tomlkit.dumps(doc).rstrip("\n") + "\n")
    return written


def _change_array(config: FleetConfig, array: Any, name: str, *, add: bool) -> bool:
    literal = [str(v) for v in array]
    # An entry such as "${FIRST_TENANT}" may stand for the name: it counts as recorded.
    known = name in literal or (not config.tenants_from_env and name in config.tenants)
    if add:
        if known:
            return False
        array.append(name)
        return True
    if name not in literal:
        if known:
            raise UsageError(f"tenant {name!r} comes from a ${{...}} reference in "
                             f"'tenants' of {config.file.name}",
                             hint="change that variable, or edit the file by hand")
        return False
    for index in reversed([i for i, v in enumerate(literal) if v == name]):
        del array[index]
    return True


# --- helpers ------------------------------------------------------------------------------


def _check_name(config: FleetConfig, name: str) -> None:
    """Refuse a name the loader would refuse later (invalid, or a schema name too long)."""
    validate_tenant(name)
    for service in config.services.values():
        if service.per_tenant:
            service.schema_for(name)


def _first_column(conn: Connection, sql: str) -> list[Any]:
    from sqlalchemy import text

    return [row[0] for row in conn.execute(text(sql))]


def _database_error(exc: BaseException, key: str, what: str) -> ConfigError:
    from alembic_fleet.redact import first_line

    return ConfigError(f"{what} failed: {first_line(exc)}",
                       key=key, hint="check the SQL in 'tenants' and the registry's table")


def _where(config: FleetConfig) -> str:
    """The source as the user knows it: a path relative to the config folder when inside."""
    source = config.tenant_source
    if source.kind == "file" and source.path is not None:
        try:
            return str(source.path.relative_to(config.root.resolve()))
        except ValueError:
            return str(source.path)
    return source.where


def unchanged_while(config: FleetConfig) -> contextlib.AbstractContextManager[None]:
    """Hold the tenant source's edit lock: no fleet command records or forgets a tenant
    there until the block ends (so a check of the source and what follows from it are one
    step). A registry query has no such lock: nothing is held."""
    source = config.tenant_source
    if source.kind == "query":
        return contextlib.nullcontext()
    return _editing(source.path or config.file)


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s folder while it is read, changed and written.

    The folder, not the file: the file is replaced by a rename, so a lock on its old inode
    would not exclude the next writer. Where ``fcntl`` is missing (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step: an interrupted write never leaves half a file.

    A file nobody may write (no write bit in its mode) is refused, not replaced: the rename
    would only need the folder to be writable, and such a file says it is not to change."""
    if path.exists() and not path.stat().st_mode & 0o222:
        raise UsageError(f"{path} is read-only: fleet does not change it",
                         hint="make it writable (chmod u+w), or record the tenant yourself")
    temporary = None
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a folder that may not be written
            raise FleetError(f"cannot write {path}: {exc.strerror or exc}; it is unchanged",
                             hint="make room (or make the folder writable) and run the "
                             "command again") from None
        raise
