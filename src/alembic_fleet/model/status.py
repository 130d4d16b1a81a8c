"""Target states, plans and results: the pure decisions behind status and migrate."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alembic_fleet.model.revisions import RevisionGraph
from alembic_fleet.model.targets import Target


class TargetState(StrEnum):
    """Where a target stands against the scripts (the contract's ``state`` values)."""

    AT_HEAD = "at_head"
    BEHIND = "behind"
    MISSING = "missing"
    AHEAD = "ahead"
    FAILED = "failed"
    ORPHAN = "orphan"
    """A schema a service's template matches, whose tenant is not configured (not a target)."""
    UNREACHABLE = "unreachable"
    """Its database could not be reached: where it stands is unknown."""


class Outcome(StrEnum):
    """What a migrate run did to one target."""

    MIGRATED = "migrated"
    SKIPPED = "skipped"
    FAILED = "failed"
    PENDING = "pending"
    """Not started because the run stopped early (a budget, a failed canary): a rerun
    resumes with it."""


@dataclass(frozen=True)
class TargetStatus:
    """The current revisions of a target next to the wanted ones."""

    target: Target
    current: tuple[str, ...]
    head: tuple[str, ...]
    pending: int
    state: TargetState
    unknown: tuple[str, ...] = ()
    """Revisions of ``current`` the scripts do not know (what makes such a target ahead)."""
    overlapping: tuple[str, ...] = ()
    """Revisions of ``current`` that come before another of its revisions: a version table
    Alembic refuses ("overlaps with other requested revisions"), which makes it failed."""


def classify(
    target: Target, current: tuple[str, ...] | None, graph: RevisionGraph,
    destination: tuple[str, ...] | None = None,
) -> TargetStatus:
    """Decide a target's state. ``current`` is None when the schema or version table is absent.

    ``destination`` defaults to the graph's heads (``--to`` passes another revision).
    """
    wanted = destination if destination is not None else graph.heads
    if current is None:
        return TargetStatus(target, (), wanted, graph.pending((), wanted), TargetState.MISSING)
    unknown, pending, past = graph.standing(tuple(current), tuple(wanted))
    if unknown:
        return TargetStatus(target, current, wanted, 0, TargetState.AHEAD, unknown)
    if len(current) > 1:
        below = graph.overlapping(tuple(current))
        if below:
            return TargetStatus(target, current, wanted, 0, TargetState.FAILED,
                                overlapping=below)
    if pending == 0 and not past:
        state = TargetState.AT_HEAD
    elif pending == 0:
        state = TargetState.AHEAD
    else:
        state = TargetState.BEHIND
    return TargetStatus(target, current, wanted, pending, state)


@dataclass(frozen=True)
class Step:
    """One target's entry in a migrate plan: upgrade it, or leave it alone and say why."""

    status: TargetStatus
    upgrade: bool
    reason: str = ""

    @property
    def target(self) -> Target:
        return self.status.target


def overlap_error(status: TargetStatus) -> str:
    """Why a target whose version table holds a revision and one before it is failed."""
    later = [rev for rev in status.current if rev not in status.overlapping]
    return (f"its version table holds {', '.join(status.current)}: "
            f"{', '.join(status.overlapping)} comes before {', '.join(later)}, a table "
            "Alembic refuses (\"overlaps with other requested revisions\")")


def overlap_hint(status: TargetStatus) -> str:
    """What to do about it: keep the row the schema matches."""
    rows = ", ".join(f"'{rev}'" for rev in status.overlapping)
    return (f"compare the schema {status.target.schema} with its revisions, then delete the "
            f"row it does not match, e.g. DELETE FROM <its version table> WHERE version_num "
            f"IN ({rows}), and run again")


def gave_up(attempts: int) -> str:
    """What a target's error says after its retries of a transient failure ran out."""
    return f" (gave up after {attempts} attempts)"


def plan_step(status: TargetStatus) -> Step:
    """Upgrade a target only when revisions are pending; never downgrade in ``migrate``."""
    if status.state in (TargetState.BEHIND, TargetState.MISSING, TargetState.FAILED) and (
            status.pending > 0):
        return Step(status, True, f"{status.pending} revision(s) pending")
    if status.overlapping:
        return Step(status, False, overlap_error(status))
    if status.unknown:
        return Step(status, False, f"its version table holds {', '.join(status.unknown)}, "
                    "which these scripts do not know (a newer release's or another branch's "
                    "revision): deploy the scripts that have it")
    if status.state is TargetState.AHEAD:
        return Step(status, False, "already past the wanted revision (use 'fleet downgrade')")
    if status.state is TargetState.UNREACHABLE:
        return Step(status, False, "its database could not be reached")
    if status.state is TargetState.MISSING:
        return Step(status, False, "nothing to apply")
    return Step(status, False, "already at the wanted revision")


@dataclass(frozen=True)
class RevisionTiming:
    """One revision applied to a target: when it began (seconds since the epoch, the
    worker's clock) and how long it took (the statements and the version row)."""

    revision: str
    started: float
    seconds: float


@dataclass
class TargetResult:
    """What happened to one target in a run."""

    target: Target
    outcome: Outcome
    from_revs: tuple[str, ...]
    to_revs: tuple[str, ...]
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    note: str | None = None
    """Why a target was skipped, or what else the user should know."""
    sql: str | None = None
    attempts: int = 0
    """How many times it was tried (more than 1 after transient failures)."""
    database_down: bool = False
    """It failed because its database could not be reached (after the retries)."""
    retry_after: float | None = None
    """Set on a target that hit a lock timeout and should be tried again after the others,
    this many seconds from now at the earliest (it is not finished)."""
    via: str | None = None
    """How a migrated target ran: ``replay`` (rendered SQL), ``online`` (Alembic),
    ``mixed`` (rendered stretches and online revisions, in one transaction) or
    ``subprocess`` (a legacy env.py through plain ``alembic``)."""
    lock_wait: float = 0.0
    """Seconds spent waiting for the target's advisory lock (another runner held it), over
    every attempt."""
    retried: tuple[str, ...] = ()
    """Why each retried attempt failed (``lock timeout``, ``connection lost``, ...)."""
    revisions: tuple[RevisionTiming, ...] = ()
    """The revisions a migrated target applied, timed (when the ledger's listener saw them:
    empty with ``ledger = false`` and for a legacy ``alembic`` subprocess)."""


def state_after(result: TargetResult, before: TargetStatus) -> tuple[TargetState, int]:
    """A target's state and pending count once ``result`` happened to it."""
    reached = tuple(sorted(result.to_revs)) == tuple(sorted(before.head))
    if before.state is TargetState.UNREACHABLE:
        return TargetState.UNREACHABLE, before.pending
    if result.outcome is Outcome.FAILED:
        return TargetState.FAILED, before.pending
    if result.outcome is Outcome.MIGRATED:
        return (TargetState.AT_HEAD, 0) if reached else (TargetState.BEHIND, before.pending)
    if tuple(sorted(result.to_revs)) != tuple(sorted(before.current)):
        # Skipped because someone else moved it meanwhile: say where it is now.
        if reached:
            return TargetState.AT_HEAD, 0
        if not result.to_revs:
            return TargetState.MISSING, before.pending
    return before.state, before.pending


def reached(graph: RevisionGraph, status: TargetStatus, wanted: tuple[str, ...]) -> bool:
    """Whether a target holds ``wanted`` or a descendant of it, every revision it holds
    known to the scripts: the "at least" test of an application gate."""
    if status.state in (TargetState.MISSING, TargetState.UNREACHABLE):
        return False
    if not all(graph.knows(revision) for revision in status.current):
        return False
    return graph.pending(status.current, wanted) == 0
