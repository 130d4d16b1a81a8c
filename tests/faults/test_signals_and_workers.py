"""SIGTERM, a SIGKILLed parent, and workers that die while idle.

Kubernetes stops a pod with SIGTERM (to PID 1, which is ``fleet`` in the image) and, after
the grace period, SIGKILL. Neither may leave a half-migrated tenant, an unreported run or a
worker holding a server session; a worker dying between targets must not end the run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project, query, script, version
from tests.faults.conftest import (
    HEAD,
    children,
    closed_gates,
    default_sigint,
    shop_project,
    start_fleet,
)

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def _wait_for_a_target_in_flight(db_url: str) -> None:
    """Until the run has started: a target's revision is in its pg_sleep."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not query(
            db_url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'active' AND query LIKE '%%pg_sleep%%' AND pid <> pg_backend_pid()"):
        time.sleep(0.05)


@pytest.mark.parametrize("to", ["parent", "group"])
def test_sigterm_rolls_back_in_flight_targets_and_exits_143(tmp_path: Path, db_url: str,
                                                            to: str) -> None:
    """Kubernetes signals PID 1 (the parent); a shell or 'kill -- -PGID' the whole group.
    Either way the run stops at once, and what it reports matches what is committed."""
    project = shop_project(tmp_path / "p", db_url, 8, sleep=0.4)
    runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
    _wait_for_a_target_in_flight(db_url)
    time.sleep(0.5)
    if to == "parent":
        runner.send_signal(signal.SIGTERM)
    else:
        os.killpg(runner.pid, signal.SIGTERM)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 143, err
    payload = json.loads(out)
    assert payload["interrupted"] is True and payload["end"] == "terminated"
    for target in payload["targets"]:
        if target["outcome"] == "migrated":
            assert version(db_url, target["schema"]) == [HEAD]
        else:
            assert query(db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                         (target["schema"],))[0][0] == 0
    assert query(db_url, "SELECT outcome, finished_at IS NOT NULL FROM fleet.runs") == [
        ("terminated", True)]
    # The ledger says what the run reported: each target it reported failed (rolled back
    # when the run was stopped) has its row, and the run's counts are the report's.
    reported = {t["schema"]: t["outcome"] for t in payload["targets"]
                if t["outcome"] in ("migrated", "failed")}
    assert "failed" in reported.values(), payload
    assert dict(query(db_url, "SELECT schema_name, outcome FROM fleet.run_targets")) == reported
    assert query(db_url, "SELECT migrated, failed FROM fleet.runs") == [
        (payload["summary"]["migrated"], payload["summary"]["failed"])]
    assert all("interrupted" in error for (error,) in query(
        db_url, "SELECT error FROM fleet.run_targets WHERE outcome = 'failed'"))
    assert project.fleet("migrate").returncode == 0


def _ignore_sigint() -> None:
    """``preexec_fn``: SIGINT ignored, as a shell without job control starts a background
    job (``fleet migrate &`` in a script): a Ctrl-C at the terminal is not the job's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_ignored_sigint_stays_ignored_while_a_sigterm_stops_the_run(
        tmp_path: Path, db_url: str, jobs: str) -> None:
    """Started with SIGINT ignored, fleet ignores it throughout: also while a SIGTERM stops
    the run and its report is written (the stop armed SIGINT, and two Ctrl-Cs then cut the
    report off: exit 130, an error object, the run row left 'running')."""
    project = shop_project(tmp_path / "p", db_url, 6, sleep=0.4)
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    runner = subprocess.Popen([script("fleet"), "migrate", "--json", "--jobs", jobs],
                              cwd=project.root, env={**base, **project.env}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=_ignore_sigint)
    _wait_for_a_target_in_flight(db_url)
    runner.send_signal(signal.SIGINT)  # ignored: the run goes on
    time.sleep(0.3)
    assert runner.poll() is None
    runner.send_signal(signal.SIGTERM)
    for _ in range(2):
        time.sleep(0.02)
        runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 143, (out, err)
    payload = json.loads(out)
    assert payload["end"] == "terminated", payload
    assert "the report follows" not in err, err
    assert query(db_url, "SELECT outcome, finished_at IS NOT NULL FROM fleet.runs") == [
        ("terminated", True)]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_second_signal_while_stopping_still_gives_the_report(tmp_path: Path, db_url: str,
                                                               jobs: str) -> None:
    """Ctrl-C twice (or a SIGTERM then a Ctrl-C): the second arrives while the run is
    stopping (here, held behind a lock on the ledger's run table) and waits for the report,
    which is printed whole; a third quits at once."""
    project = shop_project(tmp_path / "p", db_url, 6, sleep=0.4)
    runner = start_fleet(project, "migrate", "--json", "--jobs", jobs)
    _wait_for_a_target_in_flight(db_url)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE fleet.runs IN ACCESS EXCLUSIVE MODE")
        runner.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # stopping: the run's row waits for the lock
        runner.send_signal(signal.SIGINT)
        time.sleep(0.5)
        holder.rollback()
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 143, err
    payload = json.loads(out)
    assert payload["interrupted"] is True and payload["end"] == "terminated", payload
    assert "targets" in payload and payload["summary"]["targets"] == 6, payload
    assert project.fleet("migrate").returncode == 0


def test_a_third_signal_while_stopping_quits_at_once(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 6, sleep=0.4)
    runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
    _wait_for_a_target_in_flight(db_url)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE fleet.runs IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            runner.send_signal(signal.SIGINT)
            time.sleep(0.5)
        # Out while the lock is still held: it did not wait for the ledger.
        out, err = runner.communicate(timeout=3)
        holder.rollback()
    assert runner.returncode == 130, err
    assert "once more to quit at once" in err, err
    assert json.loads(out)["error"]["message"] == "interrupted", out
    assert project.fleet("migrate").returncode == 0


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_fleet_starts_is_never_a_traceback(tmp_path: Path, db_url: str,
                                                          number: int) -> None:
    """Ctrl-C (or SIGTERM) in fleet's first tenth of a second, while Python imports it: the
    command says it was interrupted (and is valid JSON with --json), never a traceback of
    fleet's imports."""
    project = shop_project(tmp_path / "p", db_url, 1)
    seen = set()
    for delay in (0.02, 0.04, 0.06, 0.08, 0.10, 0.13, 0.16, 0.2):
        runner = start_fleet(project, "status", "--json")
        time.sleep(delay)
        runner.send_signal(number)
        out, err = runner.communicate(timeout=60)
        if err.startswith("Fatal Python error: init_import_site"):
            # Python's own start (its site module, the installed packages' .pth files), on
            # a loaded machine still at 20 ms: the interpreter's failure, before fleet's
            # first line, exit 1.
            assert runner.returncode == 1 and "alembic_fleet/" not in err, (delay, err)
            continue
        # Before fleet's first line runs (Python's start and the wrapper pip wrote, some
        # 20 ms) the interpreter's own handler answers: never once fleet is importing.
        assert "Traceback" not in err or not any(
            where in err for where in ("alembic_fleet/", "site-packages/")), (delay, err)
        seen.add(runner.returncode)
        if runner.returncode in (130, 143):
            # The error, or the report when the signal came after it was written (then no
            # error object follows it): one JSON object either way.
            payload = json.loads(out)
            assert "targets" in payload or payload["error"]["message"] in (
                "interrupted", "terminated"), out
        else:  # before Python could answer (killed by the signal), or after it was done
            assert runner.returncode in (-number, 0, 3), (delay, runner.returncode, err)
    assert seen & {130, 143}, seen


IN_ENTRY = """
import os, signal, sys

at = int(os.environ.get("SIGNAL_AT_LINE", "0"))
where, _, inside = os.environ.get("SIGNAL_IN", "").rpartition(":")
second = os.environ.get("SECOND")
after = int(os.environ.get("SECOND_AFTER", "1"))
seen = []  # entry.py's line events since the first signal

def lines(frame, event, arg):
    if event != "line":
        return lines
    if not seen and (frame.f_lineno == at or (frame.f_code.co_name == inside
                                              and frame.f_code.co_filename.endswith(where))):
        seen.append(frame.f_lineno)
        os.kill(os.getpid(), int(os.environ["SIGNAL"]))
    elif seen and second and frame.f_code.co_name != inside:
        seen.append(frame.f_lineno)
        if len(seen) == after + 1:
            sys.settrace(None)
            os.kill(os.getpid(), int(second))
    return lines

def calls(frame, event, arg):
    if frame.f_code.co_filename.endswith(os.path.join("alembic_fleet", "entry.py")) or (
            inside and frame.f_code.co_name == inside and not seen
            and frame.f_code.co_filename.endswith(where)):
        return lines
    return None

sys.settrace(calls)
from alembic_fleet.entry import main  # as the console script pip writes
sys.exit(main())
"""
"""Runs fleet as its console script does, with ``SIGNAL`` sent to itself when
``alembic_fleet/entry.py`` reaches line ``SIGNAL_AT_LINE`` (or at the first line of a
function ``SIGNAL_IN``, ``file.py:name``), and ``SECOND``, if given, at the
``SECOND_AFTER``-th line of entry.py that runs after it, wherever that is (the handler, the
error's report): moments before fleet's own handling of an interrupt begins, which random
timing hits once in a few hundred runs."""


def _lines_after_the_handlers(entry: Path) -> list[int]:
    """The lines of entry.py's module body after the statements that install its signal
    handlers (the window before them is the interpreter's), and of main()'s statements."""
    tree = ast.parse(entry.read_text())
    body = tree.body
    def installs_handler(call: ast.AST) -> bool:  # signal.signal(...) or a function of it
        return isinstance(call, ast.Call) and (
            (isinstance(call.func, ast.Attribute) and call.func.attr == "signal")
            or (isinstance(call.func, ast.Name) and call.func.id in installers))

    installers = {node.name for node in body if isinstance(node, ast.FunctionDef) and any(
        isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
        and call.func.attr == "signal" for call in ast.walk(node))}
    installs = [i for i, node in enumerate(body) if not isinstance(
        node, (ast.FunctionDef, ast.ClassDef)) and any(
        installs_handler(call) for call in ast.walk(node))]
    assert installs, "entry.py installs no signal handler in its body: all of it is a window"
    before = [node for node in body[:installs[-1] + 1] if not (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) and not (
        isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    assert len(before) <= 5, f"the handlers come after {len(before)} statements"
    lines = [node.lineno for node in body[installs[-1] + 1:]]
    main = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == "main")
    for node in main.body[1:] if ast.get_docstring(main) else main.body:
        lines.append(node.lineno)
        if isinstance(node, ast.Try):
            lines += [inner.lineno for inner in node.body]
    return lines


@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,),
                                     (signal.SIGINT, signal.SIGTERM),
                                     (signal.SIGTERM, signal.SIGINT)],
                         ids=["INT", "TERM", "INT-TERM", "TERM-INT"])
def test_a_signal_in_the_first_lines_fleet_runs_is_reported_as_interrupted(
        tmp_path: Path, db_url: str, signals: tuple[int, ...]) -> None:
    """Each line of the console script's module and of its main(), after the statements
    that install fleet's first handlers, is hit by the signal in turn, and by a second one
    at the line that runs next: the command says it was interrupted or terminated, one JSON
    object with --json, exit 130 or 143, never a traceback nor an error the interpreter
    ignored."""
    project = shop_project(tmp_path / "p", db_url, 1)
    spec = importlib.util.find_spec("alembic_fleet.entry")  # not imported here
    assert spec is not None and spec.origin is not None
    word, code = ("terminated", 143) if signals[0] == signal.SIGTERM else ("interrupted", 130)
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    lines = _lines_after_the_handlers(Path(spec.origin))
    assert len(lines) >= 5, lines
    cases = [(line, 0) for line in lines] if len(signals) == 1 else [
        (line, after) for line in lines for after in range(1, 7)]
    for line, after in cases:
        env = {**base, **project.env, "SIGNAL": str(int(signals[0])),
               "SIGNAL_AT_LINE": str(line)}
        if len(signals) > 1:
            env.update(SECOND=str(int(signals[1])), SECOND_AFTER=str(after))
        done = subprocess.run(
            [sys.executable, "-c", IN_ENTRY, "status", "--json"], cwd=project.root,
            env=env, capture_output=True, text=True, timeout=60, preexec_fn=default_sigint)
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, (
            line, after, done.stderr)
        said = json.loads(done.stdout)["error"]["message"]  # one JSON object, whole
        if len(signals) == 1:
            assert (done.returncode, said) == (code, word), (line, done.returncode, said)
        else:  # the first decides; the second may come before the decision or after it
            assert (done.returncode, said) in ((130, "interrupted"), (143, "terminated")), (
                line, done.returncode, said)


@pytest.mark.parametrize("stdout", ["closed", "reader gone"])
def test_a_signal_while_fleet_starts_with_no_one_reading_is_still_no_traceback(
        tmp_path: Path, db_url: str, stdout: str) -> None:
    """``fleet status --json >&-`` or ``fleet status --json | true``: the error object has
    nowhere to go, and is dropped (it was an AttributeError or BrokenPipeError traceback,
    exit 1); the exit code still says interrupted."""
    project = shop_project(tmp_path / "p", db_url, 1)
    spec = importlib.util.find_spec("alembic_fleet.entry")
    assert spec is not None and spec.origin is not None
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    for line in _lines_after_the_handlers(Path(spec.origin)):
        env = {**base, **project.env, "SIGNAL": str(int(signal.SIGINT)),
               "SIGNAL_AT_LINE": str(line)}
        if stdout == "closed":
            def close_stdout() -> None:
                default_sigint()
                os.close(1)

            done = subprocess.run([sys.executable, "-c", IN_ENTRY, "status", "--json"],
                                  cwd=project.root, env=env, stderr=subprocess.PIPE,
                                  text=True, timeout=60, preexec_fn=close_stdout)
            code, err = done.returncode, done.stderr
        else:
            runner = subprocess.Popen([sys.executable, "-c", IN_ENTRY, "status", "--json"],
                                      cwd=project.root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      preexec_fn=default_sigint)
            runner.stdout.close()  # the reader is gone before anything is written
            err = runner.stderr.read()
            code = runner.wait(timeout=60)
        assert "Traceback" not in err and "Exception ignored" not in err, (line, err)
        assert code == 130, (line, code, err)


def test_a_signal_while_a_dataclass_is_made_is_reported_as_interrupted(
        tmp_path: Path, db_url: str) -> None:
    """Python 3.11 turns what a class's ``__set_name__`` raises into a RuntimeError: a Ctrl-C
    landing while fleet's imports make a dataclass was a RuntimeError's traceback."""
    project = shop_project(tmp_path / "p", db_url, 1)
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URI", "TENANTS")}
    done = subprocess.run(
        [sys.executable, "-c", IN_ENTRY, "status", "--json"], cwd=project.root,
        env={**base, **project.env, "SIGNAL": str(int(signal.SIGINT)),
             "SIGNAL_IN": "dataclasses.py:__set_name__"},
        capture_output=True, text=True, timeout=60, preexec_fn=default_sigint)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert json.loads(done.stdout)["error"]["message"] == "interrupted", done.stdout


AFTER_COMMIT = """
import os, signal, sys
import alembic_fleet.execution.target_migration as migration
calls = []
reset = migration.TargetMigrator._reset_session
def reset_then_interrupt(self, connection):
    done = reset(self, connection)
    calls.append(1)
    if len(calls) == 2:  # the second target has committed: a Ctrl-C lands now
        os.kill(os.getpid(), signal.SIGINT)
    return done
migration.TargetMigrator._reset_session = reset_then_interrupt
from alembic_fleet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_ctrl_c_right_after_a_commit_in_process_keeps_the_target_migrated(
        tmp_path: Path, db_url: str) -> None:
    """With one job the targets migrate in fleet's own process, where a Ctrl-C may land
    after a target's COMMIT: that target is migrated, in the report and in the ledger
    (it was reported and recorded rolled back)."""
    project = shop_project(tmp_path / "p", db_url, 4)
    harness = tmp_path / "after_commit.py"
    harness.write_text(AFTER_COMMIT)
    done = subprocess.run([sys.executable, str(harness), "migrate", "--jobs", "1", "--json"],
                          cwd=project.root, env={**os.environ, **project.env},
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=default_sigint)
    assert done.returncode == 130, done.stderr
    reported = {t["schema"]: t["outcome"] for t in json.loads(done.stdout)["targets"]}
    assert reported["shop_s001"] == "migrated", reported
    for schema, outcome in reported.items():
        committed = bool(query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname = %s",
                               (schema,))) and version(db_url, schema) == [HEAD]
        assert committed == (outcome == "migrated"), (schema, outcome)
    recorded = dict(query(db_url, "SELECT schema_name, outcome FROM fleet.run_targets"))
    assert recorded == {k: v for k, v in reported.items() if v in ("migrated", "failed")}
    assert query(db_url, "SELECT migrated, failed FROM fleet.runs") == [
        (list(reported.values()).count("migrated"), list(reported.values()).count("failed"))]


SIGNALS_AT_IMPORTS = """
import os, signal, sys
number, at = getattr(signal, sys.argv.pop(1)), sys.argv.pop(1).split(",")
class Signal:  # sends the signal as the first module of each prefix starts to load
    def find_spec(self, name, path, target=None):
        if at and name.startswith(at[0]):
            at.pop(0)
            os.kill(os.getpid(), number)
        return None
sys.meta_path.insert(0, Signal())
sys.argv[0] = "fleet"
from alembic_fleet.entry import main
sys.exit(main())
"""


@pytest.mark.parametrize(("number", "at", "args"), [
    ("SIGINT", "click", ["check", "--format", "json"]),  # while the command is imported
    ("SIGTERM", "click", ["status", "--json"]),
    # Twice: while the command's modules load, then while the first error is reported.
    ("SIGINT", "alembic_fleet.commands,alembic_fleet.reporting", ["migrate", "--json"]),
    ("SIGTERM", "alembic_fleet.commands,alembic_fleet.reporting", ["migrate", "--json"]),
])
def test_signals_while_fleet_starts_give_one_json_error(tmp_path: Path, db_url: str,
                                                         number: str, at: str,
                                                         args: list[str]) -> None:
    project = shop_project(tmp_path / "p", db_url, 1)
    harness = tmp_path / "signals.py"
    harness.write_text(SIGNALS_AT_IMPORTS)
    done = subprocess.run([sys.executable, str(harness), number, at, *args],
                          cwd=project.root, env={**os.environ, **project.env},
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=default_sigint)
    word, code = ("terminated", 143) if number == "SIGTERM" else ("interrupted", 130)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout) == {"error": {"message": word, "hint": None,
                                                 "exit_code": code}}, done.stdout


def test_workers_die_with_a_sigkilled_parent(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 6, sleep=2.0)
    runner = start_fleet(project, "migrate", "--jobs", "2")
    deadline = time.monotonic() + 30
    while len(children(runner.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = children(runner.pid)
    assert len(workers) == 2
    time.sleep(1.0)  # the workers are in the middle of a pg_sleep
    os.kill(runner.pid, signal.SIGKILL)  # the parent alone, not its process group
    runner.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "a worker outlived its parent"
    assert project.fleet("migrate").returncode == 0
    assert all(version(db_url, f"shop_s{i:03d}") == [HEAD] for i in range(6))


def test_a_worker_dying_while_idle_does_not_end_the_run(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 1, sleep=1.5)
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text() + '\n[services.audit]\npath = "shop"\n'
                    'schema = "audit_{tenant}"\ndepends_on = ["shop"]\n')
    runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
    deadline = time.monotonic() + 30
    idle = []
    while not idle and time.monotonic() < deadline:  # audit waits for shop: one worker idles
        time.sleep(0.2)
        busy = {int(row[0].split()[1]) for row in query(db_url, """SELECT application_name
            FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep%'
            AND application_name LIKE 'fleet %' AND pid <> pg_backend_pid()""")}
        workers = children(runner.pid)
        if len(workers) == 2 and len(busy & set(workers)) == 1:
            idle = [p for p in workers if p not in busy]
    assert idle, "could not find the idle worker"
    os.kill(idle[0], signal.SIGKILL)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert json.loads(out)["summary"]["migrated"] == 2
    assert version(db_url, "shop_s000") == [HEAD] == version(db_url, "audit_s000")


KILL_AFTER_COMMIT_ENV = '''\
import os
import signal

from alembic import context
from alembic_fleet.env import run_migrations

run_migrations()
# The migration has committed; die before the parent hears of it.
if context.config.attributes.get("fleet_schema") == os.environ.get("FLEET_TEST_KILL_AFTER"):
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_dying_after_its_commit_is_reported_migrated(tmp_path: Path,
                                                              db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 4)
    (project.root / "shop" / "migrations" / "env.py").write_text(KILL_AFTER_COMMIT_ENV)
    for revision in (project.root / "shop" / "migrations" / "versions").glob("*.py"):
        revision.write_text(revision.read_text().replace(  # all online: env.py commits
            "def upgrade():\n", "def upgrade():\n    op.get_bind()\n"))
    runner = start_fleet(project, "migrate", "--json", "--jobs", "2",
                         env={"FLEET_TEST_KILL_AFTER": "shop_s002"})
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    outcome = {t["schema"]: t for t in json.loads(out)["targets"]}
    assert outcome["shop_s002"]["outcome"] == "migrated"
    assert "right after the commit" in outcome["shop_s002"]["note"]
    assert all(version(db_url, f"shop_s{i:03d}") == [HEAD] for i in range(4))


def test_a_stop_after_the_run_rows_session_was_ended_still_settles_and_closes_the_run(
        tmp_path: Path, db_url: str) -> None:
    """The targets a stop cut off are settled on the run row's session; when the server
    ended that session mid-run (an administrator's pg_terminate_backend), a new one is
    used instead, the failed rows are written, and the run row is closed."""
    project = shop_project(tmp_path / "p", db_url, 8, sleep=0.4)
    runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
    _wait_for_a_target_in_flight(db_url)
    ended = query(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = current_database() AND state = 'idle' "
                  "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
    assert ended, "the run row's session was not found idle"
    time.sleep(0.3)
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 143, err
    payload = json.loads(out)
    reported = {t["schema"]: t["outcome"] for t in payload["targets"]
                if t["outcome"] in ("migrated", "failed")}
    for schema, outcome in reported.items():
        if outcome == "migrated":
            assert version(db_url, schema) == [HEAD]
    assert query(db_url, "SELECT outcome, finished_at IS NOT NULL FROM fleet.runs") == [
        ("terminated", True)]
    assert dict(query(db_url, "SELECT schema_name, outcome FROM fleet.run_targets")) == reported
    assert query(db_url, "SELECT migrated, failed FROM fleet.runs") == [
        (payload["summary"]["migrated"], payload["summary"]["failed"])]


def _waiting_workers(db_url: str, count: int) -> list[tuple[str, int]]:
    """(application_name, tenant) of the sessions waiting at a closed gate, once ``count``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = query(db_url, "SELECT a.application_name, l.objid::int FROM pg_locks AS l "
                     "JOIN pg_stat_activity AS a ON a.pid = l.pid "
                     "WHERE l.locktype = 'advisory' AND l.classid = 8000 AND NOT l.granted")
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise AssertionError("the workers never reached their gates")


@pytest.mark.parametrize("trouble", ["idle_session_timeout", "locked_ledger"])
def test_a_dead_worker_is_settled_and_the_run_closed_whatever_its_session_went_through(
        tmp_path: Path, db_url: str, trouble: str) -> None:
    """A worker dies mid-run while the run row's session was ended by the server
    (``idle_session_timeout``), or while another session holds the ledger's table (a
    maintenance lock): the run goes on, the dead worker's target lock is not kept by the
    settle that could not read the ledger, and the run row is closed with the report's
    counts."""
    from alembic_fleet.execution.locking import lock_key

    database = query(db_url, "SELECT current_database()")[0][0]
    if trouble == "idle_session_timeout":
        query(db_url, f'ALTER DATABASE "{database}" SET idle_session_timeout = \'2s\'')
    project = shop_project(tmp_path / "p", db_url, 3, gate=True)
    try:
        with closed_gates(db_url, range(3)) as holder:
            holder.execute("SET idle_session_timeout = 0")
            runner = start_fleet(project, "migrate", "--json", "--jobs", "2")
            waiting = _waiting_workers(db_url, 2)
            name, tenant = waiting[0]
            victim = int(name.split()[-1])
            locker = None
            if trouble == "idle_session_timeout":
                time.sleep(3)  # the run row's idle session is ended by the server
            else:
                locker = psycopg.connect(db_url)
                locker.execute("SET idle_session_timeout = 0")
                locker.execute("LOCK TABLE fleet.run_targets IN ACCESS EXCLUSIVE MODE")
            os.kill(victim, signal.SIGKILL)
            time.sleep(8 if locker else 1)
            key = lock_key("shop", f"shop_s{tenant:03d}")
            held = query(db_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND granted AND objsubid = 1 "
                         "AND ((classid::bigint << 32) | objid::bigint) = %s", (key,))[0][0]
            if locker is not None:
                locker.rollback()
                locker.close()
            for number in range(3):
                holder.execute("SELECT pg_advisory_unlock(%s, %s)", (8000, number))
            out, err = runner.communicate(timeout=120)
        assert held == 0, "the dead worker's target lock was kept"
        assert runner.returncode == 1, err
        payload = json.loads(out)
        assert query(db_url, "SELECT outcome, finished_at IS NOT NULL FROM fleet.runs") == [
            ("failed", True)], payload.get("warnings")
        summary = payload["summary"]
        counted = query(db_url, "SELECT migrated, failed FROM fleet.runs")[0]
        assert counted[0] == summary["migrated"]
        if trouble == "idle_session_timeout":
            # The dead worker's target, found rolled back, has its failed row: the ledger
            # counts what the run reports. (With the ledger locked, the settle could not
            # read it: no row is written for what is not known.)
            assert counted[1] == summary["failed"] == 1, payload
    finally:
        if trouble == "idle_session_timeout":
            query(db_url, f'ALTER DATABASE "{database}" RESET idle_session_timeout')


SIGNAL_AT = """
import os, signal, sys
number, where = getattr(signal, sys.argv.pop(1)), sys.argv.pop(1)
sys.argv[0] = "fleet"
if where == "report-thread":  # another thread alive (as OpenTelemetry's exporter): the
    import threading, time  # kernel may hand it a signal that the main thread blocks
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
if where.startswith("report"):  # halfway through writing the JSON report
    class Halfway:
        def __init__(self, stream):
            self.stream = stream
        def write(self, text):
            if len(text) > 200:
                self.stream.write(text[:100])
                os.kill(os.getpid(), number)
                return self.stream.write(text[100:])
            return self.stream.write(text)
        def __getattr__(self, name):
            return getattr(self.stream, name)
    import alembic_fleet.reporting.streams as streams
    results = streams.results
    streams.results = lambda: Halfway(results())
else:  # while the run is set up, its row already in the ledger
    import alembic_fleet.execution.run as run
    executor = run._executor
    def executor_then_signal(*args, **kwargs):
        os.kill(os.getpid(), number)
        return executor(*args, **kwargs)
    run._executor = executor_then_signal
from alembic_fleet.entry import main
sys.exit(main())
"""


def _signal_at(tmp_path: Path, project: Project, number: str, where: str, *args: str
               ) -> subprocess.CompletedProcess[str]:
    harness = tmp_path / "signal_at.py"
    harness.write_text(SIGNAL_AT)
    return subprocess.run([sys.executable, str(harness), number, where, *args],
                          cwd=project.root, env={**os.environ, **project.env},
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=default_sigint)


@pytest.mark.parametrize("where", ["report", "report-thread"])
@pytest.mark.parametrize("number", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("args", [["status", "--json"], ["migrate", "--json"]])
def test_a_signal_while_the_json_report_is_written_leaves_it_whole(
        tmp_path: Path, db_url: str, number: str, args: list[str], where: str) -> None:
    """The report was cut at the signal and an error object written after it: 64 KiB of
    targets, then {"error": ...}, not JSON (and with another thread alive, the report
    then the error object). The report is written whole, no error object follows, and the
    exit code says the command was interrupted."""
    project = shop_project(tmp_path / "p", db_url, 3)
    done = _signal_at(tmp_path, project, number, where, *args)
    report = json.loads(done.stdout)  # one object, whole
    assert "error" not in report and len(report["targets"]) == 3, done.stdout
    assert done.returncode == (143 if number == "SIGTERM" else 130), done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_report_held_by_a_reader_that_stopped_reading_still_answers_signals(
        tmp_path: Path, db_url: str) -> None:
    """A reader that stops reading holds the report's write: the first SIGTERM waits for
    it (exit 143 once it is read, the report whole); a second one quits at once."""
    project = shop_project(tmp_path / "p", db_url, 700)  # a report above a pipe's 64 KiB
    for second in (False, True):
        runner = start_fleet(project, "status", "--json")
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _writing(runner.pid):
            time.sleep(0.2)
        runner.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert runner.poll() is None  # the report is being written
        if second:
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(timeout=10) == 143
            runner.stdout.close()
            continue
        out, _ = runner.communicate(timeout=60)
        assert runner.returncode == 143
        assert len(json.loads(out)["targets"]) == 700


def _writing(pid: int) -> bool:
    """Whether the process is blocked writing to a full pipe (its stdout)."""
    try:
        return "pipe_w" in Path(f"/proc/{pid}/wchan").read_text()  # pipe_write, ...
    except OSError:
        return False


@pytest.mark.parametrize("number", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_run_is_set_up_closes_its_ledger_row(
        tmp_path: Path, db_url: str, number: str) -> None:
    """The run's row is written before its workers and scripts are prepared: a signal then
    left it 'running' for ever, with nothing migrated."""
    project = shop_project(tmp_path / "p", db_url, 3)
    done = _signal_at(tmp_path, project, number, "setup", "migrate", "--json")
    word, code = ("terminated", 143) if number == "SIGTERM" else ("interrupted", 130)
    assert done.returncode == code, done.stderr
    assert json.loads(done.stdout)["error"]["message"] == word, done.stdout
    assert query(db_url, "SELECT outcome, migrated, failed FROM fleet.runs") == [
        (word, 0, 0)]
    assert not query(db_url, "SELECT 1 FROM pg_namespace WHERE nspname LIKE 'shop_%'")
