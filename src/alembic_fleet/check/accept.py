"""``# fleet: allow RULE: reason`` comments: accepting a finding in the revision file itself.

A reason is required: it is what reviewers and reports show next to the accepted finding.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass

from alembic_fleet.model.findings import RULES, RULES_BY_NAME

_ALLOW_COMMENT = re.compile(
    r"^\#+\s*fleet:\s*allow\s+(?P<rules>[^:]*?)\s*:(?P<reason>.*)$", re.IGNORECASE
)


_MAYBE_ALLOW = re.compile(rb"fleet\s*:\s*allow", re.IGNORECASE)
"""What every acceptance comment holds, in any encoding a revision file may be in (ASCII
letters): a file without it has nothing to set aside."""


@dataclass(frozen=True)
class Acceptance:
    """A ``# fleet: allow RULE: reason`` comment in a revision file."""

    rule: str
    reason: str
    line: int


def acceptances(source: str) -> dict[str, Acceptance]:
    """The rules accepted by ``# fleet: allow`` comments in a revision file's Python source.

    The form is ``# fleet: allow RULE-NAME[, RULE-NAME...]: reason text``. A comment without
    a reason is not an acceptance, and unknown rule names are ignored;
    a code (``FC501``) may stand for its name. When a rule is
    accepted twice, the first comment wins.
    """
    accepted: dict[str, Acceptance] = {}
    for line, comment in _comments(source):
        match = _ALLOW_COMMENT.match(comment.strip())
        if match is None:
            continue
        reason = match.group("reason").strip()
        if not reason:
            continue
        for name in match.group("rules").split(","):
            known = RULES.get(name.strip().upper()) or RULES_BY_NAME.get(name.strip().lower())
            rule = known.name if known else ""
            if known and rule not in accepted:
                accepted[rule] = Acceptance(rule, reason, line)
    return accepted


def without_acceptances(data: bytes) -> bytes:
    """A revision file's bytes without its ``# fleet: allow`` comments (the comment, the
    blanks before it, and a line it leaves empty): what the ledger's checksum covers, so
    that accepting a finding of an applied revision is not a change of what was applied.
    Only real comments count (a string that looks like one stays), and a file Python cannot
    tokenize is taken as it is. A file without the words is taken as it is at once: the
    tokenizer would cost every ``fleet migrate`` a few milliseconds per revision."""
    if _MAYBE_ALLOW.search(data) is None:
        return data
    try:
        tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        return data
    encoding = tokens[0].string if tokens and tokens[0].type == tokenize.ENCODING else "utf-8"
    cuts = {token.start[0]: token.start[1] for token in tokens
            if token.type == tokenize.COMMENT and _is_acceptance(token.string)}
    if not cuts:
        return data
    # Lines as the tokenizer numbers them: ended by "\n" only (str.splitlines() also breaks
    # at form feeds and other characters, and the cut fell on another line).
    lines = data.decode(encoding).split("\n")
    kept = []
    for number, line in enumerate(lines, start=1):
        column = cuts.get(number)
        if column is None:
            kept.append(line)
            continue
        code = line[:column].rstrip(" \t")
        ending = "\r" if line.endswith("\r") else ""
        if code.strip():
            kept.append(code + ending)
        elif number == len(lines):  # the last line, without "\n": what ends the one before
            kept.append("")
    return "\n".join(kept).encode(encoding)


def _is_acceptance(comment: str) -> bool:
    match = _ALLOW_COMMENT.match(comment.strip())
    return match is not None and bool(match.group("reason").strip())


def _comments(source: str) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of each comment; a file Python cannot tokenize is read line by line."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        for number, text in enumerate(source.splitlines(), start=1):
            position = text.find("#")
            if position >= 0:
                yield number, text[position:]
        return
    for token in tokens:
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
