from alembic_fleet.env import run_migrations
from ingestion_service.models import Base

run_migrations(target_metadata=Base.metadata)
