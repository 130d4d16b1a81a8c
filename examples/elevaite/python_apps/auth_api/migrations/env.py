from alembic_fleet.env import run_migrations
from auth_api.models import Base

run_migrations(target_metadata=Base.metadata)
