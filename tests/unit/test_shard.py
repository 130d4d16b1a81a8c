"""Shard selection: K shards partition the targets, by tenant, stably."""

from __future__ import annotations

import pytest

from alembic_fleet.exceptions import UsageError
from alembic_fleet.model.shard import Shard, parse_shard, shard_of, take_share
from alembic_fleet.model.targets import Database, Target

DB = Database(url="postgresql://h/db")
TARGETS = [Target(service, f"t{i}", f"{service}_t{i}", DB)
           for i in range(500) for service in ("auth", "workflow")] + [
    Target("ingestion", None, "public", DB)]


@pytest.mark.parametrize("count", [1, 2, 3, 8, 17])
def test_shards_cover_every_target_exactly_once(count: int) -> None:
    shares = [take_share(TARGETS, Shard(i, count)) for i in range(count)]
    flat = [t for share in shares for t in share]
    assert sorted(flat, key=repr) == sorted(TARGETS, key=repr)
    assert len(flat) == len(set(flat))


def test_shares_are_balanced_and_keep_a_tenant_together() -> None:
    shares = [take_share(TARGETS, Shard(i, 8)) for i in range(8)]
    sizes = [len(s) for s in shares]
    assert min(sizes) > 0.6 * len(TARGETS) / 8 and max(sizes) < 1.4 * len(TARGETS) / 8
    for share in shares:
        tenants = {t.tenant for t in share if t.tenant}
        for tenant in tenants:
            assert {t.service for t in share if t.tenant == tenant} == {"auth", "workflow"}


def test_the_hash_is_fixed() -> None:
    """Golden values: the same in every process and release (Python's hash() is salted).
    A change here would move tenants between the shards of a running Indexed Job."""
    tenants = ("default", "toshiba", "iopex", "acme")
    assert [shard_of(Target("auth", t, "x", DB), 8) for t in tenants] == [3, 0, 4, 5]
    assert [shard_of(Target("workflow", t, "y", DB), 8) for t in tenants] == [3, 0, 4, 5]


def test_parse_explicit_and_auto() -> None:
    assert parse_shard("2/5", {}) == Shard(2, 5)
    env = {"JOB_COMPLETION_INDEX": "1", "JOB_COMPLETION_COUNT": "3"}
    assert parse_shard("auto", env) == Shard(1, 3)


@pytest.mark.parametrize("text, env", [
    ("5/5", {}), ("-1/3", {}), ("1/0", {}), ("a/b", {}), ("3", {}), ("auto", {}),
    ("auto", {"JOB_COMPLETION_INDEX": "0"}),
    ("auto", {"JOB_COMPLETION_INDEX": "3", "JOB_COMPLETION_COUNT": "3"}),
])
def test_bad_shards_are_usage_errors(text: str, env: dict[str, str]) -> None:
    with pytest.raises(UsageError) as error:
        parse_shard(text, env)
    assert error.value.hint
