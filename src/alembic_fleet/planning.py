"""From the inventory to a plan: which targets to migrate, towards what, in which order.

Pure decisions over plain data, apart from reading the scripts' graphs through the
workspace: a target is upgraded only when revisions are pending (``migrate`` never
downgrades), tenants start in priority order, services in ``depends_on`` order, and a
target waits for the targets of the services it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from alembic_fleet.exceptions import UsageError
from alembic_fleet.inventory import Inventory, read_inventory
from alembic_fleet.model.plan import Plan
from alembic_fleet.model.schedule import dependencies, execution_order
from alembic_fleet.model.shard import Shard, take_share
from alembic_fleet.model.status import plan_step
from alembic_fleet.model.targets import Target
from alembic_fleet.schema_owners import refuse_shared_schemas
from alembic_fleet.workspace import Workspace


def destinations(workspace: Workspace, targets: Sequence[Target], to: str | None
                 ) -> dict[str, tuple[str, ...]]:
    """Per service, the revisions ``migrate`` brings its targets to (``--to`` or heads)."""
    names = list(dict.fromkeys(t.service for t in targets))
    if to is None or to in ("head", "heads"):
        return {name: workspace.graph(name).heads for name in names}
    if not to.strip():
        raise UsageError("--to needs a revision", hint="e.g. 'fleet migrate auth --to 1a2b3c'")
    if len(names) != 1:
        raise UsageError("--to REV needs exactly one SERVICE",
                         hint="e.g. 'fleet migrate auth --to 1a2b3c'")
    return {names[0]: workspace.scripts(names[0]).resolve(to)}


def plan_from(workspace: Workspace, inventory: Inventory,
              wanted: Mapping[str, tuple[str, ...]]) -> Plan:
    """The plan for an inventory read against ``wanted`` destinations."""
    steps = tuple(plan_step(s) for s in inventory.statuses)
    running = [s for s in steps if s.target.database.key not in inventory.unreachable]
    services = [workspace.service(n) for n in dict.fromkeys(s.target.service for s in running)]
    config = workspace.config
    index_of = {s.target: i for i, s in enumerate(steps)}
    local_order = execution_order(running, services, config.tenants, config.priority)
    local_waits = dependencies(running, config.services.values())
    position = [index_of[s.target] for s in running]
    order = tuple(position[i] for i in local_order)
    waits = {position[i]: frozenset(position[w] for w in ws) for i, ws in local_waits.items()}
    return Plan(steps, order, waits, dict(wanted), dict(inventory.unreachable),
                inventory.mirrored)


def make_plan(workspace: Workspace, services: Sequence[str] = (), tenants: Sequence[str] = (),
              to: str | None = None, shard: Shard | None = None) -> Plan:
    """What ``migrate`` would do for the selected targets (of one shard, with ``shard``)."""
    targets = take_share(workspace.select(services, tenants), shard)
    refuse_shared_schemas(workspace, targets)
    wanted = destinations(workspace, targets, to)
    return plan_from(workspace, read_inventory(workspace, targets, wanted), wanted)
