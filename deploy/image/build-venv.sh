#!/bin/sh
# The `fleet` image's virtual environment, built from the source tree in the current
# directory (pyproject.toml, README.md, LICENSE, src/): the Dockerfile's build stage runs
# it, and tests/deploy/test_image_venv.py runs it to check what it makes.
#
#   sh deploy/image/build-venv.sh /opt/venv          # PYTHON=python3.12 to choose
#
# Every module is compiled here, once, into bytecode that is checked against its source's
# content, not its file time (--invalidation-mode checked-hash). The image runs with
# PYTHONDONTWRITEBYTECODE=1, as a non-root user, often on a read-only file system: a module
# without valid bytecode would be compiled again at every start of every command
# (SQLAlchemy, Alembic, psycopg and fleet: 1.2 s of imports instead of 0.4 s), and
# time-stamped bytecode goes stale when a build rewrites file times (SOURCE_DATE_EPOCH).
# Checking the content costs nothing measurable, and a source that a derived image
# replaces is compiled from what it holds now (unchecked bytecode would run the old code).
# pip compiles nothing (--no-compile) and compileall rewrites whatever is there (-f): its
# own check would otherwise keep time-stamped bytecode it finds current.
#
# The venv must not exist yet (a second run into it would keep the first one's fleet: pip
# skips a version it has). The wheel is built in "$venv.wheels", a fixed place, so that two
# builds at one path record the same origin; it is removed at the end, and so is the venv
# when a step fails.
set -eu
venv="${1:?usage: build-venv.sh NEW_VENV_DIRECTORY}"
python="${PYTHON:-python}"
wheels="$venv.wheels"
if [ -e "$venv" ] || [ -e "$wheels" ]; then
    echo "build-venv.sh: $venv or $wheels exists already; give a new directory" >&2
    exit 2
fi
trap 'status=$?; rm -rf "$wheels"; [ "$status" = 0 ] || rm -rf "$venv"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$python" -m pip wheel --no-deps --wheel-dir "$wheels" .
"$python" -m venv --without-pip "$venv"
"$python" -m pip --python "$venv/bin/python" install --no-compile \
    "$(ls "$wheels"/*.whl)[metrics,otel]"
"$venv/bin/python" -m compileall -q -f -j 0 --invalidation-mode checked-hash "$venv"
