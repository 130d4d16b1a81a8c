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
