"""Words for counts in what fleet prints: ``1 check``, ``2 checks``."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, in the plural (``plural``, or ``noun`` + ``s``) unless it is
    one: ``counted(1, "error")`` is ``1 error``, ``counted(0, "error")`` ``0 errors``."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"
