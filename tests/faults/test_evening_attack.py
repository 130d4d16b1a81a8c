"""Attacks on the evening's changes: fleet's start-up without garbage collection, then frozen
(``alembic_fleet.cli``).

Each test runs a fresh interpreter, as a library user or the console command would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_importing_the_cli_does_not_freeze_a_library_users_objects() -> None:
    """A program that imports ``alembic_fleet.cli`` (to call ``main([...])``) keeps its own
    objects collectable: a cycle it held while importing and dropped afterwards is
    collected, and its finalizer runs (a temporary file deleted, a connection closed)."""
    result = _python("""
        import gc, weakref
        import alembic_fleet  # the package itself is not what is attacked

        class Node:
            pass

        finalized = []
        held = Node()
        held.me = held
        weakref.finalize(held, finalized.append, "held")
        import alembic_fleet.cli
        del held
        gc.collect()
        print(finalized, gc.get_freeze_count())
    """)
    assert result.stdout.split(None, 1)[0] == "['held']", result.stdout


def test_a_failed_import_of_the_cli_leaves_garbage_collection_on() -> None:
    """``try: import alembic_fleet.cli except ImportError`` (a broken or partial install, an
    optional use) must not leave the caller's process without garbage collection."""
    result = _python("""
        import gc, sys
        sys.modules["click"] = None  # click missing: the import fails half-way
        try:
            import alembic_fleet.cli
        except ImportError:
            pass
        print(gc.isenabled())
    """)
    assert result.stdout.strip() == "True"


def test_the_fleet_command_still_works_and_collects_after_start_up() -> None:
    """``python -m alembic_fleet --help`` runs; in the command's process the collector is on
    after start-up."""
    result = subprocess.run([sys.executable, "-m", "alembic_fleet", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Usage" in result.stdout
    probe = _python("""
        import gc
        import alembic_fleet.cli
        print(gc.isenabled())
    """)
    assert probe.stdout.strip() == "True"
