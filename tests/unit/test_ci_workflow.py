"""The GitHub workflow runs what a maintainer runs: `.ci/run`, and the policy gates on policy changes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def _steps(job: dict[str, object]) -> list[str]:
    steps = job["steps"]
    assert isinstance(steps, list)
    return [str(step.get("run", "")) for step in steps if isinstance(step, dict)]


def test_the_ci_job_runs_ci_run_within_its_limit() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    ci = jobs["ci"]
    assert any(".ci/run" in run for run in _steps(ci))
    assert ci["timeout-minutes"] <= 90
    assert (REPO / ".ci" / "run").exists()


def test_policy_changes_run_the_policy_gates_and_make_has_them() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    gates = jobs["policy-gates"]
    assert "pull_request" in gates["if"]
    assert any("make policy-gates" in run for run in _steps(gates))
    assert any("opa/policy" in run for run in _steps(gates))
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^policy-gates:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert target is not None, "make has no policy-gates target"
    for gate in ("test", "check --strict", "regal lint", "coverage"):
        assert gate in target.group(1), gate
    assert re.search(r"^lint:.*\bpolicy-gates\b", makefile, re.MULTILINE), "make lint does not run the policy gates"
