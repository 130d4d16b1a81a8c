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
