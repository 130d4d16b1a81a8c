"""collection_paused: the collector is off inside and as it was afterwards, however the
block ends (no database)."""

from __future__ import annotations

import gc

import pytest

from alembic_fleet.gc_pause import collection_paused


@pytest.mark.parametrize("enabled", [True, False])
def test_collection_is_off_inside_and_as_before_after(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(KeyError), collection_paused():
            raise KeyError("boom")
        assert gc.isenabled() is enabled

        @collection_paused()
        def inside() -> bool:
            return gc.isenabled()

        assert inside() is False and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (freezing is for the whole process)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_in_fleets_own_process_what_a_paused_block_made_is_frozen_not_walked() -> None:
    # The collector walked everything a paused block made at the first allocation after
    # it (0.1 s of a 30,000-target status): frozen instead, nothing is left to walk.
    out = _python(
        "import gc\n"
        "from alembic_fleet.gc_pause import collection_paused, freeze_what_pauses_make\n"
        "freeze_what_pauses_make()\n"
        "before = gc.get_freeze_count()\n"
        "walked = []\n"
        "gc.callbacks.append(lambda phase, info: walked.append(info['collected']))\n"
        "with collection_paused():\n"
        "    kept = [[i] for i in range(200_000)]\n"
        "assert gc.isenabled()\n"
        "more = [[i] for i in range(2_000)]\n"
        "print(gc.get_freeze_count() - before >= 200_000, gc.get_count()[0] < 5_000)")
    assert out == "True True"


def test_a_program_importing_fleet_keeps_its_objects_collectable() -> None:
    # Frozen objects are never collected: only fleet's own process may freeze (the console
    # script says so); a program that imports fleet, and its paused blocks, freeze nothing.
    out = _python(
        "import gc\n"
        "import alembic_fleet.cli\n"
        "from alembic_fleet.gc_pause import collection_paused\n"
        "with collection_paused():\n"
        "    kept = [[i] for i in range(1_000)]\n"
        "print(gc.get_freeze_count(), gc.isenabled())")
    assert out == "0 True"
