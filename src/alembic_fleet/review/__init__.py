"""``fleet plan``: what the pending migrations will do, for a reviewer.

* :mod:`.locks`: the table-level lock each SQL statement takes and whether it rewrites or
  scans the table, read from PostgreSQL's own parse tree (pure);
* :mod:`.report`: the plan as plain values, and the pure decisions behind it (grouping
  targets by starting revision, tenant counts, the largest copy of a table, the estimate);
* :mod:`.render`: each pending revision rendered offline (in the service's interpreter
  when it has its own);
* :mod:`.build`: the composition over an open workspace (inventory, rendering, one catalog
  query per database, the ledger).
"""
