"""Human and machine output: the primitives every view uses.

Rich tables and a live progress bar on a terminal, plain lines when piped, one JSON object
with ``--json``. URL passwords are masked in everything printed
(:func:`~alembic_fleet.redact.mask_urls`); free text that may quote a password (errors,
hints, notes, tracebacks) is also scrubbed of every known password
(:func:`~alembic_fleet.redact.scrub`) where it is quoted (``describe_error``,
``explain_connection_error``, ...), so messages, hints and notes, fleet's own sentences,
only get URL passwords masked here: a password that is also a service's name must not turn
"fleet history auth" into "fleet history ***". Tracebacks (``--debug``) are scrubbed whole.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alembic_fleet.model.findings import Finding
from alembic_fleet.model.status import (
    Outcome,
    TargetState,
)
from alembic_fleet.redact import mask_urls, scrub
from alembic_fleet.reporting import payloads, streams

if TYPE_CHECKING:  # a live bar is a terminal's only (imported when one is shown)
    from rich.console import Console
    from rich.progress import Progress

STATE_STYLE = {
    TargetState.AT_HEAD: "green",
    TargetState.BEHIND: "yellow",
    TargetState.MISSING: "yellow",
    TargetState.AHEAD: "magenta",
    TargetState.FAILED: "red",
    TargetState.ORPHAN: "cyan",
    TargetState.UNREACHABLE: "red",
}
OUTCOME_STYLE = {Outcome.MIGRATED: "green", Outcome.SKIPPED: "dim", Outcome.FAILED: "red"}


def relative_path(path: str | None) -> str:
    """``path`` relative to the working directory when it is below it."""
    if not path:
        return ""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def github_annotation(item: Finding) -> str:
    """A GitHub Actions workflow command: shows the finding on the pull request's diff."""
    level = "notice" if item.accepted else item.effective_severity.value
    parts = [f"file={relative_path(item.file)}"] if item.file else []
    if item.line:
        parts.append(f"line={item.line}")
    parts.append(f"title={item.code} {item.rule.name} ({item.service})")
    body = item.message
    if item.statement:
        body += f"\n{item.statement}"
    body += "".join(f"\n{d}" for d in item.details)
    body += f"\naccepted: {item.accepted}" if item.accepted else f"\nhint: {item.rule.hint}"

    def escape_property(text: str) -> str:
        return (text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
                .replace(":", "%3A").replace(",", "%2C"))

    data = body.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{level} " + ",".join(
        k + "=" + escape_property(v) for k, v in (p.split("=", 1) for p in parts)) + f"::{data}"


def revs_text(revs: Sequence[str]) -> str:
    return ",".join(revs) if revs else "-"


_CONTROL_CODES = dict.fromkeys((7, 8, 11, 12, 13))
"""Bell, backspace, vertical tab, form feed and carriage return: what Rich leaves out of a
printed text, left out of plain lines alike (a hostile name must not move the cursor); and
tabs become spaces to the next multiple of 8, as Rich prints them."""


class Stream:
    """One output stream as the views use it: Rich's console where it may be a terminal
    (styles, tables, a live bar), plain lines where it is not (piped, captured, ``--json``),
    so that such a command does not import Rich (a tenth of its start-up on a slow machine).

    The test is Rich's own: a stream that is not a TTY is a terminal only when
    ``TTY_COMPATIBLE`` or ``FORCE_COLOR`` says so, and then Rich decides."""

    def __init__(self, file: Any) -> None:
        self.file = file if file is not None else streams.Nowhere()  # a closed descriptor
        self._console: Console | None = None
        self.is_terminal = False
        if ("TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ
                or _isatty(file)):
            self.is_terminal = self.console.is_terminal

    @property
    def console(self) -> Console:
        """Rich's console on this stream (made when first needed)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.file, highlight=False, soft_wrap=True,
                                    emoji=False)  # a revision's ':sparkles:' stays text
        return self._console

    def text(self, text: str, *, style: str | None = None) -> None:
        """``text`` as it is (never read as markup), one line."""
        if self.is_terminal:
            from rich.markup import escape

            self.console.print(escape(text), style=style)
        else:
            self.file.write(text.translate(_CONTROL_CODES).expandtabs(8) + "\n")
            self.file.flush()


def _isatty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no such method; a closed file
        return False


class ReporterBase:
    """Writes one command's output in the mode the user asked for: lines, notes, JSON,
    tables and errors. The views (:mod:`.run_views`, :mod:`.record_views`,
    :mod:`.finding_views`) build on these."""

    MAX_TABLE_ROWS = 50
    """Above this many migrated targets the terminal gets the summary only (--json has all)."""

    def __init__(self, *, json_mode: bool = False, out: Any = None, err: Any = None) -> None:
        self.json_mode = json_mode
        self.out = Stream(out or streams.results())
        self.err = Stream(err or sys.stderr)
        self.rich = self.out.is_terminal and not json_mode
        self._progress: Progress | None = None
        self._task: Any = None
        self._failures = 0

    # -- low level -------------------------------------------------------------------------
    def line(self, text: str = "", *, style: str | None = None) -> None:
        """A plain line on stdout (markup-free; URL passwords masked, data untouched)."""
        self.out.text(mask_urls(text), style=style if self.rich else None)

    def note(self, text: str) -> None:
        """A remark for people on stderr (never in the way of JSON or piped data)."""
        if not self.json_mode:
            self.err.text(mask_urls(text), style="dim" if self.err.is_terminal else None)

    def json(self, payload: dict[str, Any]) -> None:
        """One JSON object: indented for a person at a terminal, compact for programs."""
        indent = 2 if self.out.is_terminal else None
        text = mask_urls(json.dumps(payload, indent=indent)) + "\n"
        with streams.whole_report():
            self.out.file.write(text)
            self.out.file.flush()

    def _table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]],
               styles: Sequence[str | None] | None = None) -> None:
        if self.rich:
            from rich.markup import escape
            from rich.table import Table  # tables are for some commands only

            table = Table(*headers, header_style="bold")
            for index, row in enumerate(rows):
                style = styles[index] if styles else None
                table.add_row(*(escape(mask_urls(str(c))) for c in row), style=style)
            self.out.console.print(table)
            return
        widths = [max([len(h), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(headers)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        self.line(fmt.format(*headers).rstrip())
        for row in rows:
            self.line(fmt.format(*(str(c) for c in row)).rstrip())

    # -- errors ----------------------------------------------------------------------------
    def error(self, message: str, hint: str | None, code: int) -> None:
        if self.json_mode:
            self.json(payloads.error_payload(mask_urls(message),
                                             mask_urls(hint) if hint else None, code))
            return
        self.err.text(mask_urls(f"error: {message}"),
                      style="bold red" if self.err.is_terminal else None)
        if hint:
            self.err.text(mask_urls(f"hint: {hint}"))

    def crash(self, error: BaseException, *, debug: bool) -> None:
        """An unexpected exception: one line, or the scrubbed traceback with --debug."""
        if debug:
            text = "".join(traceback.format_exception(error))
            self.err.file.write(scrub(text))
        self.error(scrub(f"internal error: {type(error).__name__}: {error}"),
                   None if debug else "run again with --debug to see the traceback", 1)

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
