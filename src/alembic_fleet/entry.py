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

_HELD: dict[int, object] = {}
"""Signals that came before :func:`main` could act on them (number -> frame): until then
they are noted, not raised in the middle of this module (a traceback through it)."""
_SIGINT = signal.getsignal(signal.SIGINT) if signal.getsignal(
    signal.SIGINT) is not None else signal.default_int_handler
"""SIGINT's handler as the process started: ignored stays ignored (a background job); one
not set from Python (None) is taken for Python's own."""
for _number in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_number) != signal.SIG_IGN or _number == signal.SIGTERM:
        signal.signal(_number, _HELD.__setitem__)

import itertools  # noqa: E402 - after the handlers: a signal here is noted, not raised
import sys  # noqa: E402


class _Terminated(KeyboardInterrupt):
    """SIGTERM during the import."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


def _take_over() -> None:
    """Raise a signal noted so far; from here on, SIGINT raises KeyboardInterrupt as Python's
    own handler does and SIGTERM raises :class:`_Terminated` (the command puts its own)."""
    signal.signal(signal.SIGINT, _SIGINT)
    signal.signal(signal.SIGTERM, _terminate)
    if signal.SIGTERM in _HELD:
        raise _Terminated
    if signal.SIGINT in _HELD:
        raise KeyboardInterrupt


def main() -> int:
    """Import the command, then run it; an interrupt during the import ends it at once."""
    try:
        _take_over()
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
