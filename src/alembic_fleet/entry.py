"""The ``fleet`` console script, before anything heavy is imported.

Importing the command (Click, fleet's command modules) takes a tenth of a second, and a
Ctrl-C or SIGTERM in it used to print a Python traceback (or, for SIGTERM, end the process
with no word). From here on it is reported as any later interrupt is: ``interrupted`` or
``terminated``, exit 130 or 143, a JSON error with ``--json``. :func:`alembic_fleet.cli.main`
takes over once it is imported.
"""

from __future__ import annotations

# The interpreter's own signal module, not ``signal``: importing that one imports ``enum``
# (9 ms) unless the wrapper pip wrote did already (older ones import ``re`` first, newer
# ones only ``sys``), and a Ctrl-C landing there, before main() runs, was a traceback.
# ``_signal`` is built in and already loaded: nothing to import.
import _signal as signal
import itertools
import sys


class _Terminated(KeyboardInterrupt):
    """SIGTERM during the import."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


def main() -> int:
    """Import the command, then run it; an interrupt during the import ends it at once."""
    signal.signal(signal.SIGTERM, _terminate)  # until the command puts its own
    try:
        # The process is fleet's: what the command's imports make (with collection paused)
        # is frozen, not walked once more when collection resumes (see gc_pause).
        from alembic_fleet.gc_pause import freeze_what_pauses_make

        freeze_what_pauses_make()
        from alembic_fleet.cli import main as command

        return command()
    except KeyboardInterrupt as exc:  # before the command's own handling began
        _interrupted(isinstance(exc, _Terminated))
        raise  # not reached


def _interrupted(terminated: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the error is written whole
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    word, code = ("terminated", 143) if terminated else ("interrupted", 130)
    args = sys.argv[1:]
    own = args[:args.index("--")] if "--" in args else args
    if "--json" in own or "--format=json" in own or ("--format", "json") in itertools.pairwise(
            own):
        sys.stdout.write(f'{{"error": {{"message": "{word}", "hint": null, '  # as the
                         f'"exit_code": {code}}}}}\n')  # reporter writes an error
    else:
        sys.stderr.write(f"error: {word}\n")
    sys.exit(code)
