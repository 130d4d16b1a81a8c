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
"""Signals noted since the start (number -> frame): until :func:`main` acts on them they
are not raised in the middle of this module (a traceback through it)."""
_SIGINT = signal.getsignal(signal.SIGINT)
"""SIGINT's handler as the process started: ignored stays ignored (a background job of a
shell without job control); Python's own otherwise."""


def _handle(handler: object) -> None:
    """SIGTERM, and SIGINT unless it was ignored at the start, to ``handler``."""
    signal.signal(signal.SIGTERM, handler)
    if _SIGINT != signal.SIG_IGN:
        signal.signal(signal.SIGINT, handler)


_handle(_HELD.__setitem__)  # noted from here on

import contextlib  # noqa: E402 - after the handlers: a signal here is noted, not raised
import itertools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from alembic_fleet.exceptions import Terminated  # noqa: E402 - what the command raises too


def _stop(number: int, frame: object) -> None:
    """The first signal while the command is imported: noted (an importer may swallow what
    a handler raises), any later one only noted (a second signal raised while the first is
    reported was a traceback, or an error an importer's callback ignored), and raised."""
    _HELD[number] = frame
    raise_held()


def raise_held() -> None:
    """Raise the signals noted so far, if any, SIGTERM first (:class:`Terminated`); any later
    one is noted. The command calls it once its modules are loaded, before it puts its own
    handlers."""
    if _HELD:
        _handle(_HELD.__setitem__)
        raise Terminated if signal.SIGTERM in _HELD else KeyboardInterrupt


def main() -> int:
    """Import the command, then run it; an interrupt during the import ends it at once."""
    try:
        _handle(_stop)
        raise_held()  # one that came before
        # The process is fleet's: what the command's imports make (with collection paused)
        # is frozen, not walked once more when collection resumes (see gc_pause).
        from alembic_fleet.gc_pause import freeze_what_pauses_make

        freeze_what_pauses_make()
        from alembic_fleet.cli import main as command

        raise_held()  # one swallowed by an importer (the handler noted it first)
        return command()  # which loads its modules, then puts its own handlers
    except (KeyboardInterrupt, Exception) as exc:  # before the command's handling began
        # An Exception while a signal is noted is that interrupt, wrapped by what it
        # interrupted: Python 3.11 turns what a class's __set_name__ raises (a dataclass
        # being made) into a RuntimeError.
        if not (isinstance(exc, KeyboardInterrupt) or _HELD):
            raise
        _handle(_HELD.__setitem__)
        _interrupted(isinstance(exc, Terminated) or signal.SIGTERM in _HELD)
        raise  # not reached


def _interrupted(terminated: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the error is written whole
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    word, code = ("terminated", 143) if terminated else ("interrupted", 130)
    args = sys.argv[1:]
    own = args[:args.index("--")] if "--" in args else args
    as_json = "--json" in own or "--format=json" in own or (
        "--format", "json") in itertools.pairwise(own)
    stream = sys.stdout if as_json else sys.stderr
    try:  # as the reporter writes an error
        stream.write(f'{{"error": {{"message": "{word}", "hint": null, "exit_code": {code}}}}}\n'
                     if as_json else f"error: {word}\n")
        stream.flush()
    except (AttributeError, OSError, ValueError):  # closed, or its reader gone: dropped
        with contextlib.suppress(OSError):
            os.close(stream.fileno() if stream is not None else (1 if as_json else 2))
    sys.exit(code)
