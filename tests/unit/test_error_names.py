"""One name, one class: no exception name twice in the project, no class name twice across packages.

Two `EvidenceError`s (issuer, audit sink) or two `KeyRing`s (issuer, broker) make
an `except` or an import mean something else depending on where it is written.
Every package draws its error tree in one docstring (atb_identity/errors.py,
contracts/errors.py, issuer/errors.py, chat/errors.py, atb/errors.py, the SDK's
in atb/sdk/__init__.py); this test keeps the names apart.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KNOWN_CLASS_TWINS = {
    "RecordedCall": "the SAP and Slack stand-ins each record their own calls (atb/dev/standins.py, slack_standin.py)",
    "RequestView": "the gateway's and chat's views of a request hold different fields",
    "Step": "a trace step (atb/trace/timeline.py) and a state-machine step (approvals)",
    "StoredEvent": "an audit-store row (audit sink) and a read-back record (atb_runtime)",
    "Verdict": "a witness's verdict on a checkpoint (atb/witness) and the broker's on a presentation",
}
"""Plain classes that share a name today; none is an exception. The list may only shrink."""


def _packages() -> list[Path]:
    services = [p for p in (ROOT / "services").glob("*/*") if (p / "__init__.py").is_file()]
    return [ROOT / "atb", ROOT / "contracts", *services]


def _classes(packages: list[Path] | None = None) -> dict[str, list[tuple[str, bool]]]:
    """Every class name → (file, looks like an exception) for each definition."""
    found: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for package in packages or _packages():
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                    error = node.name.endswith(("Error", "Exception")) or any(
                        b.endswith(("Error", "Exception")) for b in bases
                    )
                    found[node.name].append((str(path), error))
    return found


def test_no_exception_name_is_defined_twice() -> None:
    twins = {
        name: [f for f, _ in defs] for name, defs in _classes().items() if len(defs) > 1 and any(e for _, e in defs)
    }
    assert not twins, f"exception names defined more than once: {twins}"


def test_no_class_name_is_defined_in_two_packages() -> None:
    twins = {name: [f for f, _ in defs] for name, defs in _classes().items() if len(defs) > 1}
    unexpected = {name: files for name, files in twins.items() if name not in KNOWN_CLASS_TWINS}
    assert not unexpected, f"class names defined more than once: {unexpected}"
    assert set(KNOWN_CLASS_TWINS) <= set(twins), "a listed twin is gone: drop it from KNOWN_CLASS_TWINS"


def test_the_detector_sees_the_twins_it_was_written_for(tmp_path: Path) -> None:
    for package, source in (
        ("issuer", "class KeyRing: ...\nclass EvidenceError(ValueError): ...\n"),
        ("audit", "import x\nclass KeyRing: ...\nclass EvidenceError(x.SinkError): ...\n"),
    ):
        (tmp_path / package).mkdir()
        (tmp_path / package / "mod.py").write_text(source)
    found = _classes([tmp_path / "issuer", tmp_path / "audit"])
    assert {name: [e for _, e in defs] for name, defs in found.items()} == {
        "KeyRing": [False, False],
        "EvidenceError": [True, True],
    }
