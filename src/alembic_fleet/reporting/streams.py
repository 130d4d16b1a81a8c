"""Where fleet's own output goes, and where everyone else's goes.

Revisions print, and env.py files point logging at stdout; under ``--json`` one stray line
before the object breaks every consumer, and in a table it breaks the layout. So while a
command runs (:func:`diverted`), the process's standard output, both the Python object and
file descriptor 1 (which worker processes and subprocesses inherit), is pointed at standard
error; fleet's own results go to :func:`results`, a private copy of the original stdout.
Help and usage, which Click prints before a command runs, still go to stdout.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from alembic_fleet.exceptions import Terminated
from alembic_fleet.stopping import answered

_results: TextIO | None = None
_reported = False


class Nowhere:
    """Where output goes when its descriptor was closed (``>&-``: Python's ``sys.stdout``
    is then None): nowhere, and the command goes on."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def whole_report() -> Iterator[None]:
    """Write the command's report (one JSON object) whole: a Ctrl-C or SIGTERM halfway cut
    it and an error object followed it, which is no JSON at all. The first SIGINT or
    SIGTERM meanwhile is noted, whichever thread the kernel gave it to, and raised once the
    report is out (exit 130 or 143, and :func:`reported` says no error object follows); a
    second one quits at once, as while a run stops (a reader that stopped reading would
    otherwise hold fleet for ever)."""
    global _reported
    noted: list[int] = []

    def note(number: int, _frame: Any) -> None:
        global _reported
        if noted:  # given up: an error object would wait on the same reader
            _reported = True
            raise Terminated if number == signal.SIGTERM else KeyboardInterrupt
        noted.append(number)

    main = threading.current_thread() is threading.main_thread()
    before = {number: signal.signal(number, note) for number in answered()} if main else {}
    try:
        yield
        _reported = True
    finally:
        for number, handler in before.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
    if noted:
        raise Terminated if noted[0] == signal.SIGTERM else KeyboardInterrupt


def reported() -> bool:
    """Whether the command's report was written, or given up at a second signal: an
    interrupt after it adds nothing to the output."""
    return _reported


def results() -> TextIO:
    """The stream fleet's own results are written to (stdout as the user sees it)."""
    if _results is not None:
        return _results
    return sys.stdout if sys.stdout is not None else Nowhere()


@contextlib.contextmanager
def diverted() -> Iterator[None]:
    """Send everything written to stdout by anyone but fleet's reporter to stderr.

    Re-entrant (the inner call does nothing). When stdout is not file descriptor 1 (a test
    runner's buffer), only the Python object is swapped.
    """
    global _results
    if _results is not None:
        yield
        return
    original = sys.stdout
    with contextlib.suppress(Exception):
        original.flush()
    saved = _saved_descriptor(original)
    if saved is None:
        _results = original if original is not None else Nowhere()  # '>&-': dropped
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout, _results = original, None
        return
    _results = os.fdopen(saved, "w", encoding=getattr(original, "encoding", None) or "utf-8",
                         errors=getattr(original, "errors", None) or "strict",
                         buffering=1 if os.isatty(saved) else -1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        results_stream, _results = _results, None
        with contextlib.suppress(Exception):
            results_stream.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(results_stream.fileno(), 1)
        results_stream.close()
        sys.stdout = original


def restore_for_exec() -> None:
    """Give descriptor 1 back before ``exec`` hands the process to another program, and the
    signals Python ignores (SIGPIPE, SIGXFSZ): an ignored signal stays ignored across exec,
    and ``yes | head -1`` in the program would then print "Broken pipe"."""
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if _results is None:
        return
    with contextlib.suppress(Exception):
        _results.flush()
        sys.stderr.flush()
        os.dup2(_results.fileno(), 1)


def _saved_descriptor(stream: TextIO) -> int | None:
    """A duplicate of descriptor 1 when ``stream`` writes to it, else None."""
    try:
        if stream.fileno() != 1:
            return None
        return os.dup(1)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def stdout_is_stderr() -> None:
    """In a service's interpreter answering fleet (:mod:`alembic_fleet.remote`): its
    descriptor 1 already is fleet's stderr; make ``sys.stdout`` say so too, so that what the
    service's code prints goes where the coordinator sends such output."""
    sys.stdout = sys.stderr
