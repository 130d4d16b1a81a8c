"""The ``fleet`` command: parse, call the façade, report, exit.

:func:`main` is the console script; it turns whatever a command raised into an exit code
in exactly one place (through :func:`alembic_fleet.exit_codes.exit_code`).
"""

from __future__ import annotations

import gc
import importlib
import itertools
import os
import signal
import sys
from collections.abc import Sequence

from alembic_fleet.gc_pause import collection_paused, freeze_what_pauses_make

# Start-up: importing the commands (SQLAlchemy, psycopg, fleet) makes some 90,000
# objects and no garbage, and the collector would walk them over and over while they are
# made: collection stays off until they are all there (a fifth of the import time), and is
# on again however the import ends (a failed import must not leave a caller without it).
# They are frozen (never walked again) only when the process is fleet's: see main(). Frozen
# here, they would take along every object of a program that imports this module, which
# then could never be collected again (nor their finalizers run).
with collection_paused():
    import click

    from alembic_fleet.cli import (  # noqa: F401 (commands)
        checking,
        devloop,
        migrating,
        planning,
        tenants,
    )
    from alembic_fleet.cli.app import cli, make_reporter
    from alembic_fleet.exceptions import FleetError, Terminated
    from alembic_fleet.exit_codes import ExitCode, exit_code
    from alembic_fleet.reporting.streams import reported
    from alembic_fleet.stopping import hold_signals

COMMAND_MODULES = ("alembic_fleet.commands", "alembic_fleet.reporting.console",
                   "alembic_fleet.execution.run", "alembic_fleet.planning")
"""What a command (not ``--help``, ``--version`` or a shell completion) imports: SQLAlchemy
and most of fleet, two thirds of the start-up (Rich only when the output is a terminal).
The command modules of this package import them only inside the commands; :func:`main`
loads them first, collection off."""

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleet`` command; returns (and exits with) the exit code.

    Without ``argv`` the process is the command's (console script, ``python -m``): what the
    imports made is frozen first, so the run's collections never walk it again.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    own = args[:args.index("--")] if "--" in args else args  # the rest is another program's
    as_json = "--json" in own or "--format=json" in own or any(
        pair == ("--format", "json") for pair in itertools.pairwise(own))
    debug = "--debug" in own
    reporter = _LazyReporter(as_json)
    if argv is None:  # what the imports and the command build lives until the end
        freeze_what_pauses_make()
    previous = signal.getsignal(signal.SIGTERM)
    interrupt = signal.getsignal(signal.SIGINT)  # a stopping run holds both (see main's end)
    entry = sys.modules.get("alembic_fleet.entry") if argv is None else None
    if entry is None:  # no console script's handlers to keep while the modules load
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # Inside the try: a Ctrl-C or SIGTERM while the command modules load is reported
        # (130, 143) as any other, not a traceback. Under the console script its handlers
        # are kept while they load: the first signal raised, any later one noted (raised in
        # an importer's callback, it was an error the interpreter printed and ignored).
        if not _help_only(own):
            _load(COMMAND_MODULES)
            if argv is None:
                # The process is fleet's: it and what it starts (pg_dump, psql, a legacy
                # env.py's alembic, a service's interpreter) wait a bounded time for a
                # session where the URL or a connection service's file says nothing.
                from alembic_fleet.drivers import bound_own_environment

                bound_own_environment()
        if argv is None:
            signal.signal(signal.SIGTERM, _terminate)
            if interrupt != signal.SIG_IGN:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            if entry is not None:
                entry.raise_held()  # one that came while the modules loaded
            gc.freeze()
        result = cli.main(args=args, prog_name="fleet", standalone_mode=False)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort as exc:  # click turns a KeyboardInterrupt into Abort
        hold_signals()
        terminated = isinstance(exc.__context__, Terminated)
        code = ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED
        if not (as_json and reported()):  # a JSON report stays the one object written
            reporter.error("terminated" if terminated else "interrupted", None, code)
    except click.ClickException as exc:
        if as_json:
            reporter.error(exc.format_message(), None, ExitCode.USAGE)
        else:
            exc.show()
        code = ExitCode.USAGE
    except KeyboardInterrupt as exc:
        hold_signals()  # a second one while the error is reported waits for it
        code = exit_code(exc)
        if not (as_json and reported()):
            reporter.error("terminated" if isinstance(exc, Terminated) else "interrupted",
                           None, code)
    except FleetError as exc:
        code = exit_code(exc)
        reporter.error(exc.message, exc.hint, code)
    except Exception as exc:  # the last resort: never a raw traceback with secrets in it
        reporter.crash(exc, debug=debug)
        code = ExitCode.FAILED
    finally:
        if argv is None:  # reported: a signal changes nothing now (nor reports twice)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, interrupt if interrupt is not None
                          else signal.default_int_handler)
    if argv is None:  # the process ends here: what it made stays, and is not collected
        gc.freeze()  # again by the interpreter's last collections (a tenth of a second)
        sys.exit(code)
    return code


def _help_only(own: Sequence[str]) -> bool:
    """Whether fleet's own arguments (those before ``--``) only ask for help, the version or
    a shell completion, which need none of :data:`COMMAND_MODULES`."""
    return (not own or any(a in ("-h", "--help", "--version") for a in own)
            or any(name.startswith("_FLEET_COMPLETE") for name in os.environ))


def _load(modules: Sequence[str]) -> None:
    """Import ``modules`` with the collector off (see the imports at the top)."""
    with collection_paused():
        for module in modules:
            importlib.import_module(module)


class _LazyReporter:
    """The reporter of :func:`main`'s errors, made when one is reported."""

    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json

    def __getattr__(self, name: str) -> object:
        return getattr(make_reporter(json_mode=self._as_json), name)


def _terminate(_signum: int, _frame: object) -> None:
    """SIGTERM (what Kubernetes sends, to PID 1 too) is handled like Ctrl-C: the targets in
    flight roll back, the summary is printed, the run is recorded as terminated, exit 143."""
    raise Terminated


if __name__ == "__main__":  # pragma: no cover
    main()
