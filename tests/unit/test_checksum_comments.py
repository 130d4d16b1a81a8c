"""The ledger's checksum of a revision file sets ``# fleet: allow`` comments aside, and
nothing else: a comment that accepts a finding is no change of what was applied."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from alembic_fleet.check.accept import without_acceptances
from alembic_fleet.ledger.checksums import checksum, matches

BASE = (b'from alembic import op\n\nrevision = "r1"\n\n\ndef upgrade():\n'
        b'    op.execute("SELECT 1")\n')


@pytest.mark.parametrize("edited", [
    b"# fleet: allow missing-downgrade: never undone\n" + BASE,
    BASE.replace(b'"SELECT 1")\n', b'"SELECT 1")  # fleet: allow FC302: kept\n'),
    BASE.replace(b"\n\ndef", b"\n    # FLEET:  Allow drop-column, FC302: both\n\ndef", 1)
    .replace(b"    # FLEET", b"# FLEET"),
])
def test_an_allow_comment_is_set_aside(tmp_path: Path, edited: bytes) -> None:
    (tmp_path / "a.py").write_bytes(BASE)
    (tmp_path / "b.py").write_bytes(edited)
    assert checksum(str(tmp_path / "a.py")) == checksum(str(tmp_path / "b.py"))


@pytest.mark.parametrize("edited", [
    BASE.replace(b'"SELECT 1"', b'"SELECT 1 # fleet: allow FC302: not a comment"'),
    BASE.replace(b'"SELECT 1")\n', b'"SELECT 1")  # an ordinary comment\n'),
    BASE + b"# fleet: allow FC302:\n",  # no reason: not an acceptance
    BASE.replace(b"\n", b"\r\n"),
])
def test_anything_else_is_a_change(tmp_path: Path, edited: bytes) -> None:
    (tmp_path / "a.py").write_bytes(BASE)
    (tmp_path / "b.py").write_bytes(edited)
    assert checksum(str(tmp_path / "a.py")) != checksum(str(tmp_path / "b.py"))


def test_a_file_without_acceptances_keeps_its_digest_and_old_rows_still_match(
        tmp_path: Path) -> None:
    path = tmp_path / "r.py"
    path.write_bytes(BASE)
    assert without_acceptances(BASE) is BASE
    assert checksum(str(path)) == hashlib.sha256(BASE).hexdigest()
    # A row written before comments were set aside holds the digest of every byte.
    commented = b"# fleet: allow FC302: kept\n" + BASE
    path.write_bytes(commented)
    assert matches(str(path), hashlib.sha256(commented).hexdigest())
    assert matches(str(path), hashlib.sha256(BASE).hexdigest())
    assert not matches(str(path), hashlib.sha256(b"other").hexdigest())


def test_an_encoding_cookie_and_an_untokenizable_file(tmp_path: Path) -> None:
    latin = b"# -*- coding: latin-1 -*-\n# fleet: allow FC302: caf\xe9\nx = '\xe9'\n"
    assert without_acceptances(latin) == b"# -*- coding: latin-1 -*-\nx = '\xe9'\n"
    broken = b"def f(:\n  # fleet: allow FC302: x\n"
    assert without_acceptances(broken) == broken


@pytest.mark.parametrize("breaker", ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85",
                                     "\u2028", "\u2029"])
def test_a_character_str_splitlines_breaks_at_hides_no_edit(tmp_path: Path,
                                                             breaker: str) -> None:
    # str.splitlines() breaks lines where Python's tokenizer does not: the cut fell on the
    # line above an indented allow comment, and an edit of that line went unseen.
    head = f"{breaker}\nfrom alembic import op\n\n\ndef upgrade():\n"
    tail = "    # fleet: allow missing-downgrade: one way\n"
    before = head + '    op.execute("create table t1 (id int)")\n' + tail
    after = head + '    op.execute("create table t1 (id int, extra text)")\n' + tail
    (tmp_path / "a.py").write_bytes(before.encode())
    (tmp_path / "b.py").write_bytes(after.encode())
    assert checksum(str(tmp_path / "a.py")) != checksum(str(tmp_path / "b.py"))
    # and the comment alone still goes: the same file without it has the same digest
    (tmp_path / "c.py").write_bytes(before.replace(tail, "").encode())
    assert checksum(str(tmp_path / "a.py")) == checksum(str(tmp_path / "c.py"))
