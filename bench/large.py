"""Benchmark large fleets: 10,000 tenants x 3 services, and the failure path at 3,000 targets.

    python bench/large.py                              # both parts, embedded PostgreSQL
    python bench/large.py --part fleet --tenants 10000 --repeat 5
    python bench/large.py --part failures --targets 3000 --repeat 2

``--part fleet`` builds the platform of bench/run.py (3 schema-per-tenant services x 15
revisions) with ``--tenants`` tenants (3N schemas) and with 1 tenant, each in its own
database, migrated from empty by ``fleet migrate`` (the large one is timed, with the peak
RSS of fleet's whole process tree, parent and workers, sampled every 20 ms, and the CPU
seconds of fleet and of the server). Then, ``--repeat`` times, interleaved so that both see
the same load: ``fleet status`` and a no-op ``fleet migrate`` on 1 tenant and on N tenants.
It prints min and median of each and the ratios N / 1 of the same repeat (targets: status
and no-op at most 2x, peak memory under 400 MB).

``--part failures`` migrates ``--targets`` targets from empty that all succeed and the same
targets with a failing statement (``SELECT 1/0``) after the last revision's DDL, so every
target does the same work and then rolls back (bench/failures.py), through ``fleet migrate``;
and, as PostgreSQL's own cost of the same, the same DDL through one ``psql`` session, one
transaction per target, committed against ending in the same error (psql goes on after an
error; the COMMIT of the aborted transaction rolls it back). Each repeat runs the four on
fresh databases, alternating the order; it prints min and median of each and the ratios
failing / succeeding within each repeat, for fleet and for psql (target for fleet: at most
1.2x).

``--shared-buffers SIZE`` gives the embedded server that much shared memory (ALTER SYSTEM
and a restart) instead of PostgreSQL's 128 MB default: the catalogs of 10,000 tenants x 3
services take 1.4 GB, and a production server of that size is given room for them.

Writes large.json to --out (merged with what an earlier run of the other part wrote). Not
part of the pytest run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failures import make_failing
from fleet_platform import build
from run import (
    BIN,
    Timing,
    _psql,
    _record,
    child_env,
    load_average,
    machine_info,
    open_server,
    summarize,
    timed,
)

FAIL = "SELECT 1/0"


CATALOGS = ("pg_class", "pg_namespace", "pg_attribute", "pg_trigger", "pg_proc")
"""What the status query reads, analyzed after the full migration: their statistics still
describe the empty database until autovacuum comes by, and the plan differs."""


def _stats(runs: list[dict]) -> dict:
    return {**summarize([r["seconds"] for r in runs]), "runs": runs}


def _fleet(args: list[str], root: Path, url: str, env: dict[str, str], server) -> Timing:
    return timed([str(BIN / "fleet"), *args], env={**env, "DATABASE_URI": url}, cwd=root,
                 server=server, database=url)


def part_fleet(server, work: Path, env: dict[str, str], tenants: int, repeat: int,
               jobs: list[str], mirror: bool = False) -> dict:
    small, large = work / "one", work / "many"
    for root, count in ((small, 1), (large, tenants)):
        config = build(root, count)
        if mirror:  # both sides alike: the ratio compares the same configuration
            config.write_text(config.read_text().replace(
                "\ntenants = ", "\nversion_mirror = true\ntenants = ", 1))
    one = server.create("bench_large_one")
    many = server.create("bench_large_many")
    result: dict = {"tenants": tenants, "schemas": 3 * tenants, "repeat": repeat,
                    "version_mirror": mirror}
    _fleet(["migrate", "--json", *jobs], small, one, env, server)
    server.checkpoint()
    print(f"full migration of {tenants} tenants ({3 * tenants} schemas) from empty ...",
          flush=True)
    full = _fleet(["migrate", "--json", *jobs], large, many, env, server)
    result["full"] = _record(full)
    with psycopg.connect(many, autocommit=True) as conn:  # as autovacuum would, soon after
        for catalog in CATALOGS:
            conn.execute(f"ANALYZE pg_catalog.{catalog}")
    print(f"  {full.seconds:.1f}s, peak RSS {full.peak_mb:.0f} MB, PSS "
          f"{full.peak_pss_mb:.0f} MB, CPU {full.client_cpu:.1f}s "
          f"fleet + {full.server_cpu or 0:.1f}s server (load {full.load})", flush=True)
    runs: dict[str, list[dict]] = {k: [] for k in ("status_1", "status_n", "noop_1", "noop_n")}
    ratios: dict[str, list[float]] = {"status": [], "noop": []}
    for attempt in range(repeat):
        server.checkpoint()
        order = ("1", "n") if attempt % 2 == 0 else ("n", "1")
        for which in order:
            root, url = (small, one) if which == "1" else (large, many)
            runs[f"status_{which}"].append(_record(_fleet(["status", "--json"], root, url,
                                                          env, server)))
            runs[f"noop_{which}"].append(_record(_fleet(["migrate", "--json", *jobs], root,
                                                        url, env, server)))
        for kind in ("status", "noop"):
            ratios[kind].append(runs[f"{kind}_n"][-1]["seconds"]
                                / runs[f"{kind}_1"][-1]["seconds"])
        print(f"  run {attempt + 1}/{repeat}: " + ", ".join(
            f"{k} {v[-1]['seconds']:.2f}s" for k, v in runs.items())
            + f" (load {runs['noop_n'][-1]['load']})", flush=True)
    for key, values in runs.items():
        result[key] = _stats(values)
    result["ratio_status"] = summarize(ratios["status"])
    result["ratio_noop"] = summarize(ratios["noop"])
    result["peak_mb"] = max([full.peak_mb] + [r["peak_mb"] for v in runs.values() for r in v])
    result["peak_pss_mb"] = max([full.peak_pss_mb]
                                + [r["peak_pss_mb"] for v in runs.values() for r in v])
    for url in (one, many):
        server.drop(url)
    return result


def failing_sql(script: str) -> str:
    """The per-target transactions of a ``fleet migrate --sql`` script, each ending in the
    failing statement before its COMMIT (which then rolls back)."""
    return script.replace("\nCOMMIT;", f"\n{FAIL};\n\nCOMMIT;")


def part_failures(server, work: Path, env: dict[str, str], targets: int, repeat: int,
                  jobs: list[str]) -> dict:
    tenants = max(1, targets // 3)
    ok_root, fail_root = work / "ok", work / "fail"
    build(ok_root, tenants)
    make_failing(fail_root, tenants, "last")
    scratch = server.create("bench_sql")
    try:
        script = subprocess.run([str(BIN / "fleet"), "migrate", "--sql"], cwd=ok_root,
                                env={**env, "DATABASE_URI": scratch}, capture_output=True,
                                text=True, check=True).stdout
    finally:
        server.drop(scratch)
    count = script.count("\nCOMMIT;")
    if count != 3 * tenants:
        raise RuntimeError(f"expected {3 * tenants} transactions in --sql, found {count}")
    (work / "ok.sql").write_text(script)
    (work / "fail.sql").write_text(failing_sql(script))
    runs: dict[str, list[dict]] = {k: [] for k in ("fleet_ok", "fleet_fail", "psql_ok",
                                                   "psql_fail")}
    ratios: dict[str, list[float]] = {"fleet": [], "psql": []}
    for attempt in range(repeat):
        kinds = list(runs) if attempt % 2 == 0 else list(reversed(runs))
        for kind in kinds:
            url = server.create("bench_failures")
            try:
                server.checkpoint()
                if kind.startswith("fleet"):
                    root = ok_root if kind == "fleet_ok" else fail_root
                    out = work / "fleet.json"
                    with out.open("w") as sink:
                        timing = timed([str(BIN / "fleet"), "migrate", "--json", *jobs],
                                       env={**env, "DATABASE_URI": url}, cwd=root,
                                       stdout=sink, server=server, database=url,
                                       ok=(0, 1))
                    summary = json.loads(out.read_text())["summary"]
                    key = "migrated" if kind == "fleet_ok" else "failed"
                    if summary.get(key) != 3 * tenants:
                        raise RuntimeError(f"{kind}: expected {3 * tenants} {key}: {summary}")
                else:
                    source = work / ("ok.sql" if kind == "psql_ok" else "fail.sql")
                    stop = "1" if kind == "psql_ok" else "0"
                    with source.open() as stdin:
                        timing = timed([_psql(), "-q", "-v", f"ON_ERROR_STOP={stop}", "-X",
                                        url], env=env, cwd=work, stdin=stdin,
                                       stdout=subprocess.DEVNULL, server=server,
                                       database=url)
            finally:
                server.drop(url)
            runs[kind].append(_record(timing))
            print(f"  run {attempt + 1}/{repeat}: {3 * tenants} targets, {kind}: "
                  f"{timing.seconds:.1f}s (load {timing.load})", flush=True)
        ratios["fleet"].append(runs["fleet_fail"][-1]["seconds"]
                               / runs["fleet_ok"][-1]["seconds"])
        ratios["psql"].append(runs["psql_fail"][-1]["seconds"]
                              / runs["psql_ok"][-1]["seconds"])
    result: dict = {"targets": 3 * tenants, "repeat": repeat}
    for key, values in runs.items():
        result[key] = _stats(values)
    result["ratio_fleet"] = summarize(ratios["fleet"])
    result["ratio_psql"] = summarize(ratios["psql"])
    return result


def report(results: dict) -> list[str]:
    lines = []
    for key in ("fleet", "fleet_mirror"):
        fleet = results.get(key)
        if not fleet:
            continue
        n = fleet["tenants"]
        full = fleet["full"]
        mirror = ", version_mirror = true" if fleet.get("version_mirror") else ""
        lines += [
            f"{n} tenants x 3 services ({fleet['schemas']} schemas{mirror}), measured:",
            f"  full migration from empty: {full['seconds']:.1f}s (one run); peak memory of "
            f"fleet's process tree (parent and workers): {fleet['peak_mb']:.0f} MB RSS summed, "
            f"{fleet.get('peak_pss_mb', 0):.0f} MB PSS summed (target < 400); CPU "
            f"{full['client_cpu']:.1f}s fleet + {full['server_cpu'] or 0:.1f}s server",
        ]
        for kind, label in (("status", "fleet status"), ("noop", "no-op fleet migrate")):
            one, many = fleet[f"{kind}_1"], fleet[f"{kind}_n"]
            ratio = fleet[f"ratio_{kind}"]
            lines.append(
                f"  {label}: 1 tenant {one['min']:.2f}s / {one['median']:.2f}s, {n} tenants "
                f"{many['min']:.2f}s / {many['median']:.2f}s (min / median of "
                f"{fleet['repeat']}); {n} / 1 in the same repeat {ratio['min']:.2f}x (min), "
                f"{ratio['median']:.2f}x (median) (target <= 2)")
    failures = results.get("failures")
    if failures:
        t = failures["targets"]
        lines.append(f"{t} targets from empty, min / median of {failures['repeat']}:")
        for key, label in (("fleet_ok", "fleet, all succeeding"),
                           ("fleet_fail", "fleet, all failing after their DDL"),
                           ("psql_ok", "psql, same DDL committed"),
                           ("psql_fail", "psql, same DDL then the error, rolled back")):
            lines.append(f"  {label}: {failures[key]['min']:.1f}s / "
                         f"{failures[key]['median']:.1f}s")
        rf, rp = failures["ratio_fleet"], failures["ratio_psql"]
        lines.append(f"  failing / succeeding in the same repeat: fleet {rf['min']:.2f}x (min) "
                     f"{rf['median']:.2f}x (median) (target <= 1.2); psql {rp['min']:.2f}x "
                     f"(min) {rp['median']:.2f}x (median)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("fleet", "failures", "all"), default="all")
    parser.add_argument("--tenants", type=int, default=10000, help="tenants (default 10000)")
    parser.add_argument("--targets", type=int, default=3000,
                        help="targets of the failure part, a multiple of 3 (default 3000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="status / no-op repeats (default 5)")
    parser.add_argument("--failure-repeat", type=int, default=2,
                        help="repeats of the failure part (default 2)")
    parser.add_argument("--jobs", type=int, default=None, help="fleet --jobs (default: CPUs)")
    parser.add_argument("--out", default="bench/results", help="folder for large.json")
    parser.add_argument("--mirror", action="store_true",
                        help="version_mirror = true on both sides (saved as fleet_mirror)")
    parser.add_argument("--shared-buffers", default=None, metavar="SIZE",
                        help="the embedded server's shared_buffers (e.g. 2GB: room for the "
                        "catalogs of 10,000 tenants; default: PostgreSQL's, 128MB)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "large.json"

    def save(key: str, value: dict) -> dict:
        """Merge one part into large.json (read again: another run may have written)."""
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged[key] = value
        path.write_text(json.dumps(merged, indent=2))
        return merged

    results: dict = {}
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-large-"))
    server, embedded = open_server(work, {"shared_buffers": args.shared_buffers}
                                   if args.shared_buffers else None)
    env = child_env()
    try:
        machine = machine_info(server)
        print("machine:", machine["summary"], flush=True)
        if args.part in ("fleet", "all"):
            results = save("fleet_mirror" if args.mirror else "fleet", {
                **part_fleet(server, work, env, args.tenants, args.repeat, jobs, args.mirror),
                "machine": machine, "finished": time.strftime("%Y-%m-%d %H:%M"),
                "load_at_end": load_average()})
        if args.part in ("failures", "all"):
            results = save("failures", {
                **part_failures(server, work, env, args.targets, args.failure_repeat, jobs),
                "machine": machine, "finished": time.strftime("%Y-%m-%d %H:%M"),
                "load_at_end": load_average()})
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(["", *report(results), f"wrote {path}"]))


if __name__ == "__main__":
    main()
