"""Run one target's migration through Alembic, on a connection fleet owns.

The service's own ``env.py`` runs (it calls :mod:`alembic_fleet.env`), with the connection
and schema handed over in ``config.attributes``; the env helper owns the transaction, so a
failure rolls the whole target back.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import os
import re
import site
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.util import CommandError
from alembic.util.pyfiles import load_python_file
from sqlalchemy import event

from alembic_fleet.alembic_bridge.env_helper import (
    ATTR_APPLIED,
    ATTR_CONNECTION,
    ATTR_DRIVE,
    ATTR_LISTENER,
    ATTR_PROBE,
    ATTR_SCHEMA,
    service_attributes,
)
from alembic_fleet.alembic_bridge.failures import (
    ReplayFailed,
    RevisionFailed,
    TransactionRolledBack,
)
from alembic_fleet.alembic_bridge.scripts import ServiceScripts, make_config
from alembic_fleet.exceptions import ConfigError, RevisionError
from alembic_fleet.redact import scrub


def upgrade(scripts: ServiceScripts, connection: Any, schema: str, destination: str,
            listener: Any = None) -> None:
    """Upgrade ``schema`` to ``destination`` (a revision id or ``heads``) in one transaction.

    ``listener`` is called inside the transaction (see ``env_helper.ATTR_LISTENER``).
    Raises :class:`RevisionFailed` naming the revision that broke.
    """
    script = scripts.script
    # Alembic has no public API for the steps of an upgrade: ``alembic.command.upgrade``
    # itself calls ``_upgrade_revs`` (and ``downgrade`` ``_downgrade_revs``). They stay here.
    _online(scripts, connection, schema, destination,
            lambda current: script._upgrade_revs(destination, current), listener)


def downgrade(scripts: ServiceScripts, connection: Any, schema: str, destination: str,
              listener: Any = None) -> None:
    """Downgrade ``schema`` to ``destination`` (an id, ``base`` or ``-N``)."""
    script = scripts.script
    _online(scripts, connection, schema, destination,
            lambda current: script._downgrade_revs(destination, current), listener)


def upgrade_mixed(scripts: ServiceScripts, connection: Any, schema: str, destination: str,
                  drive: Callable[[Callable[[str], None]], None], listener: Any = None) -> None:
    """Upgrade ``schema`` to ``destination`` in one transaction, the service's env.py run
    once, with fleet driving the revisions inside it: ``drive(online)`` runs a mixed replay
    plan, calling ``online(revision)`` for each stretch of revisions that Alembic must run
    (up to ``revision``, from wherever the version table is then).

    Starting Alembic afresh for each online stretch (a new ``Config``, env.py loaded again,
    the schema prepared again, the target's ledger row written again) cost a mixed plan of
    six such stretches about a third of its time; plain Alembic pays that set-up once per
    target, and so does this.
    """
    script = scripts.script
    stop = [destination]

    def to_stop(current: Any) -> list[Any]:
        return script._upgrade_revs(stop[0], current)

    def driven(run_migrations: Callable[[], None]) -> None:
        def online(revision: str) -> None:
            stop[0] = revision
            run_migrations()

        drive(online)

    _online(scripts, connection, schema, destination, to_stop, listener, drive=driven)


def _online(
    scripts: ServiceScripts, connection: Any, schema: str, destination: str,
    plan: Callable[[Any], list[Any]], listener: Any = None,
    drive: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    planned: list[Any] = []
    applied: list[Any] = []
    before = [0]  # revisions Alembic applied before the current stretch (mixed plans)

    def steps(current: Any, _context: Any) -> list[Any]:
        planned[:] = plan(current)
        before[0] = len(applied)
        for step in planned:
            _fresh_module(step.revision)
        return planned

    watch = _RollbackWatch(planned)
    event.listen(connection, "rollback", watch)
    event.listen(connection, "before_cursor_execute", watch.refuse)
    try:
        _run_env(scripts, steps, connection=connection, schema=schema, destination=destination,
                 applied=applied, listener=listener, drive=drive)
    except RevisionError:
        raise
    except Exception as exc:
        if watch.revision is not None:  # what failed next only followed from the rollback
            raise RevisionFailed(watch.revision, watch.error()) from exc
        if isinstance(exc, ReplayFailed):  # a replayed statement: it names its revision
            raise
        done = len(applied) - before[0]
        failing = planned[done] if done < len(planned) else None
        script_of = getattr(failing, "revision", None)  # RevisionStep -> its Script
        revision = getattr(script_of, "revision", None)
        raise RevisionFailed(revision, exc, _location(
            exc, planned, scripts.service.path, scripts.script_dir / "env.py")) from exc
    finally:
        event.remove(connection, "rollback", watch)
        event.remove(connection, "before_cursor_execute", watch.refuse)
    if watch.revision is not None:
        raise RevisionFailed(watch.revision, watch.error())


def _location(error: BaseException, planned: list[Any], root: Path, env_py: Path
              ) -> str | None:
    """Where in a planned revision's file (or the env.py) ``error`` was raised: the
    innermost frame of such a file in its traceback (a statement's error passes through
    the ``op`` call that ran it), as ``path, line N, in function`` with the path relative
    to the service folder."""
    files = {getattr(step.revision, "path", None) for step in planned} - {None}
    files |= {str(env_py), os.path.realpath(env_py)}
    found = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename in files:
            found = trace
        trace = trace.tb_next
    if found is None:
        return None
    path = Path(found.tb_frame.f_code.co_filename)
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return f"{shown}, line {found.tb_lineno}, in {found.tb_frame.f_code.co_name}"


class _RollbackWatch:
    """Listens to the target connection's ``rollback`` event while Alembic runs: a rollback
    called while a frame of a planned revision's file is on the stack (the connection's
    ``rollback()``, an ORM session's, even in the revision's own ``except``) is the
    revision's. It rolls back what came before while Alembic goes on in the transaction the
    driver begins next, so the version row would move on without that work (and, with
    ``transaction_per_migration``, commit so): every statement after it is refused, the
    version row's update included, and the target fails naming the revision. Rollbacks
    from Alembic or fleet after an error (no revision frame left on the stack) are not the
    revision's. The event itself is only recorded: raising in it would leave the driver's
    transaction open behind SQLAlchemy's back. (A transaction ended without SQLAlchemy
    knowing is the execution's :class:`~alembic_fleet.execution.target_migration.
    TransactionGuard`'s to see.)"""

    def __init__(self, planned: list[Any]) -> None:
        self.planned = planned
        self.revision: str | None = None

    def __call__(self, _connection: Any) -> None:
        if self.revision is not None:
            return
        files = {getattr(step.revision, "path", None): getattr(step.revision, "revision", None)
                 for step in self.planned}
        files.pop(None, None)
        frame = sys._getframe(1)
        while frame is not None:
            revision = files.get(frame.f_code.co_filename)
            if revision is not None:
                self.revision = revision
                return
            frame = frame.f_back

    def refuse(self, *_args: Any) -> None:
        """``before_cursor_execute``: nothing runs after the revision's rollback."""
        if self.revision is not None:
            raise self.error()

    def error(self) -> TransactionRolledBack:
        return TransactionRolledBack(
            "the revision rolled the transaction back itself (rollback() from Python): what "
            "it and the revisions before it did in that transaction would be lost while the "
            "version row moved on; remove the rollback() (to undo part of a revision, use "
            "op.get_bind().begin_nested() and roll the savepoint back)")


def _fresh_module(script: Any) -> None:
    """Load a revision's module again when it keeps state at module level.

    Plain Alembic imports each revision once per process, that is once per schema in the
    one-process-per-schema setups these histories were written for. A revision whose
    ``upgrade()`` appends to a list (or fills a dict) defined at module level would see,
    in a fleet worker that migrates many schemas, what the previous schema left there."""
    path = getattr(script, "path", None)
    if path and _keeps_state(path):
        script.module = load_python_file(os.path.dirname(path), os.path.basename(path))


@functools.cache
def _keeps_state(path: str) -> bool:
    """Whether a revision file binds a mutable container at module level."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return False
    mutable = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    factories = {"list", "dict", "set", "defaultdict", "OrderedDict", "deque", "Counter"}
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, mutable):
            return True
        if isinstance(value, ast.Call):
            name = getattr(value.func, "id", None) or getattr(value.func, "attr", None)
            if name in factories:
                return True
    return False


def probe_options(scripts: ServiceScripts) -> dict[str, Any]:
    """The options the service's env.py passes to ``run_migrations`` (nothing is run)."""
    config = make_config(scripts.service)
    options: dict[str, Any] = {}
    config.attributes[ATTR_PROBE] = options
    isolate_imports(scripts)
    with EnvironmentContext(config, scripts.script, fn=lambda _rev, _ctx: []):
        scripts.script.run_env()
    return options


def run_path_setup(scripts: ServiceScripts) -> bool:
    """Run the service's env.py for what its top lines do to ``sys.path``, connecting to
    nothing; True when ``sys.path`` changed (loading the revisions is worth a retry).

    The helper's env.py stops at ``run_migrations()`` (probe mode); any other env.py runs
    offline with nothing to do and usually stops at ``context.configure`` for want of a URL:
    either way its imports and path setup have happened. Its errors are not ours to report:
    the revision that failed to import is.
    """
    before = list(sys.path)
    config = make_config(scripts.service, output=io.StringIO())
    config.attributes[ATTR_PROBE] = {}
    with contextlib.suppress(Exception), EnvironmentContext(
            config, scripts.directory, fn=lambda _rev, _ctx: [], as_sql=True,
            destination_rev="base", starting_rev="base"):
        scripts.directory.run_env()
    return sys.path != before


def upgrade_sql(
    scripts: ServiceScripts, schema: str, start: str | None, destination: str, url: str,
    *, fresh: bool = False,
) -> str:
    """The SQL an upgrade from ``start`` (None: empty schema) to ``destination`` would run;
    ``fresh``: the schema does not exist, so the script includes the service's baseline."""
    script = scripts.script
    output = io.StringIO()

    def steps(current: Any, _context: Any) -> list[Any]:
        return script._upgrade_revs(destination, current)

    applied: list[Any] = []
    planned: list[Any] = []

    def planned_steps(current: Any, context: Any) -> list[Any]:
        planned[:] = steps(current, context)
        return planned

    try:
        _run_env(scripts, planned_steps, schema=schema, destination=destination, as_sql=True,
                 starting_rev=start, output=output, url=url, fresh=fresh, applied=applied)
    except (RevisionError, ConfigError):
        raise
    except Exception as exc:  # a revision that cannot be rendered offline
        failing = planned[len(applied)] if len(applied) < len(planned) else None
        revision = getattr(getattr(failing, "revision", None), "revision", None)
        raise RevisionError(
            f"service '{scripts.service.name}': "
            + (f"revision {revision} " if revision else "")
            + "cannot be written as SQL: "
            + scrub(f"{type(exc).__name__}: {exc}".splitlines()[0]),
            hint="a revision that reads the database (op.get_bind(), an inspector) needs a "
            "live connection: --sql cannot show it; use 'fleet migrate --dry-run'") from None
    sql = output.getvalue()
    if start is None:
        # From base, Alembic creates the version table, which a target downgraded to base
        # still has: the script must run on both.
        table = re.escape(scripts.service.version_table)
        sql = re.sub(rf"^CREATE TABLE ((?:\S+\.)?{table}) \(",
                     r"CREATE TABLE IF NOT EXISTS \1 (", sql, flags=re.MULTILINE)
    return sql


def _run_env(
    scripts: ServiceScripts,
    fn: Callable[[Any, Any], list[Any]],
    *,
    schema: str,
    destination: str,
    connection: Any = None,
    as_sql: bool = False,
    starting_rev: str | None = None,
    output: io.StringIO | None = None,
    url: str | None = None,
    applied: list[Any] | None = None,
    listener: Any = None,
    fresh: bool = False,
    drive: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    config = make_config(scripts.service, output=output)
    if drive is not None:
        config.attributes[ATTR_DRIVE] = drive
    if applied is not None:
        config.attributes[ATTR_APPLIED] = applied
    if listener is not None:
        config.attributes[ATTR_LISTENER] = listener
    config.attributes[ATTR_SCHEMA] = schema
    config.attributes.update(service_attributes(scripts.service, fresh=fresh))
    if connection is not None:
        config.attributes[ATTR_CONNECTION] = connection
    if url is not None:
        config.attributes["fleet_url"] = url
    isolate_imports(scripts)
    script = scripts.script
    try:
        with EnvironmentContext(config, script, fn=fn, as_sql=as_sql, starting_rev=starting_rev,
                                destination_rev=destination):
            script.run_env()
    except CommandError as exc:
        raise RevisionError(f"service '{scripts.service.name}': {exc}") from None


def isolate_imports(scripts: ServiceScripts, *, code: bool = True) -> None:
    """Keep services' code apart inside one process.

    Call it before anything imports a service's code (its env.py, its revision modules)
    or changes ``sys.path`` for it (``prepend_sys_path``). ``code=False``: only the path is
    about to change, no code runs (allowed for a service with its own interpreter).

    Two services may both ship a package named, say, ``app`` or ``shapes``, at their
    folder's root or under a folder their env.py or ``prepend_sys_path`` puts on the path;
    Python would hand the second service the first one's cached module. So each service
    has its own ``sys.path`` entries: when fleet moves from one service to another, the
    entries the previous one added leave ``sys.path`` (and are kept for its return), the
    modules loaded from them are forgotten, and the next service's entries come back, its
    folder first (as the working directory is first under plain alembic). Modules of the
    environment itself (site-packages, the standard library, alembic-fleet) are never
    forgotten.
    """
    global _current, _baseline
    service = scripts.service
    if code and service.python is not None:
        raise RevisionError(
            f"service '{service.name}' runs in its own interpreter "
            f"({' '.join(service.python)}); this command imports its code in fleet's",
            hint=f"run this command in that environment ('{service.python[0]} -m "
            "alembic_fleet ...', alembic-fleet is installed there), or set python = "
            "\"fleet\" for this service")
    folder = service.path.resolve()
    if folder == _current:
        return
    if _baseline is None:
        _baseline = list(sys.path)
    baseline = set(_baseline)
    added = [entry for entry in sys.path if entry not in baseline]
    if _current is not None:
        _paths[_current] = added
    sys.path[:] = [entry for entry in sys.path if entry in baseline]
    mine = [str(folder), *(e for e in _paths.get(folder, []) if e != str(folder))]
    _forget_modules_under([e for e in added if e not in mine])
    sys.path[:0] = mine
    _current = folder


def _forget_modules_under(entries: list[str]) -> None:
    """Drop cached modules loaded from ``entries`` (but never the environment's own)."""
    if not entries:
        return
    roots = tuple(os.path.join(os.path.realpath(e or "."), "") for e in entries)
    keep = tuple(os.path.join(os.path.realpath(p), "") for p in {
        sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(),
        site.getusersitepackages(), str(Path(__file__).resolve().parents[1])})
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if not origin:
            continue
        origin = os.path.realpath(origin)
        if origin.startswith(roots) and not origin.startswith(keep):
            del sys.modules[name]


_baseline: list[str] | None = None
"""``sys.path`` before any service changed it."""
_paths: dict[Path, list[str]] = {}
"""The ``sys.path`` entries each service added (its folder, prepend_sys_path, env.py's)."""
_current: Path | None = None
