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
# The venv's directory must not exist yet (a second run into it would keep the first one's
# fleet: pip skips a version it has): it is made here, with "$venv.wheels" next to it, each
# by one mkdir that fails when anything is there already (a directory, a file, a dangling
# link) or the parent is missing, so the script only ever removes what it made itself: both
# on a failure or an interruption, the wheels' folder always. The wheel is built from a copy
# of the tree in that folder (a build/ folder left in the tree by an earlier build would put
# modules deleted since into the wheel), at a fixed place, so that two builds at one path
# record the same origin.
set -eu
venv="${1:?usage: build-venv.sh NEW_VENV_DIRECTORY}"
python="${PYTHON:-python}"
case "$python" in  # the wheel is built in another directory
    /*) ;;
    */*) python="$PWD/$python" ;;
esac
wheels="$venv.wheels"
if ! mkdir -- "$venv" 2>/dev/null; then
    echo "build-venv.sh: cannot make $venv (it exists, or its parent does not):" \
         "give a new directory" >&2
    exit 2
fi
if ! mkdir -- "$wheels" 2>/dev/null; then
    rmdir -- "$venv"
    echo "build-venv.sh: cannot make $wheels (it exists): remove it or give another" \
         "directory" >&2
    exit 2
fi
# The cleaning itself is not interrupted (a second Ctrl-C stopped it halfway, and the half
# it left was then refused as existing).
trap 'status=$?; trap "" HUP INT QUIT TERM; rm -rf -- "$wheels"
      [ "$status" = 0 ] || rm -rf -- "$venv"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM
mkdir -- "$wheels/tree"
cp -R pyproject.toml README.md LICENSE src "$wheels/tree/"
(cd "$wheels/tree" && "$python" -m pip wheel --no-deps --wheel-dir ../dist .)
"$python" -m venv --without-pip "$venv"
"$python" -m pip --python "$venv/bin/python" install --no-compile \
    "$(ls "$wheels"/dist/*.whl)[metrics,otel]"
"$venv/bin/python" -m compileall -q -f -j 0 --invalidation-mode checked-hash "$venv"
