"""Sharding targets over the pods of a Kubernetes Indexed Job (or any K processes).

Each target belongs to exactly one of K shards, by a stable hash of its tenant: K processes
started with ``--shard 0/K`` ... ``--shard K-1/K`` together cover every target exactly once,
every service of one tenant lands in the same shard (so ``depends_on`` order still holds),
and a retried index redoes only its own share. The hash is BLAKE2b, not Python's ``hash()``,
which is salted per process. Single-schema targets hash their service name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from alembic_fleet.exceptions import UsageError
from alembic_fleet.model.targets import Target

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
COUNT_VARIABLE = "JOB_COMPLETION_COUNT"


@dataclass(frozen=True)
class Shard:
    """This process's share: shard ``index`` of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, target: Target) -> bool:
        return shard_of(target, self.count) == self.index


def shard_of(target: Target, count: int) -> int:
    """The shard (0 ... count-1) that ``target`` belongs to."""
    key = f"tenant:{target.tenant}" if target.tenant is not None else f"service:{target.service}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """``i/K`` or ``auto`` (``JOB_COMPLETION_INDEX`` and ``JOB_COMPLETION_COUNT``)."""
    if text == "auto":
        index, count = environ.get(INDEX_VARIABLE), environ.get(COUNT_VARIABLE)
        if index is None or count is None:
            raise UsageError(
                f"--shard auto needs {INDEX_VARIABLE} and {COUNT_VARIABLE} in the environment",
                hint="a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX; set "
                "JOB_COMPLETION_COUNT to the Job's completions (the chart does), or pass "
                "--shard INDEX/COUNT")
        where = f"{INDEX_VARIABLE}={index}, {COUNT_VARIABLE}={count}"
    else:
        index, _, count = text.partition("/")
        where = f"--shard {text}"
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise UsageError(f"invalid shard: {where}",
                         hint="use --shard INDEX/COUNT, e.g. --shard 0/3, or --shard auto"
                         ) from None
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        raise UsageError(f"invalid shard: {where}",
                         hint="INDEX runs from 0 to COUNT-1, e.g. 0/3, 1/3 and 2/3")
    return shard


def take_share(targets: Sequence[Target], shard: Shard | None) -> list[Target]:
    """The targets of ``shard`` (all of them without one)."""
    if shard is None or shard.count == 1:
        return list(targets)
    return [t for t in targets if shard.owns(t)]
