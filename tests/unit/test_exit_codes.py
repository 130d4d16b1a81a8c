"""The exit code table and the mapping of errors to exit codes."""

from __future__ import annotations

import pytest

from alembic_fleet.check.gate import CheckReport
from alembic_fleet.exceptions import (
    Aborted,
    ConfigError,
    DatabaseUnavailableError,
    EmbeddedServerError,
    FleetError,
    InvalidTenantError,
    RevisionError,
    UsageError,
)
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.inventory import Inventory
from alembic_fleet.model.findings import finding
from alembic_fleet.model.outcome import RunEnd, RunOutcome
from alembic_fleet.model.status import Outcome, TargetResult
from alembic_fleet.model.targets import Database, Target


def test_exit_code_table() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "NOT_UP_TO_DATE": 3,
        "STOPPED_EARLY": 4,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }


def test_exit_codes_are_ints() -> None:
    assert ExitCode.USAGE == 2
    assert ExitCode(130) is ExitCode.INTERRUPTED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("unknown key", file="fleet.toml", key="x"), 2),
        (ConfigError("bare"), 2),
        (UsageError("bad arguments"), 2),
        (InvalidTenantError("invalid tenant name 'Bad'"), 2),
        (DatabaseUnavailableError("cannot connect to postgresql://u:***@h/db"), 2),
        (RevisionError("unknown revision 'zzz'"), 2),
        (EmbeddedServerError("cannot start"), 1),
        (Aborted("declined"), 1),
        (FleetError("generic"), 1),
        (KeyboardInterrupt(), 130),
        (Exception("random"), 1),
        (RuntimeError("random"), 1),
        (ValueError("random"), 1),
        (KeyError("x"), 1),
    ],
)
def test_exit_code(error: BaseException, code: int) -> None:
    result = exit_code(error)
    assert isinstance(result, ExitCode)
    assert result == code


def test_named_codes() -> None:
    assert exit_code(ConfigError("x")) is ExitCode.USAGE
    assert exit_code(DatabaseUnavailableError("x")) is ExitCode.USAGE
    assert exit_code(KeyboardInterrupt()) is ExitCode.INTERRUPTED
    assert exit_code(Exception()) is ExitCode.FAILED


def test_subclass_of_keyboard_interrupt_is_interrupted() -> None:
    class Stop(KeyboardInterrupt):
        pass

    assert exit_code(Stop()) is ExitCode.INTERRUPTED


def test_config_error_message_names_file_key_and_expectation() -> None:
    err = ConfigError("unknown key", file="/srv/fleet.toml", key="services.auth.shema",
                      expected="one of path, schema", hint="check the spelling")
    assert str(err) == (
        "/srv/fleet.toml: key 'services.auth.shema': unknown key (expected one of path, schema)"
    )
    assert err.message == str(err)
    assert err.hint == "check the spelling"
    assert (err.file, err.key, err.expected) == (
        "/srv/fleet.toml", "services.auth.shema", "one of path, schema")


def test_config_error_without_location() -> None:
    assert str(ConfigError("no config")) == "no config"
    assert str(ConfigError("no config", file="f.toml")) == "f.toml: no config"


def _result(outcome: Outcome) -> TargetResult:
    target = Target("auth", "t", "auth_t", Database(url="postgresql://h/db"))
    return TargetResult(target, outcome, (), ())


@pytest.mark.parametrize(
    ("outcomes", "end", "code"),
    [
        ((Outcome.MIGRATED, Outcome.SKIPPED), RunEnd.COMPLETED, 0),
        ((), RunEnd.COMPLETED, 0),
        ((Outcome.MIGRATED, Outcome.FAILED), RunEnd.COMPLETED, 1),
        ((Outcome.MIGRATED,), RunEnd.INTERRUPTED, 130),
        ((Outcome.FAILED,), RunEnd.TERMINATED, 143),
    ],
)
def test_exit_code_of_a_run(outcomes: tuple[Outcome, ...], end: RunEnd, code: int) -> None:
    outcome = RunOutcome(tuple(_result(o) for o in outcomes), (), end=end)
    assert exit_code(outcome) == code


def test_exit_code_of_reports() -> None:
    assert exit_code(Inventory(())) is ExitCode.OK
    assert exit_code(CheckReport()) is ExitCode.OK
    report = CheckReport()
    report.findings.append(finding("drop-column", "auth", "drops a column"))
    assert exit_code(report) is ExitCode.NOT_UP_TO_DATE
    assert exit_code(None) is ExitCode.OK


def test_timeouts_never_round_down_to_no_limit() -> None:
    from alembic_fleet.execution.locking import milliseconds

    assert milliseconds(0) == "0ms"
    assert milliseconds(0.0004) == "1ms"
    assert milliseconds(2.5) == "2500ms"
