"""``python -m alembic_fleet``: the ``fleet`` command, in whichever interpreter runs it."""

from alembic_fleet.entry import main

main()
