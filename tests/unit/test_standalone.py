"""The repository stands alone: no tracked file cites a document outside it.

Design facts are cited from docs/architecture.md (or another file under docs/),
never from background documents that live next to the checkout. The patterns are
assembled from parts so that this file does not match itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_OUTSIDE = re.compile(
    "|".join(
        (
            re.escape("DESIGN" + ".md"),
            re.escape("REFERENCE" + ".md"),
            re.escape("STYLE" + ".md"),
            re.escape(".." + "/shared"),
        )
    ).encode()
)
"""Names of documents that live outside the repository."""

_SEED_CITATION = re.compile(r"\b(?:seed|operating model)(?:'s)? ?\\?(?:§|u00a7)".encode(), re.IGNORECASE)
"""A section citation of the operating model's own text (`seed §3`, `operating model §5`), escaped or not."""


_CITATION = re.compile(r"architecture\.md\]?\)? ?((?:§\d+(?:\.\d+)?(?:, | and | to |,? ?)?)+)")
"""`architecture.md` followed by the sections it cites."""


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - not a checkout: fail, never skip
        pytest.fail(f"the standalone check needs a git checkout: {exc}", pytrace=False)
    return [name for name in out.decode().split("\0") if name]


def _offenders(pattern: re.Pattern[bytes]) -> list[str]:
    this = Path(__file__).resolve()
    found: list[str] = []
    for name in _tracked():
        path = ROOT / name
        if path.resolve() == this or not path.is_file():
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.decode(errors='replace').strip()[:120]}")
    return found


def test_no_tracked_file_cites_a_document_outside_the_repository() -> None:
    offenders = _offenders(_OUTSIDE)
    assert not offenders, "cite docs/architecture.md instead:\n" + "\n".join(offenders)


def test_no_tracked_file_cites_the_operating_model_by_its_own_section_numbers() -> None:
    offenders = _offenders(_SEED_CITATION)
    assert not offenders, "cite docs/architecture.md §2 (the operating model) instead:\n" + "\n".join(offenders)


def test_the_architecture_document_is_tracked_and_numbered() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in _tracked()
    numbered = re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE)
    assert len(numbered) >= 10, numbered
    assert len(numbered) == len(set(numbered)), "a section number is used twice"


def test_every_cited_section_of_the_architecture_document_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE))
    missing: list[str] = []
    for name in _tracked():
        path = ROOT / name
        if not path.is_file():
            continue
        own = name == "docs/architecture.md"
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            line = raw.decode(errors="replace").replace("\\u00a7", "§")
            # In the document itself every bare `§N` is its own (an RFC's sections follow its number);
            # elsewhere, the sections right after `architecture.md`: `§6.2`, `§2.2, §6.5`, `§6.2 and §6.4`.
            runs = [line] if own else _CITATION.findall(line)
            for run in runs:
                for cited in re.findall(r"(?<![0-9] )§(\d+(?:\.\d+)?)", run):
                    if cited not in sections:
                        missing.append(f"{name}:{number}: §{cited}")
    assert not missing, "docs/architecture.md has no such section:\n" + "\n".join(missing)
