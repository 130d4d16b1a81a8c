"""The kept revision graphs do not pile up: writing an entry drops entries not written for
30 days and the oldest beyond 500 (projects in temporary checkouts leave one each)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from alembic_fleet.alembic_bridge import graph_cache
from alembic_fleet.model.revisions import Revision


def _entry(tmp_path: Path) -> graph_cache.Entry:
    return graph_cache.Entry(tmp_path, (tmp_path / "versions",),
                             (Revision("a1", (), "first", str(tmp_path / "a1.py")),))


def test_old_entries_and_leftovers_go_when_an_entry_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    graphs = tmp_path / "cache" / "graphs"
    graphs.mkdir(parents=True)
    stale = [graphs / f"{i:032x}.json" for i in range(3)] + [graphs / ".graph-x.tmp"]
    recent = graphs / ("f" * 32 + ".json")
    unrelated = graphs / "notes.txt"
    for path in [*stale, recent, unrelated]:
        path.write_text("{}")
    old = time.time() - 40 * 86400
    for path in [*stale, unrelated]:
        os.utime(path, (old, old))
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\n")
    graph_cache.save(ini, None, "digest", _entry(tmp_path))
    left = sorted(p.name for p in graphs.iterdir())
    assert not [p for p in stale if p.exists()]
    assert recent.name in left and unrelated.name in left
    assert len([n for n in left if n.endswith(".json")]) == 2  # the recent one and the new one


def test_the_oldest_beyond_the_limit_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(graph_cache, "KEPT_ENTRIES", 3)
    graphs = tmp_path / "cache" / "graphs"
    graphs.mkdir(parents=True)
    now = time.time()
    for age in range(5):
        path = graphs / f"{age:032x}.json"
        path.write_text("{}")
        os.utime(path, (now - age * 60, now - age * 60))
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\n")
    graph_cache.save(ini, None, "digest", _entry(tmp_path))
    names = sorted(p.name for p in graphs.iterdir())
    assert len(names) == 3
    assert f"{0:032x}.json" in names and f"{1:032x}.json" in names  # the newest two stay
