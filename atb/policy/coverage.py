"""The coverage gate of the policy (`atb policy coverage`, run by `make lint`; docs/policy.md, "CI gates").

`opa test --coverage` reports every file it loads, the tests included; a test file
is always fully covered by its own run, so OPA's overall figure (and its
`--threshold`) flatters the policy. The gate counts only the policy's own files
(not `*_test.rego`): covered lines / (covered + not covered lines), and fails
below the threshold, naming the lines no test reaches.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from atb.policy.errors import PolicyBuildError

__all__ = ["CoverageReport", "FileCoverage", "parse_report", "policy_coverage"]


@dataclass(frozen=True)
class FileCoverage:
    path: str
    covered_lines: int
    not_covered_lines: int
    not_covered: tuple[tuple[int, int], ...]
    """(first row, last row) of each range no test evaluated."""


@dataclass(frozen=True)
class CoverageReport:
    files: tuple[FileCoverage, ...]

    @property
    def covered_lines(self) -> int:
        return sum(f.covered_lines for f in self.files)

    @property
    def not_covered_lines(self) -> int:
        return sum(f.not_covered_lines for f in self.files)

    @property
    def percent(self) -> float:
        total = self.covered_lines + self.not_covered_lines
        return 100.0 * self.covered_lines / total if total else 0.0


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ranges(value: object) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for item in value if isinstance(value, list) else []:
        start = item.get("start", {}) if isinstance(item, dict) else {}
        end = item.get("end", {}) if isinstance(item, dict) else {}
        out.append((_count(start.get("row")), _count(end.get("row"))))
    return tuple(sorted(set(out)))


def parse_report(raw: str) -> CoverageReport:
    """The policy files' coverage from `opa test --coverage` JSON (test files left out)."""
    try:
        document = json.loads(raw)
        files = document["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyBuildError(f"opa test --coverage gave no coverage report: {exc}") from exc
    policy = []
    for path, entry in sorted(files.items()):
        if path.endswith("_test.rego") or not isinstance(entry, dict):
            continue
        policy.append(
            FileCoverage(
                path=path,
                covered_lines=_count(entry.get("covered_lines")),
                not_covered_lines=_count(entry.get("not_covered_lines")),
                not_covered=_ranges(entry.get("not_covered")),
            )
        )
    if not policy:
        raise PolicyBuildError("opa test --coverage reported no policy file (only tests, or nothing)")
    return CoverageReport(tuple(policy))


def policy_coverage(opa: Path, policy_dir: Path) -> CoverageReport:
    """Run `opa test --coverage` over the folder; PolicyBuildError when a test fails."""
    proc = subprocess.run(
        [str(opa), "test", "--coverage", str(policy_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        # With --coverage OPA prints the report even when a test fails; the failure is in stderr or
        # in the exit status alone.
        tail = " | ".join(ln for ln in proc.stderr.splitlines() if ln.strip())[-400:]
        raise PolicyBuildError(f"opa test --coverage failed (exit {proc.returncode}): {tail or 'a test failed'}")
    return parse_report(proc.stdout)
