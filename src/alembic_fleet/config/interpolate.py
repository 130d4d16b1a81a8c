"""``${VAR}`` and ``${VAR:-default}`` interpolation of configuration strings.

Defaults may themselves hold references (``${A:-${B:-x}}``), as in a shell. ``$$`` is a literal
``$``. Values read from the environment are never interpolated again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A reference is malformed or names an unset variable without a default."""


def interpolate(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand every reference in ``text`` from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    value, end = _expand(text, 0, env, closing=False, lenient=False)
    assert end == len(text)
    return value


def _expand(
    text: str, pos: int, env: Mapping[str, str], *, closing: bool, lenient: bool
) -> tuple[str, int]:
    """Expand from ``pos`` until the end (or, when ``closing``, an unmatched ``}``).

    ``lenient`` parses a default that will not be used: unset variables there are no error.
    """
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if closing and char == "}":
            return "".join(out), pos
        if char != "$":
            out.append(char)
            pos += 1
            continue
        if text.startswith("$$", pos):
            out.append("$")
            pos += 2
            continue
        if not text.startswith("${", pos):
            out.append("$")
            pos += 1
            continue
        match = _NAME.match(text, pos + 2)
        if not match:
            raise InterpolationError(f"malformed reference at {text[pos:pos + 12]!r}")
        name, pos = match.group(0), match.end()
        if text.startswith("}", pos):
            if name not in env and not lenient:
                raise InterpolationError(
                    f"environment variable {name} is not set (write ${{{name}:-default}} "
                    "to give it a default)"
                )
            out.append(env.get(name, ""))
            pos += 1
        elif text.startswith(":-", pos):
            value = env.get(name, "")
            default, pos = _expand(text, pos + 2, env, closing=True, lenient=lenient or bool(value))
            if pos >= len(text):
                raise InterpolationError(f"unclosed reference to {name}")
            out.append(value if value else default)
            pos += 1
        else:
            raise InterpolationError(f"malformed reference to {name}: expected '}}' or ':-'")
    if closing:
        raise InterpolationError("unclosed '${' reference")
    return "".join(out), pos
