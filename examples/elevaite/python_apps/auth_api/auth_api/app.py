"""The auth API's application: it refuses to start unless every tenant's schema is at head.

Run it from anywhere under ``examples/elevaite`` (``fleet.toml`` is found upward from the
working directory, as ``fleet`` finds it)::

    uvicorn auth_api.app:app --app-dir python_apps/auth_api

``DATABASE_URI`` names the database (unset: the embedded PostgreSQL, as for ``fleet``) and
``TENANTS`` the tenants (unset: ``fleet.toml``'s). A schema that is not at head stops the
start-up with a message such as ``auth_toshiba is at a14d2f6b8c35, head is a15f8c0e3d96: run
'fleet migrate auth --tenant toshiba' before starting the service``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from alembic_fleet.startup_check import require_head


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Check the schemas before serving; an exception here aborts the start-up."""
    # A thread: the check is blocking I/O (and may start the embedded server in development).
    app.state.schema_heads = await asyncio.to_thread(
        require_head,
        os.environ.get("DATABASE_URI") or None,
        service="auth",
        tenants=os.environ.get("TENANTS") or None,
    )
    yield


app = FastAPI(title="auth API", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
