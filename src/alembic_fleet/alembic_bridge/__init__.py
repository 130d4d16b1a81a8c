"""The only package that talks to Alembic's runtime (ScriptDirectory, EnvironmentContext)."""
