"""The CI gate's ready-made files: the example workflow, the pre-commit hooks, the docs."""

from __future__ import annotations

import yaml

from alembic_fleet.model.findings import RULES
from tests.conftest import EXAMPLE, REPO


def test_example_workflow_runs_the_gate_and_the_migrations() -> None:
    workflow = yaml.safe_load((EXAMPLE / ".github" / "workflows" / "ci.yml").read_text())
    steps = {job: " ".join(str(s.get("run", "")) for s in spec["steps"])
             for job, spec in workflow["jobs"].items()}
    assert "fleet check --since" in steps["check"] and "--format github" in steps["check"]
    assert "fleet migrate" in steps["migrate"]
    assert workflow["jobs"]["migrate"]["needs"] == "check"


def test_pre_commit_hooks_call_fleet_check() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"fleet-check", "fleet-check-full"}
    assert all(h["entry"].startswith("fleet check") and h["pass_filenames"] is False
               for h in hooks)


def test_every_rule_is_documented() -> None:
    text = (REPO / "docs" / "check.md").read_text()
    missing = [f"{code} {rule.name}" for code, rule in RULES.items()
               if f"| `{code}` | `{rule.name}` |" not in text]
    assert missing == []
