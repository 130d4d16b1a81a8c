"""scripts_lint: static checks on revision files, read with ast (no Alembic, no database)."""

from __future__ import annotations

import re
import tomllib
from configparser import ConfigParser
from pathlib import Path

import pytest

from alembic_fleet.check.scripts_lint import (
    RevisionFile,
    allowed_rules,
    lint_service,
    read_revision_file,
)
from alembic_fleet.model.findings import Finding

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "elevaite"

UPGRADE = '''op.create_table(
        "{table}",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )'''


def revision_source(
    revision: str,
    down: str | tuple[str, ...] | None,
    *,
    table: str | None = None,
    downgrade: str | None = None,
    header: str = "",
    extra_imports: str = "",
    branch_labels: str | tuple[str, ...] | None = None,
    depends_on: str | tuple[str, ...] | None = None,
    annotated: bool = False,
) -> str:
    """A revision file as ``alembic revision`` writes it (script.py.mako)."""
    table = table or f"t_{revision}"
    if downgrade is None:
        downgrade = f'op.drop_table("{table}")'
    ann = ": Union[str, Sequence[str], None]" if annotated else ""
    rev_ann = ": str" if annotated else ""
    return f'''{header}"""add {table}

Revision ID: {revision}
Revises: {down or ""}
Create Date: 2024-05-01 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
{extra_imports}

# revision identifiers, used by Alembic.
revision{rev_ann} = {revision!r}
down_revision{ann} = {down!r}
branch_labels{ann} = {branch_labels!r}
depends_on{ann} = {depends_on!r}


def upgrade() -> None:
    """Upgrade schema."""
    {UPGRADE.format(table=table)}


def downgrade() -> None:
    """Downgrade schema."""
    {downgrade}
'''


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    """A clean linear service: a1 <- a2 <- a3."""
    folder = tmp_path / "migrations" / "versions"
    write(folder, "a1_create_users.py", revision_source("a1", None))
    write(folder, "a2_add_orgs.py", revision_source("a2", "a1"))
    write(folder, "a3_add_roles.py", revision_source("a3", "a2"))
    write(folder, "__init__.py", "")
    return folder


def codes(findings: list[Finding]) -> list[str]:
    return [item.code for item in findings]


# --------------------------------------------------------------------------- clean projects


def test_clean_linear_project_reports_nothing(versions: Path) -> None:
    assert lint_service("svc", [versions]) == []


def test_clean_project_with_patterns_and_application_packages(versions: Path) -> None:
    assert lint_service(
        "svc", [versions], revision_pattern=r"a\d", file_pattern=r"{revision}_[a-z0-9_]+\.py",
        application_packages=["app"],
    ) == []


def test_merge_revision_is_clean(versions: Path) -> None:
    write(versions, "b3_branch.py", revision_source("b3", "a2"))
    write(versions, "m4_merge.py", revision_source("m4", ("a3", "b3")))
    assert lint_service("svc", [versions]) == []


def test_annotated_assignments_are_read(versions: Path) -> None:
    path = write(versions, "a4_annotated.py", revision_source("a4", "a3", annotated=True))
    rev = read_revision_file(path, application_packages=())
    assert isinstance(rev, RevisionFile)
    assert rev.revision == "a4"
    assert rev.down_revisions == ("a3",)
    assert rev.revision_line == 15
    assert rev.down_line == 16
    assert rev.upgrade_line is not None
    assert rev.downgrade_line is not None
    assert not rev.downgrade_empty
    assert lint_service("svc", [versions]) == []


def test_merge_tuple_and_labels_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", revision_source("m", ("a", "b"), branch_labels="feat",
                                                   depends_on=["x"]))
    rev = read_revision_file(path, application_packages=())
    assert rev is not None
    assert rev.down_revisions == ("a", "b")
    assert rev.branch_labels == ("feat",)
    assert rev.depends_on == ("x",)


def test_files_without_revision_are_skipped(versions: Path) -> None:
    write(versions, "helpers.py", "def helper():\n    return 1\n")
    write(versions, "annotation_only.py", "revision: str\n")
    assert read_revision_file(versions / "helpers.py", application_packages=()) is None
    assert lint_service("svc", [versions]) == []


def test_recursive_version_folders(versions: Path) -> None:
    write(versions / "2024" / "05", "a4_nested.py", revision_source("a4", "a3"))
    assert lint_service("svc", [versions]) == []
    # The nested file is read: without it a3 would be the head and a5 would dangle.
    write(versions, "a5_after_nested.py", revision_source("a5", "a4"))
    assert lint_service("svc", [versions]) == []


def test_several_version_dirs_form_one_graph(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    write(first, "a1.py", revision_source("a1", None))
    write(second, "a2.py", revision_source("a2", "a1"))
    assert lint_service("svc", [first, second]) == []


def test_missing_folder_yields_nothing(tmp_path: Path) -> None:
    assert lint_service("svc", [tmp_path / "absent"]) == []


# --------------------------------------------------------------------------- one rule each


def test_fc101_duplicate_revision(versions: Path) -> None:
    copy = write(versions, "a2_copy.py", revision_source("a2", "a1", table="copy"))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC101"]
    (item,) = findings
    assert item.file == str(copy)  # a2_add_orgs.py sorts first and is the original
    assert item.revision == "a2"
    assert item.line == 15
    assert "a2_add_orgs.py" in item.message
    assert item.fails


def test_fc101_three_copies_give_two_findings(versions: Path) -> None:
    write(versions, "a3_copy1.py", revision_source("a3", "a2", table="c1"))
    write(versions, "a3_copy2.py", revision_source("a3", "a2", table="c2"))
    assert codes(lint_service("svc", [versions])) == ["FC101", "FC101"]


def test_fc102_multiple_heads(versions: Path) -> None:
    branch = write(versions, "b3_branch.py", revision_source("b3", "a2"))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC102", "FC102"]
    assert {item.file for item in findings} == {str(versions / "a3_add_roles.py"), str(branch)}
    assert all("a3, b3" in item.message for item in findings)


def test_fc102_branch_labels_do_not_exempt(versions: Path) -> None:
    write(versions, "b1_other.py", revision_source("b1", None, branch_labels="other"))
    assert codes(lint_service("svc", [versions])) == ["FC102", "FC102"]


def test_fc103_unknown_down_revision(versions: Path) -> None:
    path = write(versions, "a4_merge_missing.py", revision_source("a4", ("a3", "zz")))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC103"]
    assert findings[0].file == str(path)
    assert findings[0].line == 16
    assert "'zz'" in findings[0].message


def test_fc103_unknown_depends_on(versions: Path) -> None:
    write(versions, "a4_dep.py", revision_source("a4", "a3", depends_on="nope"))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC103"]
    assert findings[0].line == 18


def test_depends_on_may_name_a_revision_or_branch_label(tmp_path: Path) -> None:
    write(tmp_path, "a1.py", revision_source("a1", None, branch_labels="core"))
    write(tmp_path, "a2.py", revision_source("a2", "a1", depends_on="core"))
    write(tmp_path, "a3.py", revision_source("a3", "a2", depends_on=("a1",)))
    assert lint_service("svc", [tmp_path]) == []


def test_fc104_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a1.py", revision_source("a1", "a3"))
    write(tmp_path, "a2.py", revision_source("a2", "a1"))
    write(tmp_path, "a3.py", revision_source("a3", "a2"))
    findings = lint_service("svc", [tmp_path])
    assert codes(findings) == ["FC104", "FC104", "FC104"]
    assert [item.revision for item in findings] == ["a1", "a2", "a3"]
    assert "a1 -> a3 -> a2 -> a1" in findings[0].message


def test_fc104_self_reference(versions: Path) -> None:
    write(versions, "a4_self.py", revision_source("a4", ("a3", "a4")))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC104"]
    assert "a4 -> a4" in findings[0].message


def test_long_linear_history_does_not_recurse(tmp_path: Path) -> None:
    write(tmp_path, "r0.py", revision_source("r0", None))
    for number in range(1, 1500):
        write(tmp_path, f"r{number}.py", f"revision = 'r{number}'\n"
              f"down_revision = 'r{number - 1}'\n\ndef downgrade():\n    op.drop_table('t')\n")
    assert lint_service("svc", [tmp_path]) == []


def test_fc105_revision_id_pattern(versions: Path) -> None:
    write(versions, "a4_bad_id.py", revision_source("A4", "a3"))
    findings = lint_service("svc", [versions], revision_pattern=r"[a-z]\d")
    assert codes(findings) == ["FC105"]
    assert findings[0].revision == "A4"


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        (r"{revision}_[a-z0-9_]+\.py", "add_tokens.py"),
        (r"{revision}_[a-z0-9_]+\.py", "a3_other.py"),  # right shape, other revision's id
        (r"\d{4}_[a-z0-9_]+\.py", "a4_add_tokens.py"),
    ],
)
def test_fc106_file_name_pattern(tmp_path: Path, pattern: str, name: str) -> None:
    write(tmp_path, "0001_a1_first.py" if "{4}" in pattern else "a1_first.py",
          revision_source("a1", None))
    write(tmp_path, name, revision_source("a4", "a1"))
    findings = lint_service("svc", [tmp_path], file_pattern=pattern)
    assert codes(findings) == ["FC106"]
    assert findings[0].file == str(tmp_path / name)


def test_file_pattern_revision_placeholder_is_escaped(tmp_path: Path) -> None:
    write(tmp_path, "a.b_first.py", revision_source("a.b", None))
    write(tmp_path, "axb_second.py", revision_source("c.d", "a.b"))
    findings = lint_service("svc", [tmp_path], file_pattern=r"{revision}_[a-z]+\.py")
    assert [(item.code, item.revision) for item in findings] == [("FC106", "c.d")]


def test_fc107_syntax_error(versions: Path) -> None:
    broken = write(versions, "a4_broken.py", "revision = 'a4'\ndown_revision = 'a3'\n"
                   "def upgrade(:\n    pass\n")
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC107"]
    assert findings[0].file == str(broken)
    assert findings[0].line == 3


def test_fc107_revision_not_a_literal(versions: Path) -> None:
    write(versions, "a0_computed.py",
          "import uuid\nrevision = uuid.uuid4().hex\ndown_revision = None\n"
          "def downgrade():\n    op.drop_table('t')\n")
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC107"]
    assert findings[0].line == 2


def test_read_revision_file_raises_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x.py", "revision = (\n")
    with pytest.raises(SyntaxError):
        read_revision_file(path, application_packages=())


@pytest.mark.parametrize(
    "body",
    [
        "pass",
        "...",
        "pass  # nothing to undo\n    # really nothing",
        '"""Nothing."""',  # the template docstring alone: revision_source adds one more
    ],
)
def test_fc201_empty_downgrade(versions: Path, body: str) -> None:
    path = write(versions, "a4_empty.py", revision_source("a4", "a3", downgrade=body))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC201"]
    assert findings[0].file == str(path)
    assert "empty" in findings[0].message
    assert findings[0].line == read_revision_file(path, application_packages=()).downgrade_line


def test_fc201_missing_downgrade(versions: Path) -> None:
    text = revision_source("a4", "a3")
    text = text[: text.index("\n\ndef downgrade")] + "\n"
    write(versions, "a4_no_downgrade.py", text)
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC201"]
    assert "no downgrade()" in findings[0].message
    assert findings[0].line == 15


def test_fc201_downgrade_that_raises(versions: Path) -> None:
    write(versions, "a4_raises.py", revision_source(
        "a4", "a3", downgrade='raise NotImplementedError("data migration")'))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC201"]
    assert "raises NotImplementedError" in findings[0].message
    assert findings[0].fails


def test_fc201_accepted_by_comment(versions: Path) -> None:
    write(versions, "a4_raises.py", revision_source(
        "a4", "a3", downgrade="raise NotImplementedError()",
        header="# fleet: allow missing-downgrade: data migration cannot be undone\n"))
    findings = lint_service("svc", [versions])
    assert codes(findings) == ["FC201"]
    assert findings[0].accepted == "data migration cannot be undone"
    assert not findings[0].fails


def test_acceptance_is_per_file_and_per_rule(versions: Path) -> None:
    write(versions, "a4_raises.py", revision_source(
        "a4", "a3", downgrade="raise NotImplementedError()",
        header="# fleet: allow imports-application: needs the enum\n"))
    write(versions, "a0_other.py", revision_source(
        "a0", None, downgrade="pass",
        header="# fleet: allow missing-downgrade: first revision\n"))
    # a0 is a second root: a1 and a0 are both roots, but heads are a4 and a0
    findings = {(Path(item.file or "").name, item.code): item.accepted
                for item in lint_service("svc", [versions])}
    assert findings == {
        ("a0_other.py", "FC102"): None,
        ("a0_other.py", "FC201"): "first revision",
        ("a4_raises.py", "FC102"): None,
        ("a4_raises.py", "FC201"): None,
    }


def test_accepted_callback_overrides_comments(versions: Path) -> None:
    write(versions, "a4_empty.py", revision_source("a4", "a3", downgrade="pass"))
    calls: list[str] = []

    def accepted(rule_name: str, source: str) -> str | None:
        calls.append(rule_name)
        return "waived by policy" if "a4" in source else None

    findings = lint_service("svc", [versions], accepted=accepted)
    assert [(item.code, item.accepted) for item in findings] == [("FC201", "waived by policy")]
    assert calls == ["missing-downgrade"]


def test_fc202_imports_application(versions: Path) -> None:
    text = revision_source(
        "a4", "a3", extra_imports="import auth_api.models\nimport auth_api_extras\n",
        downgrade='from auth_api.models import User\n    op.drop_table(User.__tablename__)')
    path = write(versions, "a4_imports.py", text)
    findings = lint_service("svc", [versions], application_packages=["auth_api"])
    assert codes(findings) == ["FC202", "FC202"]
    assert all(item.file == str(path) for item in findings)
    lines = text.splitlines()
    assert [lines[(item.line or 0) - 1].strip() for item in findings] == [
        "import auth_api.models",
        "from auth_api.models import User",
    ]
    assert not any(item.fails for item in findings)  # a warning by default


def test_fc202_dotted_application_package(tmp_path: Path) -> None:
    path = write(tmp_path, "a1.py", revision_source(
        "a1", None, extra_imports="from app import models\nfrom app import settings\n"))
    rev = read_revision_file(path, application_packages=["app.models"])
    assert rev is not None
    assert rev.application_imports == (("app.models", 12),)


def test_stdlib_alembic_and_sqlalchemy_imports_are_fine(versions: Path) -> None:
    write(versions, "a4_imports.py", revision_source(
        "a4", "a3", extra_imports="import json\nfrom sqlalchemy.dialects import postgresql\n"))
    assert lint_service("svc", [versions], application_packages=["app", "sqlalchemy_x"]) == []


def test_findings_sorted_by_file_line_code(versions: Path) -> None:
    write(versions, "a4_bad.py", revision_source(
        "a4", ("a3", "zz"), downgrade="pass", extra_imports="import app\n"))
    findings = lint_service("svc", [versions], application_packages=["app"])
    keys = [(item.file or "", item.line or 0, item.code) for item in findings]
    assert keys == sorted(keys)
    assert codes(findings) == ["FC202", "FC103", "FC201"]


# --------------------------------------------------------------------------- helpers


def test_allowed_rules_parses_names_codes_and_lists() -> None:
    source = (
        "# fleet: allow missing-downgrade, FC202: data migration\n"
        "   #fleet:allow drop-table: table unused since 2023\n"
        "# fleet: allow duplicate-revision\n"  # no reason: accepts nothing
        "x = 1  # fleet: allow multiple-heads: after code on the line\n"
    )
    assert allowed_rules(source) == {
        "missing-downgrade": "data migration",
        "imports-application": "data migration",
        "drop-table": "table unused since 2023",
        "multiple-heads": "after code on the line",
    }


def test_invalid_pattern_is_a_configuration_error(versions: Path) -> None:
    with pytest.raises(re.error):
        lint_service("svc", [versions], revision_pattern="(")


# --------------------------------------------------------------------------- the example


def example_services() -> list[tuple[str, Path, str]]:
    """(service, versions folder, application package) from fleet.toml and alembic.ini."""
    config = tomllib.loads((EXAMPLE / "fleet.toml").read_text(encoding="utf-8"))
    services = []
    for name, service in config["services"].items():
        root = EXAMPLE / service["path"]
        ini = ConfigParser()
        ini.read(root / "alembic.ini", encoding="utf-8")
        location = ini.get("alembic", "script_location", raw=True).replace("%(here)s", str(root))
        packages = [child.name for child in root.iterdir() if (child / "__init__.py").is_file()]
        services.append((name, Path(location) / "versions", packages[0] if packages else ""))
    return services


def test_example_platform_is_clean() -> None:
    services = example_services()
    assert sorted(name for name, _, _ in services) == ["auth", "ingestion", "workflow"]
    for name, folder, package in services:
        assert folder.is_dir(), folder
        findings = lint_service(
            name, [folder], application_packages=[package] if package else (),
            revision_pattern=r"[0-9a-f]{12}", file_pattern=r"{revision}_[a-z0-9_]+\.py",
        )
        assert [item for item in findings if item.fails] == [], name
        assert findings == [], name
