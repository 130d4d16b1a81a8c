"""The helper a service's ``env.py`` calls; its whole body can be::

    from alembic_fleet.env import run_migrations
    from myservice.models import Base
    run_migrations(target_metadata=Base.metadata)

See :func:`alembic_fleet.alembic_bridge.env_helper.run_migrations`.
"""

from alembic_fleet.alembic_bridge.env_helper import run_migrations

__all__ = ["run_migrations"]
