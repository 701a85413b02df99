"""The policy CI gates of `make lint` (docs/policy.md, "CI gates"), each run on the real policy and on a
deliberately broken copy of it, with the pinned OPA and Regal (atb/dev/toolchain.py).

Every gate must pass on `opa/policy` as committed and fail on its broken copy: a gate that
passes everything would pass both. The broken copies differ from the policy by one
appended snippet each, which is valid Rego that `opa test` still passes, so only the gate
under test can catch it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atb.cli import app as atb_app
from atb.dev.config import DevConfig
from atb.dev.toolchain import REGAL, build_opa
from atb.policy.coverage import parse_report

CONFIG = DevConfig.from_env()
REGAL_CONFIG = CONFIG.repo / ".regal" / "config.yaml"

# `opa check --strict` refuses an assigned variable that is never used.
UNUSED_VARIABLE = """
gate_probe_strict if {
\tunused := input.action
\ttrue
}
"""

# Regal's style/prefer-snake-case (on at its default level in .regal/config.yaml).
CAMEL_CASE = """
gateProbeCamel := true
"""

# Forty lines of policy that no test evaluates: the policy's coverage falls under 90%.
UNCOVERED = "\n".join(
    f'gate_probe_uncovered_{n}(x) := y if {{\n\ty := sprintf("%v-{n}", [x])\n\tcount(y) > {n}\n}}\n' for n in range(14)
)


@pytest.fixture(scope="module")
def opa() -> Path:
    return asyncio.run(build_opa(CONFIG))


@pytest.fixture(scope="module")
def regal() -> Path:
    return asyncio.run(REGAL.build(CONFIG))


@pytest.fixture
def broken(tmp_path: Path) -> Callable[[str], Path]:
    """A copy of opa/policy with `snippet` appended to poa.rego (package atb.poa)."""

    def make(snippet: str) -> Path:
        folder = tmp_path / f"policy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(CONFIG.policy_dir, folder)
        poa = folder / "poa.rego"
        poa.write_text(poa.read_text() + snippet)
        return folder

    return make


def _run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.parametrize("snippet", [UNUSED_VARIABLE, CAMEL_CASE, UNCOVERED], ids=["strict", "regal", "coverage"])
def test_every_broken_copy_still_passes_opa_test(opa: Path, broken: Callable[[str], Path], snippet: str) -> None:
    # So that each gate below is what catches its copy, not the tests.
    result = _run([opa, "test", broken(snippet)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_opa_check_strict(opa: Path, broken: Callable[[str], Path]) -> None:
    assert _run([opa, "check", "--strict", CONFIG.policy_dir]).returncode == 0
    result = _run([opa, "check", "--strict", broken(UNUSED_VARIABLE)])
    assert result.returncode != 0
    assert "unused" in (result.stdout + result.stderr)


def test_regal_lint(regal: Path, broken: Callable[[str], Path]) -> None:
    clean = _run([regal, "lint", "--config-file", REGAL_CONFIG, CONFIG.policy_dir])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    result = _run([regal, "lint", "--config-file", REGAL_CONFIG, broken(CAMEL_CASE)])
    assert result.returncode != 0
    assert "prefer-snake-case" in result.stdout


def test_coverage_threshold(opa: Path, broken: Callable[[str], Path]) -> None:
    runner = CliRunner()
    clean = runner.invoke(atb_app, ["policy", "coverage", "--policy-dir", str(CONFIG.policy_dir), "--threshold", "90"])
    assert clean.exit_code == 0, clean.output
    assert ": ok" in clean.output
    result = runner.invoke(atb_app, ["policy", "coverage", "--policy-dir", str(broken(UNCOVERED)), "--threshold", "90"])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output
    assert "not covered: rows" in result.output
    # OPA's own figure counts the test files too, each fully covered by its own run: it flatters the
    # policy, which is why the gate is `atb policy coverage` and not `opa test --threshold`.
    folder = broken(UNCOVERED)
    raw = _run([opa, "test", "--coverage", folder])
    assert float(json.loads(raw.stdout)["coverage"]) > parse_report(raw.stdout).percent


def test_coverage_fails_when_a_test_fails(broken: Callable[[str], Path]) -> None:
    folder = broken("")
    (folder / "gate_probe_test.rego").write_text("package atb.gate_probe_test\n\ntest_fails if {\n\tfalse\n}\n")
    result = CliRunner().invoke(atb_app, ["policy", "coverage", "--policy-dir", str(folder)])
    assert result.exit_code == 1, result.output
    assert "opa test --coverage failed" in str(result.exception) + result.output
