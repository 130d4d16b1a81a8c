"""The pending revisions' SQL, rendered offline as ``--sql`` renders it.

A service with its own interpreter (the ``python`` key, or a ``.venv`` in its folder) has
its revisions imported there, never in fleet's: :func:`render_in_service` runs in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from alembic_fleet import interpreters
from alembic_fleet.alembic_bridge.scratch import RenderedRevision, render_upgrades

if TYPE_CHECKING:
    from alembic_fleet.model.targets import Service
    from alembic_fleet.workspace import Workspace


def render_pending(workspace: Workspace, service: str, revisions: Sequence[str]
                   ) -> list[RenderedRevision]:
    """Each revision's ``upgrade()`` rendered offline, in the order given. A revision that
    reads the database cannot be rendered past that read: ``error`` says why, and its
    ``statements`` are those emitted before it."""
    if not revisions:
        return []
    own = workspace.service(service)
    if own.python is not None:
        return interpreters.call(own, "alembic_fleet.review.render:render_in_service", own,
                                 list(revisions))
    return render_upgrades(workspace.scripts(service), list(revisions))


def render_in_service(service: Service, revisions: list[str]) -> list[RenderedRevision]:
    """:func:`render_pending`, in the service's own interpreter."""
    from alembic_fleet.alembic_bridge.scripts import ServiceScripts

    return render_upgrades(ServiceScripts(replace(service, python=None)), revisions)
