"""Which revisions ``fleet check`` lints one by one: by default the ones new on this branch.

A project in a git repository: ``main`` holds old revisions with findings of their own
(an unsafe ``DROP COLUMN``, an empty ``downgrade()``), a feature branch adds one revision
with an unsafe ``ADD COLUMN ... NOT NULL``. By default only the new revision's findings are
reported; the graph checks and the scratch round trip still cover the whole history.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.check.project import make_project, revision_file, write_revision
from tests.conftest import DatabaseFactory, Project, run

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}

OLD = {("FC501", "aa0000000004"), ("FC201", "aa0000000005")}
NEW = {("FC506", "aa0000000006")}


def git(root: Path, *args: str) -> str:
    result = run(["git", *args], cwd=root, env=GIT_ENV)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def versions(project: Project) -> Path:
    return project.root / "shop_service" / "migrations" / "versions"


def old_revisions(project: Project) -> None:
    """Two revisions every tenant already ran, each with a finding nobody can fix now."""
    write_revision(versions(project), "aa0000000004_drop_price.py", revision_file(
        "aa0000000004", "aa0000000003", 'op.drop_column("items", "price")',
        'op.add_column("items", sa.Column("price", sa.Numeric(10, 2), nullable=True))'))
    write_revision(versions(project), "aa0000000005_add_stock.py", revision_file(
        "aa0000000005", "aa0000000004",
        'op.add_column("items", sa.Column("stock", sa.Integer()))', "pass"))


def new_revision(project: Project, *, down: str = "aa0000000005") -> None:
    write_revision(versions(project), "aa0000000006_add_sku.py", revision_file(
        "aa0000000006", down,
        'op.add_column("items", sa.Column("sku", sa.String(20), nullable=False))',
        'op.drop_column("items", "sku")'))


@pytest.fixture
def repo(tmp_path: Path) -> Project:
    """main: the clean project, then the two old revisions; feature: one new revision."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    make_project(tmp_path)
    project = Project(tmp_path, {}, "", "")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    git(tmp_path, "branch", "release")
    old_revisions(project)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "old revisions")
    git(tmp_path, "checkout", "-qb", "feature")
    new_revision(project)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "new revision")
    return project


def check(project: Project, *args: str, env: dict[str, str] | None = None) -> dict:
    result = project.fleet("check", "--no-scratch", "--json", *args, env=env)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return json.loads(result.stdout)


def found(payload: dict) -> set[tuple[str, str]]:
    return {(f["code"], f["revision"]) for f in payload["findings"]}


def test_default_lints_only_the_revisions_new_on_this_branch(repo: Project) -> None:
    payload = check(repo)
    assert found(payload) == NEW
    scope = payload["scope"]["shop"]
    merge_base = git(repo.root, "rev-parse", "main")
    assert scope["mode"] == "branch"
    assert scope["base"] == "main" and scope["merge_base"] == merge_base
    assert scope["revisions"] == ["aa0000000006"] and scope["total"] == 6
    assert scope["note"] is None and payload["notes"] == []
    text = repo.fleet("check", "--no-scratch")
    assert text.returncode == 3
    assert f"checking 1 revision new since main (merge-base {merge_base[:7]})" in text.stderr


def test_all_lints_every_revision(repo: Project) -> None:
    payload = check(repo, "--all")
    assert found(payload) == OLD | NEW
    assert payload["scope"]["shop"]["mode"] == "all"
    assert payload["scope"]["shop"]["note"] is None


def test_uncommitted_changed_and_untracked_files_are_new(repo: Project) -> None:
    old = versions(repo) / "aa0000000004_drop_price.py"
    old.write_text(old.read_text() + "# touched on this branch\n")
    write_revision(versions(repo), "aa0000000007_index_sku.py", revision_file(
        "aa0000000007", "aa0000000006", 'op.create_index("ix_items_sku", "items", ["sku"])',
        'op.drop_index("ix_items_sku", table_name="items")'))
    payload = check(repo)
    assert found(payload) == NEW | {("FC501", "aa0000000004"), ("FC508", "aa0000000007")}
    assert payload["scope"]["shop"]["revisions"] == [
        "aa0000000004", "aa0000000006", "aa0000000007"]


def test_graph_checks_still_cover_the_whole_history(repo: Project) -> None:
    # The new revision forks from an old one: the old head is reported too.
    new_revision(repo, down="aa0000000004")
    payload = check(repo)
    assert {(c, r) for c, r in found(payload) if c == "FC102"} == {
        ("FC102", "aa0000000005"), ("FC102", "aa0000000006")}


@pytest.mark.slow
def test_base_is_the_upstream_then_origin_head_then_main(repo: Project, tmp_path: Path
                                                         ) -> None:
    remote = tmp_path.parent / f"{tmp_path.name}-remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(repo.root, "remote", "add", "origin", str(remote))
    git(repo.root, "push", "-q", "origin", "main", "release")
    git(repo.root, "remote", "set-head", "origin", "main")
    payload = check(repo)
    assert payload["scope"]["shop"]["base"] == "origin/main"
    assert found(payload) == NEW
    # A feature branch pushed with -u tracks its own remote copy: that is no base, or
    # nothing would be new once pushed.
    git(repo.root, "push", "-q", "-u", "origin", "feature")
    payload = check(repo)
    assert payload["scope"]["shop"]["base"] == "origin/main"
    assert found(payload) == NEW
    # An upstream that is another branch comes first: release is older than the old revisions.
    git(repo.root, "branch", "-q", "--set-upstream-to=origin/release")
    payload = check(repo)
    assert payload["scope"]["shop"]["base"] == "origin/release"
    assert payload["scope"]["shop"]["merge_base"] == git(repo.root, "rev-parse", "release")
    assert found(payload) == OLD | NEW
    git(repo.root, "branch", "-q", "--unset-upstream")
    git(repo.root, "remote", "set-head", "origin", "--delete")
    assert check(repo)["scope"]["shop"]["base"] == "main"


@pytest.mark.slow
def test_since_works_as_before_and_excludes_all(repo: Project) -> None:
    payload = check(repo, "--since", "main")
    assert found(payload) == NEW
    assert payload["scope"]["shop"]["mode"] == "since"
    assert payload["scope"]["shop"]["base"] == "main"
    both = repo.fleet("check", "--no-scratch", "--since", "main", "--all")
    assert both.returncode == 2
    assert "--all" in both.stderr


@pytest.mark.slow
def test_without_git_every_revision_is_linted_and_the_output_says_so(tmp_path: Path) -> None:
    make_project(tmp_path)
    project = Project(tmp_path, {}, "", "")
    old_revisions(project)
    new_revision(project)
    payload = check(project)
    assert found(payload) == OLD | NEW
    scope = payload["scope"]["shop"]
    assert scope["mode"] == "all" and "not inside a git work tree" in scope["note"]
    assert payload["notes"] == [scope["note"]]
    text = project.fleet("check", "--no-scratch")
    assert text.stderr.count("not inside a git work tree") == 1
    assert "checking all 6 revisions" in text.stderr
    # git itself missing: the same, with its own reason.
    payload = check(project, env={"PATH": str(Path(sys.executable).parent)})
    assert found(payload) == OLD | NEW
    assert "git is not installed" in payload["scope"]["shop"]["note"]


@pytest.mark.slow
def test_no_base_branch_found_falls_back_to_all(repo: Project) -> None:
    git(repo.root, "branch", "-q", "-m", "main", "trunk")
    payload = check(repo)
    assert found(payload) == OLD | NEW
    assert "no base branch" in payload["scope"]["shop"]["note"]


@pytest.mark.slow
def test_scratch_round_trip_still_covers_the_whole_history(repo: Project,
                                                           databases: DatabaseFactory) -> None:
    # aa0000000005's empty downgrade() leaves its column behind: FC302 is whole-history.
    models = repo.root / "shop_service" / "shop" / "models.py"
    models.write_text(models.read_text().replace(
        "    price = sa.Column(sa.Numeric(10, 2), nullable=True)\n",
        "    stock = sa.Column(sa.Integer)\n    sku = sa.Column(sa.String(20), nullable=False)\n"))
    repo.env["FLEET_SCRATCH_DATABASE_URL"] = databases.create("fleet_scratch_scope")
    result = repo.fleet("check", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    payload = json.loads(result.stdout)
    assert payload["scope"]["shop"]["revisions"] == ["aa0000000006"]
    assert ("FC302", "aa0000000005") in found(payload)
    assert {(c, r) for c, r in found(payload) if c != "FC302"} == NEW
