"""Benchmark new tenants copied from a reference against new tenants migrated from empty.

    DATABASE_URI=postgresql://postgres@127.0.0.1:5432/postgres python bench/provision.py
    python bench/provision.py --revisions 120 --tenants 100 --singles 7   # embedded server

It generates one schema-per-tenant service with a real-style history (``--revisions``,
default 120: tables with identity keys and foreign keys, added, altered, renamed and dropped
columns, indexes, unique and check constraints, enums and added enum values, seeded lookup
rows and data migrations, comments, a view, and a few revisions that run online because
they inspect the database). Then, for each of ``provision = "reference"`` and ``"migrate"``,
on a fresh database holding one tenant migrated beforehand (so the ledger exists), through
the installed ``fleet``:

* ``fleet tenants add`` of ``--tenants`` new tenants at once (the reference's build, two
  migrations and pg_dump, included), then ``--repeat`` times (default 3) of ``--tenants``
  more with the reference in place: min and median;
* ``fleet tenants add`` of one new tenant, ``--singles`` times: min and median, start-up
  included (with ``--ledger-tenants N``, after the ledger was given the checksum rows that
  N more tenants leave, as a large fleet's ledger holds: 1.2 million at 10,000 x 120);

and, as the start-up floor, ``fleet --version`` and ``fleet status``. A ``CHECKPOINT``
precedes each timed step. It prints the times and the ratios reference / migrate measured
in the same run (targets: at most 0.3x for 100 tenants; a single tenant in under 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, child_env, open_server

HEADER = """\
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}

def downgrade():
    pass
"""


def _history(count: int) -> list[str]:
    """``count`` revision bodies, cycling through what real services accumulate: each cycle
    of twelve creates an entity table, then changes it (and the one before it)."""
    bodies: list[str] = []
    entities: list[str] = []
    step = 0
    while len(bodies) < count:
        kind = step % 12
        step += 1
        cycle = step // 12
        last = entities[-1] if entities else ""
        before = entities[-2] if len(entities) > 1 else last
        if kind == 0:
            name = f"entity_{len(entities):02d}"
            fk = (f'\n    sa.Column("{last}_id", sa.BigInteger, '
                  f'sa.ForeignKey("{last}.id", ondelete="CASCADE")),' if last else "")
            bodies.append(f'''
op.create_table("{name}",
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),{fk}
    sa.Column("created_at", sa.DateTime(timezone=True),
              server_default=sa.text("now()"), nullable=False))
op.create_index("ix_{name}_name", "{name}", ["name"])
op.execute("INSERT INTO {name} (name) VALUES ('first'), ('second')")''')
            entities.append(name)
        elif kind == 1:
            bodies.append(f'''
op.add_column("{last}", sa.Column("note", sa.Text))
op.add_column("{last}", sa.Column("note_at", sa.DateTime))''')
        elif kind == 2:
            bodies.append(f'''
op.create_table("kind_{cycle:02d}",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(40), nullable=False, unique=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, server_default="0"))
op.execute("INSERT INTO kind_{cycle:02d} (code, label, position) VALUES "
           + ", ".join(f"('c{{i}}', 'Label {{i}}', {{i}})" for i in range(25)))''')
        elif kind == 3:
            bodies.append(f'''
op.execute("CREATE TYPE status_{cycle:02d} AS ENUM ('draft', 'active', 'closed')")
op.add_column("{last}", sa.Column(
    "status", postgresql.ENUM(name="status_{cycle:02d}", create_type=False),
    nullable=False, server_default="draft"))''')
        elif kind == 4:
            bodies.append(f'''
op.alter_column("{before}", "name", type_=sa.String(255), existing_type=sa.String(120),
                existing_nullable=False)
op.create_check_constraint("ck_{before}_name_{cycle}", "{before}", "length(name) > 0")
op.alter_column("kind_{cycle:02d}", "position", type_=sa.BigInteger,
                existing_type=sa.Integer)''')
        elif kind == 5:  # a data migration in Python: runs online
            bodies.append(f'''
bind = op.get_bind()
for row in bind.execute(sa.text("SELECT id, name FROM {last}")).fetchall():
    bind.execute(sa.text("UPDATE {last} SET note = :note WHERE id = :id"),
                 {{"note": row.name.upper(), "id": row.id}})
op.create_index("ix_{last}_created", "{last}", ["created_at"])''')
        elif kind == 6:
            bodies.append(f'''
op.add_column("{last}", sa.Column("legacy_flag", sa.Boolean, server_default=sa.false()))
op.execute("COMMENT ON TABLE {last} IS 'generated by bench/provision.py'")''')
        elif kind == 7:
            bodies.append(f'''
op.alter_column("{last}", "legacy_flag", new_column_name="is_legacy")
op.drop_column("{last}", "note_at")''')
        elif kind == 8:  # one that looks at the database first: runs online
            bodies.append(f'''
bind = op.get_bind()
if "{last}" in sa.inspect(bind).get_table_names():
    op.add_column("{last}", sa.Column("checked", sa.Boolean))
op.create_unique_constraint("uq_{last}_id_name", "{last}", ["id", "name"])''')
        elif kind == 9:
            bodies.append(f'''
op.create_table("setting_{cycle:02d}",
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False))
op.execute("""INSERT INTO setting_{cycle:02d} (key, value) VALUES
    ('theme', '{{"dark": false}}'), ('limits', '{{"items": 100}}')""")''')
        elif kind == 10:
            bodies.append(f'''
op.execute("ALTER TYPE status_{cycle:02d} ADD VALUE IF NOT EXISTS 'archived'")
op.drop_index("ix_{last}_name", table_name="{last}")
op.create_index("ix_{last}_name_created", "{last}", ["name", "created_at"])''')
        else:
            bodies.append(f'''
op.execute("CREATE OR REPLACE VIEW recent_{last} AS "
           "SELECT id, created_at FROM {last} ORDER BY id DESC LIMIT 100")''')
    return bodies[:count]


FLOOR = "import sqlalchemy.dialects.postgresql.psycopg"
"""What any SQLAlchemy program on psycopg imports before its first connection: the part of
a single tenant's time that no runner built on them can go below."""


def build(root: Path, revisions: int, provision: str) -> None:
    versions = root / "svc" / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "svc" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "svc" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    down = None
    for number, body in enumerate(_history(revisions), 1):
        rev = f"b0b0{number:08d}"
        text = textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
        (versions / f"{rev}_r{number}.py").write_text(
            HEADER.format(rev=rev, down=down, body=text))
        down = rev
    (root / "fleet.toml").write_text(
        'database = "${DATABASE_URI}"\ntenants = ["t0000"]\n'
        f'provision = "${{PROVISION:-{provision}}}"\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')


def run(argv: list[str], root: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}{done.stdout[-2000:]}")
    return seconds, done.stdout


def _fill_ledger(url: str, tenants: int) -> None:
    """Give the ledger the checksum rows ``tenants`` more tenants would have left (one per
    revision each), as a fleet of that many has: what every run's check of applied files
    reads. Only ledger rows: their schemas do not exist, and nothing reads them as tenants."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO fleet.applied_revisions (service, schema_name, revision,
                            checksum)
                        SELECT a.service, 'filled_' || n, a.revision, a.checksum
                        FROM (SELECT DISTINCT service, revision, checksum
                              FROM fleet.applied_revisions) AS a,
                             generate_series(1, %s) AS n""", (tenants,))
        conn.execute("ANALYZE fleet.applied_revisions")


def measure(mode: str, args: argparse.Namespace, server: object, work: Path,
            base_env: dict[str, str]) -> dict[str, object]:
    root = work / mode
    build(root, args.revisions, mode)
    url = server.create(f"bench_prov_{mode}")  # type: ignore[attr-defined]
    env = {**base_env, "DATABASE_URI": url}
    fleet = str(BIN / "fleet")
    row: dict[str, object] = {}
    try:
        # One tenant migrated first, so that the ledger exists (no reference built yet).
        run([fleet, "migrate"], root, {**env, "PROVISION": "migrate"})
        # The first batch once (it builds the reference); then --repeat batches of new
        # tenants with the reference in place, each of new names.
        again: list[float] = []
        for number in range(1 + args.repeat):
            label = "batch" if number == 0 else "batch_again"
            first = 1 + number * args.tenants
            names = [f"t{i:05d}" for i in range(first, first + args.tenants)]
            server.checkpoint()  # type: ignore[attr-defined]
            seconds, out = run([fleet, "tenants", "add", *names, "--json"], root, env)
            targets = json.loads(out)["migration"]["targets"]
            vias = {t.get("via") for t in targets}
            if {t["outcome"] for t in targets} != {"migrated"}:
                raise RuntimeError(f"{mode}: not every tenant was migrated: {out[-2000:]}")
            if number == 0:
                row[label] = seconds
            else:
                again.append(seconds)
            row[f"{label}_via"] = sorted(v for v in vias if v)
            print(f"{mode}: tenants add of {args.tenants} ({label}): {seconds:.2f}s "
                  f"via {', '.join(row[f'{label}_via'])}", flush=True)
        row["batch_again"] = min(again)
        row["batch_again_median"] = statistics.median(again)
        row["batch_again_runs"] = again
        if args.ledger_tenants:
            _fill_ledger(url, args.ledger_tenants)
        singles = []
        for index in range(args.singles):
            server.checkpoint()  # type: ignore[attr-defined]
            seconds, _ = run([fleet, "tenants", "add", f"s{index:04d}"], root, env)
            singles.append(seconds)
        row["single_min"] = min(singles)
        row["single_median"] = statistics.median(singles)
        print(f"{mode}: tenants add of 1: min {min(singles):.3f}s, median "
              f"{statistics.median(singles):.3f}s", flush=True)
        floors = [run([fleet, "status"], root, env)[0] for _ in range(args.singles)]
        row["status_min"] = min(floors)
        versions = [run([fleet, "--version"], root, env)[0] for _ in range(args.singles)]
        row["version_min"] = min(versions)
        imports = [run([sys.executable, "-c", FLOOR], root, env)[0] for _ in range(args.singles)]
        row["import_floor_min"] = min(imports)
    finally:
        server.drop(url)  # type: ignore[attr-defined]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=120, help="revisions (default 120)")
    parser.add_argument("--tenants", type=int, default=100, help="tenants per batch (100)")
    parser.add_argument("--singles", type=int, default=7, help="single-tenant runs (7)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="batches added with the reference in place: min and median (3)")
    parser.add_argument("--ledger-tenants", type=int, default=0,
                        help="before the single-tenant runs, give the ledger the checksum "
                        "rows of this many more tenants, as a large fleet has (0)")
    parser.add_argument("--out", type=Path, default=None, help="write results.json here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-provision-"))
    server, embedded = open_server(work)
    base_env = child_env()
    results = {}
    try:
        for mode in ("reference", "migrate"):
            results[mode] = measure(mode, args, server, work, base_env)
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    ref, mig = results["reference"], results["migrate"]
    print()
    print(f"{args.revisions} revisions, {args.tenants} tenants per batch")
    print(f"{'':34} {'reference':>10} {'migrate':>10} {'ratio':>7}")
    for key, label in (("batch", f"add {args.tenants} (reference built)"),
                       ("batch_again", f"add {args.tenants} more, min"),
                       ("batch_again_median", f"add {args.tenants} more, median"),
                       ("single_min", "add 1, min"), ("single_median", "add 1, median")):
        ratio = float(ref[key]) / float(mig[key])  # type: ignore[arg-type]
        print(f"{label:34} {float(ref[key]):>9.2f}s {float(mig[key]):>9.2f}s "  # type: ignore[arg-type]
              f"{ratio:>6.2f}x")
    print(f"start-up floor: python -c '{FLOOR}' {float(ref['import_floor_min']):.2f}s, "  # type: ignore[arg-type]
          f"fleet --version {float(ref['version_min']):.2f}s, "  # type: ignore[arg-type]
          f"fleet status {float(ref['status_min']):.2f}s")  # type: ignore[arg-type]
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "results": results}, indent=2))


if __name__ == "__main__":
    main()
