"""The example workflow that posts ``fleet plan`` on pull requests, and its documentation."""

from __future__ import annotations

import yaml

from tests.conftest import EXAMPLE, REPO

WORKFLOW = EXAMPLE / ".github" / "workflows" / "plan.yml"


def test_the_example_workflow_posts_the_plan_as_one_comment() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"]["pull-requests"] == "write"
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key 'on' as True
    steps = workflow["jobs"]["plan"]["steps"]
    runs = " ".join(str(s.get("run", "")) for s in steps)
    assert "fleet plan --format markdown > plan.md" in runs
    assert "GITHUB_STEP_SUMMARY" in runs
    # Without a review database: the base branch's schemas on the embedded PostgreSQL first.
    fallback = next(s for s in steps if "fleet migrate" in str(s.get("run", "")))
    assert fallback["if"] == "env.DATABASE_URI == ''"
    assert "github.base_ref" in fallback["run"]
    comment = steps[-1]
    assert comment["uses"].startswith("marocchino/sticky-pull-request-comment@")
    assert comment["with"] == {"header": "fleet-plan", "path": "plan.md"}


def test_it_is_an_example_not_this_repositorys_ci() -> None:
    assert not (REPO / ".github" / "workflows" / "plan.yml").exists()


def test_docs_show_the_same_workflow() -> None:
    text = (REPO / "docs" / "ci.md").read_text()
    assert "fleet plan --format markdown > plan.md" in text
    assert "marocchino/sticky-pull-request-comment@v2" in text
    assert "gh pr comment" in text and "--edit-last" in text
    assert "examples/elevaite/.github/workflows/plan.yml" in text
    readme = (REPO / "README.md").read_text()
    assert "## Reviewing a plan (`fleet plan`)" in readme and "docs/ci.md" in readme
