"""Layer 1 of ``fleet check``: the files, no database.

Two checks per service, both on what is in the version folders: the revision files' rules
(:func:`alembic_fleet.check.scripts_lint.lint_service`, graph included), and the SQL each
*new* revision's ``upgrade()`` renders offline, against the unsafe-operation rules
(:mod:`alembic_fleet.check.unsafe`). Which revisions are new (``--since REF``, ``--database``
or all) is decided here too, since only this layer needs it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from alembic_fleet.alembic_bridge import scratch
from alembic_fleet.check.accept import acceptances
from alembic_fleet.check.report import CheckedService, CheckOptions
from alembic_fleet.check.revision_files import try_read_revision_file
from alembic_fleet.check.scripts_lint import lint_service
from alembic_fleet.check.unsafe import lint_statements
from alembic_fleet.exceptions import UsageError
from alembic_fleet.model.findings import Finding, finding
from alembic_fleet.model.status import TargetStatus


def application_packages(subject: CheckedService) -> tuple[str, ...]:
    """The packages a revision must not import: configured, or the service folder's own
    top-level packages and modules (the migrations folder excepted)."""
    if subject.service.application_packages is not None:
        return subject.service.application_packages
    folder = subject.service.path
    migrations = subject.scripts.script_dir.resolve()
    names = set()
    for entry in folder.iterdir():
        if entry.resolve() == migrations or entry.name.startswith("."):
            continue
        if entry.suffix == ".py" and entry.is_file() and entry.stem != "env":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return tuple(sorted(names))


def lint_files(subject: CheckedService) -> list[Finding]:
    """The revision files' findings (FC1xx, FC201, FC202)."""
    return lint_service(
        subject.name, subject.scripts.version_dirs,
        revision_pattern=subject.service.revision_pattern,
        file_pattern=subject.service.file_pattern,
        application_packages=application_packages(subject),
    )


def new_revisions(subject: CheckedService, options: CheckOptions,
                  current: Sequence[TargetStatus]) -> list[str]:
    """The revisions the unsafe-operation rules look at, oldest first.

    ``--since REF``: revision files that do not exist in git at REF. Otherwise, with
    ``--database``: revisions not applied to any target yet. Otherwise: all of them.
    """
    graph = subject.scripts.graph
    order = [r.id for r in reversed(graph.ordered)]
    if options.since:
        known = _files_at(options.since, subject.scripts.version_dirs)
        return [r for r in order if Path(graph.revisions[r].path).resolve() not in known]
    mine = [s for s in current if s.target.service == subject.name]
    if options.database and mine:
        applied = graph.ancestors(rev for s in mine for rev in s.current)
        return [r for r in order if r not in applied]
    return order


def _files_at(ref: str, folders: Sequence[Path]) -> set[Path]:
    """Absolute paths of the files under ``folders`` that exist in git at ``ref``."""
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


def lint_unsafe(subject: CheckedService, revisions: Sequence[str]) -> list[Finding]:
    """Unsafe operations (FC5xx) in the SQL each of ``revisions`` renders offline."""
    findings = []
    for rendered in scratch.render_upgrades(subject.scripts, list(revisions)):
        parsed = try_read_revision_file(rendered.path)
        line = parsed.upgrade_line if parsed else None
        accepted = acceptances(parsed.source) if parsed else {}
        where = {"file": rendered.path, "line": line, "revision": rendered.revision}
        if rendered.error:
            findings.append(finding(
                "unparsable-sql", subject.name,
                f"revision {rendered.revision}: upgrade() cannot be rendered offline "
                f"({rendered.error}); its SQL was not checked", **where))
            continue
        for operation in lint_statements(rendered.statements):
            reason = accepted.get(operation.rule)
            findings.append(finding(
                operation.rule, subject.name,
                f"revision {rendered.revision}: {operation.message}",
                statement=operation.statement,
                accepted=reason.reason if reason else None, **where))
    return findings
