"""The shape of a SQL string, for telling which statements it holds.

Whether a revision's SQL ends its transaction is read from the first words of each
statement in it. Regular expressions over the raw text are fooled both ways: a comment
before the word (PostgreSQL's block comments nest), a ``;`` inside a string literal, a
procedure body between dollar quotes. :func:`skeleton` removes what cannot hold a
statement's first word, so that such expressions only see the statements themselves.
"""

from __future__ import annotations


def skeleton(sql: str, backslashes: bool | None = None) -> str:
    """``sql`` with comments replaced by a space and the contents of string literals
    (``'...'``, ``E'...'``), quoted identifiers and dollar-quoted bodies removed (the
    quotes stay). Statement boundaries (``;``) and keywords outside them are kept, in
    order. An unterminated literal or comment runs to the end, as the server reads it.

    A backslash in a plain ``'...'`` literal reads two ways: as a character under
    ``standard_conforming_strings = on`` (the default), as an escape of the next one when
    a session turned it off (``SELECT 'a\\'' ; COMMIT; SELECT ''''`` commits with the
    setting off). ``backslashes`` says which one the session applies; unknown (None, or
    text that changes the setting itself), both readings are returned, one after the other
    behind a ``;``, so that a statement seen in either counts."""
    if backslashes is not None and "standard_conforming_strings" not in sql.lower():
        return _skeleton(sql, backslashes=backslashes)[0]
    standard, ambiguous = _skeleton(sql, backslashes=False)
    if not ambiguous:
        return standard
    return standard + " ;\n" + _skeleton(sql, backslashes=True)[0]


def _skeleton(sql: str, *, backslashes: bool) -> tuple[str, bool]:
    """One reading of :func:`skeleton` (``backslashes``: whether a backslash escapes in a
    plain literal), and whether a plain literal held a backslash."""
    ambiguous = False
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char == "-" and sql.startswith("--", i):
            i = _line_end(sql, i)
            out.append(" ")
        elif char == "/" and sql.startswith("/*", i):
            i = _block_comment_end(sql, i)
            out.append(" ")
        elif char == "'":
            escapes = backslashes or (
                i > 0 and sql[i - 1] in "eE" and (i < 2 or not _word_char(sql[i - 2])))
            end = _quoted_end(sql, i + 1, "'", escapes)
            ambiguous = ambiguous or (not escapes and "\\" in sql[i:end])
            i = end
            out.append("''")
        elif char == '"':
            i = _quoted_end(sql, i + 1, '"', False)
            out.append('""')
        elif char == "$" and (tag := _dollar_tag(sql, i)) is not None:
            end = sql.find(tag, i + len(tag))
            i = n if end < 0 else end + len(tag)
            out.append("$$")
        else:
            out.append(char)
            i += 1
    return "".join(out), ambiguous


def _line_end(sql: str, i: int) -> int:
    """Where a ``--`` comment ends: at a line feed or a carriage return, as the server's
    scanner has it."""
    ends = [end for end in (sql.find("\n", i), sql.find("\r", i)) if end >= 0]
    return min(ends) if ends else len(sql)


def _letter(char: str) -> bool:
    """A letter of a name or of a dollar quote's tag: ASCII letters, ``_``, and any
    character beyond ASCII (the server takes every byte above 127 as one)."""
    return (char.isascii() and (char.isalpha() or char == "_")) or not char.isascii()


def _word_char(char: str) -> bool:
    """A character that continues a name (``a$b`` is one name)."""
    return _letter(char) or char.isdigit() or char == "$"


def _block_comment_end(sql: str, start: int) -> int:
    """The index after the ``*/`` closing the comment opened at ``start`` (nested)."""
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _quoted_end(sql: str, i: int, quote: str, escapes: bool) -> int:
    """The index after the closing ``quote`` (doubled quotes, and backslashes in ``E''``
    strings, escape it)."""
    while i < len(sql):
        char = sql[i]
        if escapes and char == "\\":
            i += 2
        elif char == quote:
            if sql.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return len(sql)


def _dollar_tag(sql: str, i: int) -> str | None:
    """The dollar-quote tag (``$$``, ``$body$``) opening at ``i``, or None (``$1`` is a
    parameter, ``a$b`` part of a name)."""
    if i > 0 and _word_char(sql[i - 1]):
        return None
    j = i + 1
    if j < len(sql) and _letter(sql[j]):
        j += 1
        while j < len(sql) and (_letter(sql[j]) or (sql[j].isascii() and sql[j].isdigit())):
            j += 1
    if j < len(sql) and sql[j] == "$":
        return sql[i:j + 1]
    return None
