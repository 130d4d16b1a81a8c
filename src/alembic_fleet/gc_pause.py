"""Python's cyclic garbage collector paused while fleet builds data that lives on.

The collector runs whenever enough objects were allocated, and each of its full passes walks
every live object. At 10,000 tenants x 3 services a command builds several hundred thousand
objects that all stay alive until it ends (targets, statuses, the plan, the report) and makes
no cyclic garbage while doing so: the collector then walked the growing heap again and again
for nothing (0.17 s of a 1.6 s ``fleet status``, 0.34 s of a 2.0 s no-op ``fleet migrate``,
measured with ``gc.callbacks``; see docs/performance.md). So the phases that only build such
data run with collection off; anything else (a migration's execution, which opens and drops
connections for hours) runs with it on.

Turning collection back on is not enough: everything made while it was off is still in the
youngest generation, so the first allocation afterwards made the collector walk all of it
once (0.11 s of a 30,000-target ``fleet status``, 0.4 s of collections in a no-op
``fleet migrate``). In fleet's own process (the console script says so through
:func:`freeze_what_pauses_make`) a paused block ends by freezing what it made: it is never
walked again, as the objects of the imports are not.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_freezing = False


def freeze_what_pauses_make() -> None:
    """From now on, what a paused block made is frozen when it ends (see the module's
    docstring). Only for a process that is fleet's own: frozen objects are never
    collected, which a program importing fleet must not be made to live with."""
    global _freezing
    _freezing = True


@contextmanager
def collection_paused() -> Iterator[None]:
    """Collection off inside, and on again afterwards if it was on (however the block
    ends), after freezing what the block made when the process is fleet's own. Usable as
    a decorator too."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _freezing:
            gc.freeze()
        if collecting:
            gc.enable()
