"""Benchmark the start of ``fleet`` in the image's virtual environment, with and without
bytecode.

    DATABASE_URI=postgresql://postgres@127.0.0.1:5432/postgres python bench/image_start.py
    python bench/image_start.py --runs 9        # embedded server

The image runs ``fleet`` with ``PYTHONDONTWRITEBYTECODE=1`` as a non-root user, so what its
venv holds is what every start loads. Two venvs are built from this checkout as the
Dockerfile's build stage builds them: ``compiled`` by ``deploy/image/build-venv.sh`` (every
module compiled, checked against its source's content, not its file time; the sources' times
then changed as a build that rewrites them does), and ``sources`` as the Dockerfile did
before (pip's bytecode deleted). On the history of ``bench/provision.py`` (``--revisions``,
reference provisioning, ``--tenants`` tenants migrated first), alternating the two venvs,
each with its own cache folder, a ``CHECKPOINT`` before each: ``fleet status`` and ``fleet
tenants add`` of one new tenant, ``--runs`` times each; min and median, and the ratio
compiled / sources measured in the same run. The interpreter's own standard library is this
machine's (with its bytecode): the base image's, which the Dockerfile compiles too, is not
measured here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provision import build
from run import child_env, open_server

REPO = Path(__file__).resolve().parents[1]


def make_venvs(work: Path, env: dict[str, str]) -> dict[str, Path]:
    """The two venvs, from a copy of the files the image is built from."""
    tree = work / "src-tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info"))
    env = {**env, "PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1",
           "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    compiled, sources = work / "compiled", work / "sources"
    subprocess.run(["sh", str(REPO / "deploy" / "image" / "build-venv.sh"), str(compiled)],
                   cwd=tree, env=env, check=True, capture_output=True)
    for path in compiled.rglob("*.py"):
        os.utime(path, (946684800, 946684800))
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
                    str(wheels), "."], cwd=tree, env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(sources)], check=True)
    wheel = next(wheels.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(sources / "bin" / "python"),
                    "install", "-q", f"{wheel}[metrics,otel]"], env=env, check=True,
                   capture_output=True)
    for cache in sources.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return {"compiled": compiled, "sources": sources}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--revisions", type=int, default=120, help="revisions (default 120)")
    parser.add_argument("--tenants", type=int, default=20, help="tenants migrated first (20)")
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (7)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-image-"))
    server, embedded = open_server(work)
    base_env = child_env()
    url = server.create("bench_image")
    times: dict[tuple[str, str], list[float]] = {}
    try:
        venvs = make_venvs(work, base_env)
        project = work / "project"
        build(project, args.revisions, "reference")
        env = {**base_env, "DATABASE_URI": url, "PYTHONDONTWRITEBYTECODE": "1"}
        fleet = str(venvs["compiled"] / "bin" / "fleet")
        subprocess.run([fleet, "migrate"], cwd=project, env=env, check=True,
                       capture_output=True)
        subprocess.run([fleet, "tenants", "add", *(f"t{i:04d}" for i in range(1, args.tenants))],
                       cwd=project, env=env, check=True, capture_output=True)
        for run in range(args.runs):
            for name, venv in venvs.items():
                own = {**env, "FLEET_CACHE_DIR": str(work / f"cache-{name}")}
                for command in (["status"], ["tenants", "add", f"{name[0]}{run:04d}"]):
                    server.checkpoint()
                    started = time.perf_counter()
                    subprocess.run([str(venv / "bin" / "fleet"), *command], cwd=project,
                                   env=own, check=True, capture_output=True)
                    times.setdefault((name, command[0]), []).append(
                        time.perf_counter() - started)
    finally:
        server.drop(url)
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.revisions} revisions, {args.tenants} tenants, {args.runs} runs each "
          "(min / median, seconds)")
    print(f"{'':22} {'compiled':>14} {'sources':>14} {'ratio':>7}")
    for command, label in (("status", "fleet status"), ("tenants", "fleet tenants add 1")):
        new, old = times[("compiled", command)], times[("sources", command)]
        print(f"{label:22} {min(new):>6.2f} / {statistics.median(new):.2f} "
              f"{min(old):>6.2f} / {statistics.median(old):.2f} "
              f"{statistics.median(new) / statistics.median(old):>6.2f}x")


if __name__ == "__main__":
    main()
