from alembic_fleet.env import run_migrations
from workflow_engine.models import Base

run_migrations(target_metadata=Base.metadata)
