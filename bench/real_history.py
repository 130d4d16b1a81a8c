"""Generate a real-style Alembic history: one schema-per-tenant service, 100+ revisions.

A straight line of revisions (no branches, no merges) of the kinds long-lived services
accumulate: tables with foreign keys and identity keys, indexes (composite, partial, unique),
enum types, check and unique constraints, data migrations (``op.execute`` updates,
``op.bulk_insert`` seeds), column alters (types widened, defaults, nullability, renames),
dropped columns, a view; and, every ~17 revisions, one that needs a live connection: an
inspector-conditional column, index or table, a seed guarded by ``SELECT count(*)``, a type
created only when ``pg_type`` lacks it, a data migration that reads rows back through
``op.get_bind()``. fleet replays the static revisions and runs those online at their place
in the same transaction (a mixed plan).

Deterministic: the same arguments write the same files. Used by bench/mixed.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from fleet_platform import (  # the same env.py files, ini and revision files
    HELPER_ENV,
    INI,
    LEGACY_ENV,
    revision_source,
)

SERVICE = "app"
SCHEMA = "app_{tenant}"

ONLINE_EVERY = 17
"""One revision in this many needs a live connection (the 17th, 34th, ...)."""

WORDS = ("account", "invoice", "payment", "shipment", "product", "customer", "order",
         "warehouse", "supplier", "contract", "ticket", "project", "document", "device",
         "session", "region", "price", "discount", "review", "message")


@dataclass
class _State:
    """What the history has created so far, so later revisions refer to real objects."""

    rng: random.Random
    tables: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)
    """Per table: columns added after its creation (text or integer), candidates for
    alters, indexes, renames and drops."""
    counter: int = 0

    def table(self) -> str:
        return self.rng.choice(self.tables)

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"


def _create_table(s: _State) -> tuple[str, str, str]:
    name = WORDS[len(s.tables) % len(WORDS)] + ("" if len(s.tables) < len(WORDS)
                                               else f"_{len(s.tables)}")
    parent = s.tables[-1] if s.tables else None
    fk = (f'\n    sa.Column("{parent}_id", sa.BigInteger, sa.ForeignKey("{parent}.id", '
          f'ondelete="CASCADE"), nullable=False),' if parent else "")
    body = f"""
op.create_table(
    "{name}",
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),{fk}
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("status", sa.String(20), server_default="new", nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
              nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)"""
    if parent:
        body += f'\nop.create_index("ix_{name}_{parent}_id", "{name}", ["{parent}_id"])'
    s.tables.append(name)
    s.extra[name] = []
    return f"create {name}", body, f'op.drop_table("{name}")'


def _add_column(s: _State) -> tuple[str, str, str]:
    table = s.table()
    column = s.fresh("note" if s.rng.random() < 0.5 else "amount")
    kind = ('sa.Text()' if column.startswith("note")
            else 'sa.Integer(), server_default="0", nullable=False')
    s.extra[table].append(column)
    return (f"add {table}.{column}",
            f'op.add_column("{table}", sa.Column("{column}", {kind}))',
            f'op.drop_column("{table}", "{column}")')


def _index(s: _State) -> tuple[str, str, str]:
    table = s.table()
    name = s.fresh(f"ix_{table}")
    choice = s.rng.randrange(3)
    if choice == 0:
        body = f'op.create_index("{name}", "{table}", ["status", "created_at"])'
    elif choice == 1:
        body = (f'op.create_index("{name}", "{table}", ["created_at"],\n'
                f'                postgresql_where=sa.text("status <> \'closed\'"))')
    else:
        body = f'op.create_index("{name}", "{table}", ["name", "id"], unique=True)'
    return f"index {table}", body, f'op.drop_index("{name}", table_name="{table}")'


def _enum(s: _State) -> tuple[str, str, str]:
    table = s.table()
    kind = s.fresh("kind")
    body = f"""
op.execute("CREATE TYPE {kind} AS ENUM ('basic', 'plus', 'pro')")
op.add_column("{table}", sa.Column("{kind}",
    postgresql.ENUM("basic", "plus", "pro", name="{kind}", create_type=False),
    server_default="basic", nullable=False))"""
    return (f"{kind} enum on {table}", body,
            f'op.drop_column("{table}", "{kind}")\n    op.execute("DROP TYPE {kind}")')


def _data_update(s: _State) -> tuple[str, str, str]:
    table = s.table()
    body = (f'op.execute("UPDATE {table} SET status = \'active\' WHERE status = \'new\' '
            f'AND created_at < now() - interval \'30 days\'")\n'
            f'op.execute("UPDATE {table} SET name = btrim(name) WHERE name <> btrim(name)")')
    return f"backfill {table}", body, "pass"


def _lookup(s: _State) -> tuple[str, str, str]:
    name = s.fresh("lookup")
    rows = ", ".join(f'{{"code": "{w[:3]}{i}", "label": "{w}", "rank": {i}}}'
                     for i, w in enumerate(s.rng.sample(WORDS, 8)))
    body = f"""
lookup = op.create_table(
    "{name}",
    sa.Column("code", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(80), nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
)
op.bulk_insert(lookup, [{rows}])"""
    return f"{name} with seed rows", body, f'op.drop_table("{name}")'


def _alter(s: _State) -> tuple[str, str, str]:
    table = s.table()
    choice = s.rng.randrange(4)
    if choice == 0:
        return (f"widen {table}.name",
                f'op.alter_column("{table}", "name", type_=sa.String(400), '
                'existing_type=sa.String(120))', "pass")
    if choice == 1:
        return (f"{table}.updated_at default",
                f'op.alter_column("{table}", "updated_at", '
                'server_default=sa.text("now()"))', "pass")
    texts = [c for c in s.extra[table] if c.startswith("note")]
    if choice == 2 and texts:
        old = texts[0]
        new = s.fresh("remark")
        s.extra[table][s.extra[table].index(old)] = new
        return (f"rename {table}.{old}",
                f'op.alter_column("{table}", "{old}", new_column_name="{new}")',
                f'op.alter_column("{table}", "{new}", new_column_name="{old}")')
    return (f"{table}.status not null",
            f'op.execute("UPDATE {table} SET status = \'new\' WHERE status IS NULL")\n'
            f'op.alter_column("{table}", "status", existing_type=sa.String(20), '
            'nullable=False)', "pass")


def _constraint(s: _State) -> tuple[str, str, str]:
    table = s.table()
    amounts = [c for c in s.extra[table] if c.startswith("amount")]
    if amounts:
        name = s.fresh(f"ck_{table}")
        return (f"check {table}.{amounts[-1]}",
                f'op.create_check_constraint("{name}", "{table}", "{amounts[-1]} >= 0")',
                f'op.drop_constraint("{name}", "{table}")')
    name = s.fresh(f"uq_{table}")
    return (f"unique {table}",
            f'op.create_unique_constraint("{name}", "{table}", ["name", "created_at"])',
            f'op.drop_constraint("{name}", "{table}")')


def _foreign_key(s: _State) -> tuple[str, str, str]:
    table, other = s.rng.sample(s.tables, 2)
    column = s.fresh(f"{other}_ref")
    name = f"fk_{table}_{column}"
    body = (f'op.add_column("{table}", sa.Column("{column}", sa.BigInteger))\n'
            f'op.create_foreign_key("{name}", "{table}", "{other}", ["{column}"], ["id"],\n'
            '                      ondelete="SET NULL")\n'
            f'op.create_index("ix_{table}_{column}", "{table}", ["{column}"])')
    return (f"link {table} to {other}", body,
            f'op.drop_constraint("{name}", "{table}")\n    op.drop_column("{table}", '
            f'"{column}")')


def _drop(s: _State) -> tuple[str, str, str]:
    table = next((t for t in s.tables if s.extra[t]), None)
    if table is None:
        return _add_column(s)
    column = s.extra[table].pop()
    return (f"drop {table}.{column}", f'op.drop_column("{table}", "{column}")', "pass")


def _view(s: _State) -> tuple[str, str, str]:
    table = s.table()
    name = s.fresh(f"{table}_open")
    return (f"view {name}",
            f'op.execute("CREATE VIEW {name} AS SELECT id, status, created_at FROM {table} '
            f'WHERE status <> \'closed\'")', f'op.execute("DROP VIEW {name}")')


STATIC = (_add_column, _index, _data_update, _alter, _create_table, _constraint, _enum,
          _foreign_key, _lookup, _add_column, _alter, _drop, _index, _view, _data_update)


def _online(s: _State, number: int) -> tuple[str, str, str]:
    """A revision that reads the database while upgrading (never replayed)."""
    table = s.table()
    kind = number % 6
    if kind == 0:  # inspector-conditional column
        column = s.fresh("external_ref")
        s.extra[table].append(column)
        body = f"""
inspector = sa.inspect(op.get_bind())
columns = {{c["name"] for c in inspector.get_columns("{table}")}}
if "{column}" not in columns:
    op.add_column("{table}", sa.Column("{column}", sa.String(64)))"""
        return f"{table}.{column} unless present", body, "pass"
    if kind == 1:  # data migration reading rows back
        lookup = next((t for t in reversed(s.tables) if t.startswith("lookup")), None)
        if lookup is None:
            return _online(s, 0)
        body = f"""
bind = op.get_bind()
rows = bind.execute(sa.text("SELECT code, label FROM {lookup} ORDER BY code")).fetchall()
for code, label in rows:
    bind.execute(sa.text("UPDATE {lookup} SET label = :label WHERE code = :code"),
                 {{"label": label.title(), "code": code}})"""
        return f"title-case {lookup} labels", body, "pass"
    if kind == 2:  # inspector-conditional index
        name = s.fresh(f"ix_{table}_updated")
        body = f"""
inspector = sa.inspect(op.get_bind())
if "{name}" not in {{i["name"] for i in inspector.get_indexes("{table}")}}:
    op.create_index("{name}", "{table}", ["updated_at"])"""
        return f"index {table}.updated_at unless present", body, "pass"
    if kind == 3:  # seed guarded by a count
        name = s.fresh("setting")
        body = f"""
settings = op.create_table(
    "{name}",
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
if op.get_bind().execute(sa.text("SELECT count(*) FROM {name}")).scalar() == 0:
    op.bulk_insert(settings, [{{"key": "currency", "value": "EUR"}},
                              {{"key": "locale", "value": "en"}},
                              {{"key": "retention_days", "value": "365"}}])"""
        return f"{name} with defaults when empty", body, f'op.drop_table("{name}")'
    if kind == 4:  # type created only when pg_type lacks it
        kind_name = s.fresh("priority")
        body = f"""
bind = op.get_bind()
exists = bind.execute(sa.text(
    "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "WHERE t.typname = '{kind_name}' AND n.nspname = current_schema()")).scalar()
if not exists:
    op.execute("CREATE TYPE {kind_name} AS ENUM ('low', 'normal', 'high')")
op.add_column("{table}", sa.Column("{kind_name}",
    postgresql.ENUM("low", "normal", "high", name="{kind_name}", create_type=False),
    server_default="normal", nullable=False))"""
        return f"{kind_name} on {table}", body, "pass"
    name = s.fresh(f"{table}_archive")  # inspector-conditional table
    body = f"""
if not sa.inspect(op.get_bind()).has_table("{name}"):
    op.create_table(
        "{name}",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=sa.text("now()")),
    )"""
    return f"{name} unless present", body, f'op.drop_table("{name}", if_exists=True)'


def revisions(count: int, seed: int = 13) -> list[tuple[str, str, str, bool]]:
    """(message, upgrade body, downgrade body, online) for ``count`` revisions."""
    state = _State(random.Random(seed))
    out = []
    for number in range(1, count + 1):
        if number <= 3:
            message, up, down = _create_table(state)
            online = False
        elif number % ONLINE_EVERY == 0:
            message, up, down = _online(state, number // ONLINE_EVERY)
            online = True
        else:
            make = STATIC[number % len(STATIC)]
            message, up, down = make(state)
            online = False
        out.append((message, up, down, online))
    return out


def build(root: Path, tenants: int, count: int = 110, *, legacy: bool = False) -> dict:
    """Write the service under ``root`` and a fleet.toml with ``tenants`` tenants; return
    counts of the history (revisions, online ones)."""
    folder = root / SERVICE
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (folder / "alembic.ini").write_text(INI)
    (folder / "migrations" / "env.py").write_text(LEGACY_ENV if legacy else HELPER_ENV)
    ids = random.Random(f"ids{count}")
    previous = None
    online = 0
    for number, (message, up, down, needs_bind) in enumerate(revisions(count), start=1):
        online += needs_bind
        revision = f"{ids.getrandbits(48):012x}"
        body = revision_source(message, revision, previous, up, down)
        slug = "".join(c if c.isalnum() else "_" for c in message)[:40]
        (versions / f"{number:03d}_{revision}_{slug}.py").write_text(body)
        previous = revision
    names = ", ".join(f'"t{i:05d}"' for i in range(tenants))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{names}]\n\n'
        f'[services.{SERVICE}]\npath = "{SERVICE}"\nschema = "{SCHEMA}"\n')
    return {"revisions": count, "online": online, "static": count - online}
