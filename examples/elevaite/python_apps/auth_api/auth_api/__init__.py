"""Authentication API: organizations, users, roles, API keys and sessions."""
