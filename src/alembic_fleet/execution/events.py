"""Events an executor emits while it runs; the reporting layer turns them into progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alembic_fleet.model.status import TargetResult
from alembic_fleet.model.targets import Target


@dataclass(frozen=True)
class RunStarted:
    total: int
    to_migrate: int


@dataclass(frozen=True)
class TargetStarted:
    target: Target


@dataclass(frozen=True)
class TargetFinished:
    result: TargetResult


@dataclass(frozen=True)
class TargetDeferred:
    """A target hit a lock timeout and goes to the back of the queue; it starts again
    after the others (``result`` holds the attempt's error and ``retry_after``)."""

    result: TargetResult


@dataclass(frozen=True)
class RunStopped:
    """A budget or the canary wave stopped the run: no new target starts. ``reason`` is
    ``deadline``, ``max_failures`` or ``canary``."""

    reason: str
    detail: str


Event = RunStarted | TargetStarted | TargetFinished | TargetDeferred | RunStopped
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything (library use, tests)."""
