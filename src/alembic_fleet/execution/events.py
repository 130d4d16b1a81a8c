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


Event = RunStarted | TargetStarted | TargetFinished
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything (library use, tests)."""
