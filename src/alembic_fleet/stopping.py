"""What a second Ctrl-C or SIGTERM does while fleet is stopping.

After the first one the run stops: busy workers are killed, targets whose commit may have
got through are settled from the database, the ledger is told, and the report is printed.
That takes a moment (longer when a ledger table is locked), and a second signal in it used
to cut it all off: a script reading ``--json`` got an error instead of what happened. Now the
second one is noted and the report still comes; a third quits at once. The same holds for
an interrupt while fleet starts: its error is reported whole.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from alembic_fleet.exceptions import Terminated


def answered() -> tuple[int, ...]:
    """The stop signals this process answers: SIGTERM, and SIGINT unless it is ignored (a
    shell without job control starts a background job so: a Ctrl-C at its terminal is meant
    for the job in front, and fleet's own handler must not make it fleet's)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        return (signal.SIGTERM,)
    return (signal.SIGINT, signal.SIGTERM)


def hold_signals() -> None:
    """From the first interrupt on (main thread): the next SIGINT or SIGTERM is noted on
    stderr, the one after is raised (quit at once, without the report)."""
    noted: list[int] = []
    numbers = answered()

    def later(signum: int, _frame: Any) -> None:
        if noted:
            if signal.SIGINT in numbers:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        noted.append(signum)
        sys.stderr.write("stopping: the report follows (once more to quit at once)\n")
        sys.stderr.flush()

    for number in numbers:
        signal.signal(number, later)
