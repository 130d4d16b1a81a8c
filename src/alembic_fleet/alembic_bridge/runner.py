"""Run one target's migration through Alembic, on a connection fleet owns.

The service's own ``env.py`` runs (it calls :mod:`alembic_fleet.env`), with the connection
and schema handed over in ``config.attributes``; the env helper owns the transaction, so a
failure rolls the whole target back.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.util import CommandError

from alembic_fleet.alembic_bridge.env_helper import (
    ATTR_APPLIED,
    ATTR_CONNECTION,
    ATTR_LISTENER,
    ATTR_PROBE,
    ATTR_SCHEMA,
    service_attributes,
)
from alembic_fleet.alembic_bridge.scripts import ServiceScripts, make_config
from alembic_fleet.exceptions import RevisionError


class RevisionFailed(Exception):
    """A revision raised while a target was migrating; wraps the original error."""

    def __init__(self, revision: str | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.revision = revision
        self.error = error


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


def _online(
    scripts: ServiceScripts, connection: Any, schema: str, destination: str,
    plan: Callable[[Any], list[Any]], listener: Any = None,
) -> None:
    planned: list[Any] = []
    applied: list[Any] = []

    def steps(current: Any, _context: Any) -> list[Any]:
        planned[:] = plan(current)
        return planned

    try:
        _run_env(scripts, steps, connection=connection, schema=schema, destination=destination,
                 applied=applied, listener=listener)
    except RevisionError:
        raise
    except Exception as exc:
        failing = planned[len(applied)] if len(applied) < len(planned) else None
        script_of = getattr(failing, "revision", None)  # RevisionStep -> its Script
        revision = getattr(script_of, "revision", None)
        raise RevisionFailed(revision, exc) from exc


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
            config, scripts.script, fn=lambda _rev, _ctx: [], as_sql=True,
            destination_rev="base", starting_rev="base"):
        scripts.script.run_env()
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

    _run_env(scripts, steps, schema=schema, destination=destination, as_sql=True,
             starting_rev=start, output=output, url=url, fresh=fresh)
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
) -> None:
    config = make_config(scripts.service, output=output)
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


def isolate_imports(scripts: ServiceScripts) -> None:
    """Keep services' application packages apart inside one process.

    Call it before anything imports a service's code (its env.py, its revision modules).

    Two services may both ship a package named, say, ``app``; Python would hand the second
    service the first one's cached module. Before running a service's env.py, forget the
    cached modules whose top-level name this service's folder also provides but which were
    loaded from another service's folder, and put this service's folder first on
    ``sys.path``.
    """
    global _current
    service = scripts.service
    if service.python is not None:
        raise RevisionError(
            f"service '{service.name}' runs in its own interpreter "
            f"({' '.join(service.python)}); this command imports its code in fleet's",
            hint=f"run this command in that environment ('{service.python[0]} -m "
            "alembic_fleet ...', alembic-fleet is installed there), or set python = "
            "\"fleet\" for this service")
    folder = service.path.resolve()
    if folder == _current:
        return
    _current = folder
    names = _top_level_names(folder)
    others = tuple(str(f) + os.sep for f in _names if f != folder)
    for name in [n for n in sys.modules if n.partition(".")[0] in names]:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if others and origin.startswith(others):
            del sys.modules[name]
    text = str(folder)
    if text in sys.path:
        sys.path.remove(text)
    sys.path.insert(0, text)


def _top_level_names(folder: Path) -> frozenset[str]:
    """Module and package names importable from ``folder`` (cached per folder)."""
    cached = _names.get(folder)
    if cached is None:
        try:
            entries = list(folder.iterdir())
        except OSError:
            entries = []
        cached = frozenset(
            e.stem if e.suffix == ".py" else e.name
            for e in entries
            if (e.suffix == ".py" and e.is_file())
            or (e.is_dir() and e.name.isidentifier() and (e / "__init__.py").exists())
        )
        _names[folder] = cached
    return cached


_names: dict[Path, frozenset[str]] = {}
_current: Path | None = None
