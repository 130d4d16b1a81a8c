"""Python's cyclic garbage collector paused while fleet builds data that lives on.

The collector runs whenever enough objects were allocated, and each of its full passes walks
every live object. At 10,000 tenants x 3 services a command builds several hundred thousand
objects that all stay alive until it ends (targets, statuses, the plan, the report) and makes
no cyclic garbage while doing so: the collector then walked the growing heap again and again
for nothing (0.17 s of a 1.6 s ``fleet status``, 0.34 s of a 2.0 s no-op ``fleet migrate``,
measured with ``gc.callbacks``; see docs/performance.md). So the phases that only build such
data run with collection off; anything else (a migration's execution, which opens and drops
connections for hours) runs with it on.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_paused() -> Iterator[None]:
    """Collection off inside, and on again afterwards if it was on (however the block
    ends). Usable as a decorator too."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
