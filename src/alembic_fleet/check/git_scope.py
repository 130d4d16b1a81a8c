"""The revision files that are new on this branch, from git: ``fleet check``'s default scope.

A long history is full of revisions that were applied long ago and will never be edited
again (editing one is FC401); linting each of them again on every run buries what a branch
adds. So, in a git work tree, the per-revision rules look only at the revision files that
are new or changed since the merge-base of HEAD with the base branch, the first of:

1. the current branch's upstream (``@{upstream}``), unless it is the branch's own remote
   copy (a feature branch pushed with ``-u``), which is no base;
2. the remote's default branch (``origin/HEAD``);
3. ``main``, ``master``, then ``origin/main``, ``origin/master``, whichever exists;

plus what is not committed yet (changed, staged or untracked files). With no git, no work
tree or no base branch, every revision is linted and the scope says why (``note``).

``git`` runs as a subprocess; a missing ``git`` is a fallback, never an error. ``--since
REF`` keeps its own meaning: files that do not exist in git at REF (:func:`files_at`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic_fleet.check.report import RevisionScope
from alembic_fleet.exceptions import UsageError

GIT_TIMEOUT = 60
"""Seconds any one git command may take (local commands only, no network)."""

BASE_CANDIDATES = (
    ("@{upstream}", None),
    ("origin/HEAD", None),
    ("main", "refs/heads/main"),
    ("master", "refs/heads/master"),
    ("origin/main", "refs/remotes/origin/main"),
    ("origin/master", "refs/remotes/origin/master"),
)
"""The base branches tried in order: the name shown, and the ref looked up (None: resolved
by name, see :func:`_named_base`)."""


class GitUnavailable(Exception):
    """git cannot answer for a folder; the message says why, for the report's note."""


@dataclass(frozen=True)
class _Base:
    top: Path
    ref: str | None = None
    merge_base: str | None = None
    reason: str | None = None


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in ``folder``; :class:`GitUnavailable` when git is missing or hangs."""
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        raise GitUnavailable("git is not installed") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitUnavailable(f"git failed: {exc}") from None


def _toplevel(folder: Path) -> Path:
    result = _git(folder, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no work tree"])[0]
        if "not a git repository" in detail:
            raise GitUnavailable(f"{folder} is not inside a git work tree")
        raise GitUnavailable(f"git cannot read {folder}: {detail}")
    if not result.stdout.strip():
        raise GitUnavailable(f"{folder} is not inside a git work tree")
    return Path(result.stdout.strip()).resolve()


class BranchScopes:
    """Decides the ``branch`` scope of each service, resolving the base once per repository."""

    def __init__(self) -> None:
        self._bases: dict[Path, _Base] = {}

    def scope(self, folders: Sequence[Path]) -> RevisionScope:
        """The scope for a service whose revision files live in ``folders``."""
        old: set[Path] = set()
        base: _Base | None = None
        try:
            for folder in folders:
                if not folder.is_dir():
                    continue
                top = _toplevel(folder)
                if top not in self._bases:
                    self._bases[top] = _find_base(top)
                base = self._bases[top]
                if base.merge_base is None:
                    return RevisionScope("all", note=base.reason)
                old |= _unchanged(top, folder, base.merge_base)
        except GitUnavailable as exc:
            return RevisionScope("all", note=str(exc))
        if base is None:
            return RevisionScope("all")
        return RevisionScope("branch", frozenset(old), base.ref, base.merge_base)


def _find_base(top: Path) -> _Base:
    """The first base branch HEAD shares history with, and their merge-base."""
    if _git(top, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return _Base(top, reason=f"the git repository {top} has no commit yet")
    for name, ref in BASE_CANDIDATES:
        shown, ref = (name, ref) if ref is not None else _named_base(top, name)
        if ref is None:
            continue
        found = _git(top, "merge-base", "HEAD", ref)
        if found.returncode == 0 and found.stdout.strip():
            return _Base(top, shown, found.stdout.strip())
    tried = ", ".join(name for name, _ in BASE_CANDIDATES)
    return _Base(top, reason=f"no base branch found in {top} (tried {tried})")


def _named_base(top: Path, name: str) -> tuple[str, str | None]:
    """``@{upstream}`` and ``origin/HEAD`` as the branch they stand for (``origin/main``)."""
    if name == "@{upstream}":
        found = _git(top, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
        branch = _git(top, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        if found.stdout.strip().partition("/")[2] == branch:
            # The branch's own remote copy (pushed with -u): not what it merges into.
            return name, None
    else:
        found = _git(top, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    shown = found.stdout.strip()
    if found.returncode != 0 or not shown:
        return name, None
    return shown, shown


def _unchanged(top: Path, folder: Path, commit: str) -> set[Path]:
    """Files under ``folder`` as they were at ``commit`` and still are in the work tree
    (commits since, staged and unstaged changes all count as changes)."""
    try:
        relative = folder.resolve().relative_to(top).as_posix() or "."
    except ValueError:
        raise GitUnavailable(f"{folder} is outside the git work tree {top}") from None
    at_base = _git(top, "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit,
                   "--", relative)
    changed = _git(top, "diff", "--name-only", "-z", "--no-renames", commit, "--", relative)
    for result in (at_base, changed):
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["failed"])[0]
            raise GitUnavailable(f"git cannot compare {folder} with {commit[:7]}: {detail}")
    names = set(at_base.stdout.split("\0")) - set(changed.stdout.split("\0"))
    return {(top / name).resolve() for name in names if name}


def files_at(ref: str, folders: Sequence[Path]) -> set[Path]:
    """Absolute paths of the files under ``folders`` that exist in git at ``ref``
    (``--since REF``); a usage error when git cannot tell."""
    found: set[Path] = set()
    for folder in folders:
        try:
            top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            listed = subprocess.run(
                ["git", "-C", str(folder), "ls-tree", "-r", "--name-only", "--full-tree",
                 ref, "--", str(folder.resolve().relative_to(Path(top).resolve()))],
                capture_output=True, text=True, check=True).stdout
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise UsageError(f"--since {ref}: cannot list {folder} in git: {detail.strip()}",
                             hint="run inside a git checkout and fetch the base branch, "
                             "e.g. 'git fetch origin main' then '--since origin/main'") from None
        found.update((Path(top) / line).resolve() for line in listed.splitlines() if line)
    return found
