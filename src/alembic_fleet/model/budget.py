"""When a run stops starting targets: an error budget and a time budget. Pure decisions.

A production rollout over thousands of tenants must not keep going when something is
clearly wrong (``--max-failures``), and must not be killed by its Job's
``activeDeadlineSeconds`` in the middle of a target (``--deadline``): it stops *starting*
targets, lets the ones in flight finish, reports the rest as ``pending``, and a rerun
resumes. The run decides with these values; the executor asks them before each start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_TARGET_SECONDS = 10.0
"""Expected seconds of a target when neither the ledger nor this run has measured one."""
SAFETY = 1.25
"""A target starts only when the time left is at least its expected time times this."""

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``2.5h`` in seconds; ValueError otherwise."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.fullmatch(value)
        if not match or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration (e.g. 900, 15m, 1h30m)") from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_max_failures(text: str) -> tuple[int | None, float | None]:
    """``N`` (targets) or ``P%`` (of the targets to migrate): ``(count, percent)``."""
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return None, percent
        count = int(value)
        if count < 0:
            raise ValueError
        return count, None
    except ValueError:
        raise ValueError(f"{text!r} is not a number of targets or a percentage "
                         "(e.g. 10 or 5%)") from None


@dataclass
class Budget:
    """The limits of one run. ``deadline`` is a ``time.monotonic()`` instant."""

    max_failures: int | None = None
    max_failure_percent: float | None = None
    deadline: float | None = None
    expected: dict[str, float] = field(default_factory=dict)
    """Per service: a target's usual seconds, from the ledger's recent runs."""
    _seen: dict[str, list[float]] = field(default_factory=dict)

    @property
    def limits_failures(self) -> bool:
        return self.max_failures is not None or self.max_failure_percent is not None

    def failure_limit(self, runnable: int) -> int | None:
        """How many failed targets the run tolerates (None: no limit)."""
        limits = []
        if self.max_failures is not None:
            limits.append(self.max_failures)
        if self.max_failure_percent is not None:
            limits.append(int(runnable * self.max_failure_percent / 100))
        return min(limits) if limits else None

    def failures_exceeded(self, failed: int, runnable: int) -> bool:
        limit = self.failure_limit(runnable)
        return limit is not None and failed > limit

    def observe(self, service: str, seconds: float) -> None:
        """A target of ``service`` took ``seconds`` in this run."""
        self._seen.setdefault(service, []).append(seconds)

    def expected_seconds(self, service: str) -> float:
        """What the next target of ``service`` is expected to take: this run's median
        once three have finished, else the ledger's, else this run's others', else
        :data:`DEFAULT_TARGET_SECONDS`."""
        import statistics  # only with a deadline: it imports decimal and fractions

        seen = self._seen.get(service, [])
        if len(seen) >= 3:
            return statistics.median(seen)
        if service in self.expected:
            return self.expected[service]
        if seen:
            return statistics.median(seen)
        everything = [s for values in self._seen.values() for s in values]
        return statistics.median(everything) if everything else DEFAULT_TARGET_SECONDS

    def time_for(self, service: str, now: float) -> bool:
        """Whether a target of ``service`` may start at ``now`` and finish in time."""
        if self.deadline is None:
            return True
        return self.deadline - now >= self.expected_seconds(service) * SAFETY
