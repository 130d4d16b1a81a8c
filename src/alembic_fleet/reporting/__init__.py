"""The only code that prints: tables, plain lines, JSON, progress and errors.

:class:`Reporter` is loaded on first use (PEP 562), so that a module of this package
(:mod:`.streams`) can be imported without Rich and the views: ``fleet --help`` needs none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic_fleet.reporting.console import Reporter

__all__ = ["Reporter"]


def __getattr__(name: str) -> Any:
    if name == "Reporter":
        from alembic_fleet.reporting.console import Reporter

        return Reporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
