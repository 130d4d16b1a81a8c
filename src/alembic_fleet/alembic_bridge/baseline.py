"""Apply a service's baseline to a fresh schema (``Baseline`` in ``model/targets.py``).

The three ways a target migrates (replayed SQL, Alembic online through the env helper, and
offline ``--sql``) and ``fleet check``'s scratch schema all call these functions, so a
baseline means the same everywhere: it runs when the schema does not exist yet, right after
the schema is created and ``search_path`` is set to it, in the same transaction, before the
first revision. A schema that exists (even empty, even at base after a downgrade) never gets
it: its tables are already whatever they are, and the baseline is not idempotent.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from alembic_fleet.exceptions import BaselineError, FleetError
from alembic_fleet.model.targets import Baseline
from alembic_fleet.redact import first_line

_sql: dict[str, str] = {}
_callables: dict[str, Callable[[Any], Any]] = {}


def schema_exists(connection: Any, schema: str) -> bool:
    """Whether ``schema`` exists (read inside the caller's transaction, under the target's
    lock: no other fleet runner can create it meanwhile)."""
    return connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                              {"s": schema}).first() is not None


def apply(connection: Any, baseline: Baseline) -> None:
    """Run ``baseline`` on a SQLAlchemy connection whose ``search_path`` starts with the new
    schema. A SQL file is sent as one simple query (several statements, no parameters, so a
    ``%`` is just a character); a callable gets the connection itself."""
    if baseline.kind == "sql":
        statements = read_sql(baseline)
        try:
            connection.connection.driver_connection.cursor().execute(statements)
        except Exception as exc:
            raise _failed(baseline, exc) from exc
        return
    function = load_callable(baseline)
    try:
        function(connection)
    except FleetError:
        raise
    except Exception as exc:
        raise _failed(baseline, exc) from exc


def offline_sql(baseline: Baseline) -> str:
    """The baseline as SQL text for an offline script (``--sql``). A callable cannot be
    rendered: refusing beats a script that silently lacks the tables its revisions alter."""
    if baseline.kind != "sql":
        raise BaselineError(
            f"the baseline {baseline.spec} is a Python callable, which --sql cannot render "
            "for a schema that does not exist yet",
            hint="migrate that schema online, or use a SQL file as baseline")
    # Written as it is; a last statement without its ';' (or followed by a comment) gets
    # one on a line of its own, where it cannot end up inside the comment.
    text = read_sql(baseline).strip()
    return text if text.endswith(";") else text + "\n;"


def read_sql(baseline: Baseline) -> str:
    """The SQL file's text (read once per process)."""
    assert baseline.path is not None
    key = str(baseline.path)
    if key not in _sql:
        try:
            _sql[key] = baseline.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise BaselineError(f"the baseline {baseline.path} cannot be read: {reason}",
                                hint="fix the file or the baseline key") from None
    return _sql[key]


def load_callable(baseline: Baseline) -> Callable[[Any], Any]:
    """Import ``package.module:function`` from the service folder (once per process)."""
    assert baseline.target is not None
    cached = _callables.get(baseline.target)
    if cached is not None:
        return cached
    module_name, _, attribute = baseline.target.partition(":")
    folder = str(baseline.folder) if baseline.folder is not None else None
    if folder is not None and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:
        raise BaselineError(
            f"cannot load the baseline {baseline.target}: {type(exc).__name__}: {exc}",
            hint="the module must be importable from the service folder and define the "
            "function") from None
    if not callable(function):
        raise BaselineError(f"the baseline {baseline.target} is not callable",
                            hint="point it at a function taking a SQLAlchemy connection")
    _callables[baseline.target] = function
    return function


def _failed(baseline: Baseline, error: BaseException) -> BaselineError:
    failure = BaselineError(f"the baseline {baseline.spec} failed: {first_line(error)}",
                            hint="the baseline runs on the new, empty schema, before the "
                            "first revision; it must name no schema")
    # The driver's error stays reachable, so a lock timeout or a lost connection during the
    # baseline is retried like one during a revision.
    failure.orig = getattr(error, "orig", None) or error  # type: ignore[attr-defined]
    return failure
