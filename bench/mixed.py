"""Benchmark mixed plans: a real-style history of 100+ revisions, a few needing a live
connection, migrated by fleet into N tenants from empty, against the psql floor.

    python bench/mixed.py                          # 200 tenants, 110 revisions, 3 repeats
    python bench/mixed.py --tenants 200 --revisions 110 --repeat 3 --out bench/results

The history (bench/real_history.py) is one schema-per-tenant service with tables, foreign
keys, indexes, enums, constraints, views, data migrations (``op.execute``,
``op.bulk_insert``), column alters, and every 17th revision one that reads the database
(``sa.inspect(op.get_bind())`` conditionals, a seed guarded by a count, a data migration
reading rows back): fleet replays the static revisions and runs those online at their place
in the same transaction, so every target should report ``via: mixed``.

The floor. ``fleet migrate --sql`` refuses such a history (a revision needs a live
connection), so the floor's statements are captured from a plain ``alembic upgrade head`` of
one tenant (a classic env.py: schema from ALEMBIC_SCHEMA, search_path set, one transaction):
every statement it sends to the server, taken at SQLAlchemy's ``before_cursor_execute``
(the reads of the inspector and of the online revisions, Alembic's version-table checks and
one version ``UPDATE`` per revision included), with bound parameters inlined by psycopg's
client-side ``mogrify`` (an ``executemany`` becomes one statement per row, as offline
``bulk_insert`` renders them). The floor replays those statements, the schema name replaced,
through one ``psql`` session, one transaction per tenant, on a fresh database. The result is
checked: a ``pg_dump`` (schema and data) of the first and the last tenant, names
normalised, must be the same from the floor and from fleet.

Each repeat measures both on fresh databases, alternating which goes first, with a
CHECKPOINT before each; it prints min and median of each and the ratio fleet / floor of the
mins and of the medians (target: at most 1.0x), the via counts, the machine and the load
average of each run, and writes mixed.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_history
from run import (
    BIN,
    _psql,
    _record,
    child_env,
    machine_info,
    open_server,
    summarize,
    timed,
)

CAPTURE_TENANT = "t00000"


def capture(root: Path, url: str) -> list[str]:
    """Every statement a plain ``alembic upgrade head`` of one tenant sends, parameters
    inlined, in order (see the module docstring)."""
    from alembic import command
    from alembic.config import Config

    schema = real_history.SCHEMA.format(tenant=CAPTURE_TENANT)
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        raw = conn.connection.dbapi_connection
        rows = parameters if executemany else [parameters]
        for params in rows:
            if params:
                statements.append(psycopg.ClientCursor(raw).mogrify(statement, params))
            else:
                statements.append(statement)

    saved = {k: os.environ.get(k) for k in ("ALEMBIC_SCHEMA", "DATABASE_URI")}
    os.environ.update(ALEMBIC_SCHEMA=schema, DATABASE_URI=url)
    event.listen(Engine, "before_cursor_execute", before)
    try:
        command.upgrade(Config(str(root / real_history.SERVICE / "alembic.ini")), "head")
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    # What SQLAlchemy's dialect asks on connecting is not the migration's.
    first = next(i for i, s in enumerate(statements) if s.startswith("CREATE SCHEMA"))
    return statements[first:]


def floor_script(statements: list[str], tenants: int) -> str:
    """The captured statements for every tenant, one transaction per tenant."""
    template = ";\n".join(s.rstrip().rstrip(";") for s in statements) + ";\n"
    old = real_history.SCHEMA.format(tenant=CAPTURE_TENANT)
    parts = []
    for i in range(tenants):
        new = real_history.SCHEMA.format(tenant=f"t{i:05d}")
        parts.append("BEGIN;\n" + template.replace(old, new) + "COMMIT;\n")
    return "".join(parts)


def dump(url: str, schema: str) -> str:
    """pg_dump of one tenant schema, schema and data, its name replaced by SCHEMA."""
    pg_dump = str(Path(_psql()).parent / "pg_dump")
    out = subprocess.run([pg_dump, "--no-owner", "--inserts", "-n", schema, url],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.replace(schema, "SCHEMA") for line in out.splitlines()
             if not line.startswith(("--", "\\restrict", "\\unrestrict"))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200, help="tenants (default 200)")
    parser.add_argument("--revisions", type=int, default=110,
                        help="revisions in the history (default 110)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="fleet --jobs (default: CPUs)")
    parser.add_argument("--out", default="bench/results", help="folder for mixed.json")
    parser.add_argument("--diagnose", action="store_true",
                        help="also run fleet with ledger = false in each repeat (what the "
                        "ledger's rows cost)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-mixed-"))
    server, embedded = open_server(work)
    env = child_env()
    try:
        machine = machine_info(server)
        print("machine:", machine["summary"], flush=True)
        history = real_history.build(work / "fleet", args.tenants, args.revisions)
        projects = {"fleet": work / "fleet"}
        if args.diagnose:
            projects["fleet_no_ledger"] = work / "no_ledger"
            projects["fleet_no_ledger"].mkdir()
            (projects["fleet_no_ledger"] / real_history.SERVICE).symlink_to(
                work / "fleet" / real_history.SERVICE)
            (projects["fleet_no_ledger"] / "fleet.toml").write_text(
                "ledger = false\n" + (work / "fleet" / "fleet.toml").read_text())
        real_history.build(work / "plain", 1, args.revisions, legacy=True)
        print(f"history: {history['revisions']} revisions, {history['online']} need a live "
              f"connection; {args.tenants} tenants", flush=True)
        scratch = server.create("bench_capture")
        try:
            statements = capture(work / "plain", scratch)
        finally:
            server.drop(scratch)
        script = work / "floor.sql"
        script.write_text(floor_script(statements, args.tenants))
        print(f"floor: {len(statements)} statements per tenant captured from plain alembic",
              flush=True)
        jobs = ["--jobs", str(args.jobs)] if args.jobs else []
        runs: dict[str, list[dict]] = {"floor": [], **{kind: [] for kind in projects}}
        via: Counter[str] = Counter()
        identical = True
        for attempt in range(args.repeat):
            order = list(runs) if attempt % 2 == 0 else list(reversed(runs))
            urls = {kind: server.create(f"bench_mixed_{kind}") for kind in order}
            try:
                for kind in order:
                    server.checkpoint()
                    if kind == "floor":
                        with script.open() as source:
                            timing = timed(
                                [_psql(), "-q", "-v", "ON_ERROR_STOP=1", "-X", urls[kind]],
                                env=env, cwd=work, stdin=source, server=server,
                                database=urls[kind])
                    else:
                        answer = work / "fleet.json"
                        with answer.open("w") as sink:
                            timing = timed(
                                [str(BIN / "fleet"), "migrate", "--json", *jobs],
                                env={**env, "DATABASE_URI": urls[kind]}, cwd=projects[kind],
                                stdout=sink, server=server, database=urls[kind])
                        payload = json.loads(answer.read_text())
                        counts = Counter(t.get("via", t["outcome"]) for t in payload["targets"])
                        if payload["summary"].get("migrated") != args.tenants:
                            raise RuntimeError(f"fleet: {payload['summary']}")
                        if attempt == 0 and kind == "fleet":
                            via = counts
                    runs[kind].append(_record(timing))
                    print(f"run {attempt + 1}: {kind} {timing.seconds:.2f}s, CPU "
                          f"{timing.client_cpu:.1f}s client + {timing.server_cpu or 0:.1f}s "
                          f"server (load {timing.load})", flush=True)
                if attempt == 0:
                    for i in (0, args.tenants - 1):
                        schema = real_history.SCHEMA.format(tenant=f"t{i:05d}")
                        if dump(urls["floor"], schema) != dump(urls["fleet"], schema):
                            identical = False
                            print(f"WARNING: {schema} differs between floor and fleet",
                                  flush=True)
            finally:
                for url in urls.values():
                    server.drop(url)
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    floor = summarize([r["seconds"] for r in runs["floor"]])
    fleet = summarize([r["seconds"] for r in runs["fleet"]])
    same_run = [f["seconds"] / p["seconds"] for f, p in zip(runs["fleet"], runs["floor"],
                                                           strict=True)]
    result = {
        "machine": machine, "tenants": args.tenants, "history": history,
        "statements_per_tenant": len(statements), "repeat": args.repeat,
        "floor": {**floor, "runs": runs["floor"]}, "fleet": {**fleet, "runs": runs["fleet"]},
        "ratio_same_run": summarize(same_run),
        "via": dict(via), "same_schema_and_data": identical,
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(f"\n{args.tenants} tenants x {history['revisions']} revisions ({history['online']} "
          f"online), from empty, {args.repeat} runs:")
    print(f"  psql floor  min {floor['min']:.2f}s  median {floor['median']:.2f}s")
    print(f"  fleet       min {fleet['min']:.2f}s  median {fleet['median']:.2f}s")
    ratio = result["ratio_same_run"]
    print(f"  fleet / floor in the same repeat: {ratio['min']:.2f}x (min), "
          f"{ratio['median']:.2f}x (median) (target <= 1.0)")
    for kind in ("floor", *projects):
        cpu = [(r["client_cpu"], r["server_cpu"] or 0) for r in runs[kind]]
        client, server_cpu = min(cpu, key=sum)
        print(f"  {kind}: CPU {client:.1f}s client + {server_cpu:.1f}s server (least of the runs)")
    if "fleet_no_ledger" in runs:
        bare = summarize([r["seconds"] for r in runs["fleet_no_ledger"]])
        result["fleet_no_ledger"] = {**bare, "runs": runs["fleet_no_ledger"]}
        result["ratio_no_ledger_same_run"] = summarize(
            [b["seconds"] / p["seconds"] for b, p in zip(runs["fleet_no_ledger"], runs["floor"],
                                                          strict=True)])
        print(f"  fleet with ledger = false: min {bare['min']:.2f}s median {bare['median']:.2f}s;"
              f" / floor {result['ratio_no_ledger_same_run']['min']:.2f}x (min) "
              f"{result['ratio_no_ledger_same_run']['median']:.2f}x (median)")
    print(f"  via: {dict(via)}; floor and fleet built the same schemas and rows: "
          f"{'yes' if identical else 'NO'}")
    (out / "mixed.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'mixed.json'}")


if __name__ == "__main__":
    main()
