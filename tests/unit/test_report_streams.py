"""The reporter's streams: plain lines where the output is not a terminal (no Rich loaded),
Rich where it is; the same text either way (no database)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from alembic_fleet.reporting.base import Stream
from alembic_fleet.reporting.console import Reporter


def test_a_piped_stream_writes_the_text_as_it_is_minus_cursor_moves() -> None:
    out = io.StringIO()
    stream = Stream(out)
    assert not stream.is_terminal
    # Markup is text, not markup; what would move a terminal's cursor is left out, as Rich
    # does (bell, backspace, vertical tab, form feed, carriage return).
    stream.text("[bold]tenant[/bold] a\rb\x07c\x08\x0b\x0cd\tend", style="red")
    assert out.getvalue() == "[bold]tenant[/bold] abcd        end\n"  # as Rich printed it


@pytest.mark.parametrize("variable", ["TTY_COMPATIBLE", "FORCE_COLOR"])
def test_what_rich_counts_as_a_terminal_still_gets_rich(monkeypatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    out = io.StringIO()
    stream = Stream(out)
    assert stream.is_terminal
    stream.text("[x] at_head", style="green")
    assert "[x] at_head" in out.getvalue() and "\x1b[" in out.getvalue()


def test_a_reporter_on_pipes_never_imports_rich() -> None:
    code = ("import io, sys\n"
            "from alembic_fleet.reporting.console import Reporter\n"
            "r = Reporter(out=io.StringIO(), err=io.StringIO())\n"
            "r.line('x'); r.note('y'); r.error('e', 'h', 2); r.json({'a': 1})\n"
            "print('rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_the_reporters_lines_are_the_same_as_before() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err)
    reporter.line("postgresql://u:pw@h/db [a]")
    reporter.note("a note")
    reporter.error("it failed", "do this", 1)
    assert out.getvalue() == "postgresql://u:***@h/db [a]\n"
    assert err.getvalue() == "a note\nerror: it failed\nhint: do this\n"


def test_emoji_codes_are_text_on_a_terminal_too(monkeypatch) -> None:
    # A revision's message ':sparkles: add mfa' came out as an emoji through Rich, piped
    # or not: the text is the data, on a terminal as when piped.
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out = io.StringIO()
    Stream(out).text(":sparkles: add mfa")
    assert ":sparkles: add mfa" in out.getvalue()


def test_a_closed_stream_takes_the_lines_and_drops_them() -> None:
    stream = Stream(None)  # what sys.stdout is after '>&-'
    stream.text("a line")
    assert not stream.is_terminal
