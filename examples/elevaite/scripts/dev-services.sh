#!/bin/sh
# Start the platform's services for development. Run through 'fleet run --', which has
# already started the database, migrated what was pending, and set DATABASE_URI and
# INGESTION_DATABASE_URL for us.
set -eu
cd "$(dirname "$0")/.."
# Say where, never the URL itself: it may hold a password.
database=${DATABASE_URI##*/}
echo "auth_api: DATABASE_URI is set (database ${database%%\?*})"
if command -v uvicorn >/dev/null 2>&1; then
  cd python_apps/auth_api
  exec uvicorn auth_api.app:app --port "${AUTH_API_PORT:-8004}"
fi
echo "uvicorn is not installed: 'pip install fastapi uvicorn' to start auth_api here"
